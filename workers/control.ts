/**
 * The control-plane service (issue 13, docs/control-plane.md): `npm run control`.
 *
 * Configuration: OPTIN_* environment and/or the JSON file named by OPTIN_CONTROL_CONFIG
 * (src/controlplane/config.ts lists every setting). Minimum: OPTIN_CONTROL_SECRET. Without
 * OPTIN_DATABASE_URL the embedded database under OPTIN_DATA_DIR (default var/) is used.
 * SIGTERM/SIGINT close it cleanly; a kill -9 loses nothing that was acknowledged (every
 * accepted write was committed before its answer).
 */
import { ControlPlane } from '../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../src/controlplane/config.ts';
import { isOptinError } from '../src/errors/OptinError.ts';
import { createLogger } from '../src/log/logger.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadControlPlaneConfig();
  } catch (err) {
    console.error(isOptinError(err) ? err.message : String(err));
    process.exit(2);
  }
  const logger = createLogger(config.logLevel);
  const cp = await ControlPlane.start(config, { logger });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'control plane stopping');
    cp.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'control plane: unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(isOptinError(err) ? `control plane failed to start: ${err.message}` : err);
  process.exit(1);
});
