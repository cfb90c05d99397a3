/**
 * The recorder worker process: `npm run recorder` (configuration: README "Configuration").
 *
 * Starts the mediasoup workers, the store, the audit trail and the control-stream client, and
 * serves health, metrics and the HTTP API. SIGTERM/SIGINT shut down gracefully: no new calls,
 * every gate closed, open segments sealed and stored (or spooled), then exit.
 */
import { loadConfig } from '../src/config/config.ts';
import { startRecorderApp } from '../src/app/RecorderApp.ts';
import { startRecorderHttp } from '../src/app/recorderHttp.ts';
import { isOptinError } from '../src/errors/OptinError.ts';

async function main(): Promise<void> {
  const config = loadConfig();
  const app = await startRecorderApp(config);
  const http = await startRecorderHttp(app);
  app.logger.info({ url: http.url, workerId: config.workerId, mediaWorkers: app.pool.workers.length }, 'recorder ready');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'shutting down: closing gates and sealing open segments');
    const started = Date.now();
    // Stop media first (seal, store or spool every open segment), then stop answering.
    const result = await app.close();
    await http.close();
    if (!result.clean) {
      // Not a clean stop: what is left is on this machine's disk (spool) for the next start. Say
      // so, and exit non-zero so a supervisor restarts the worker here to finish the uploads.
      app.logger.error({ ms: Date.now() - started, problems: result.problems }, 'shutdown incomplete: not everything reached the store');
      process.exit(1);
    }
    app.logger.info({ ms: Date.now() - started }, 'shutdown complete');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err: unknown) => {
  // One clear line naming the fix, not a stack trace (the cause is in the code).
  if (isOptinError(err)) console.error(`optin: ${err.code}: ${err.message}`);
  else console.error(`optin: unexpected failure: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
