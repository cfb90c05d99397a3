import { existsSync, readFileSync, accessSync, constants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OptinError } from '../errors/OptinError.ts';

// The package root: src/sfu/ is two levels below it, dist/src/sfu/ (compiled) three.
const ROOT = fileURLToPath(new URL(import.meta.url.endsWith('.js') ? '../../../' : '../../', import.meta.url));

/**
 * Where the mediasoup worker binary is. mediasoup's own install would download it from
 * GitHub; ours is built by `npm run setup` (scripts/mediasoup-worker/build.sh), which
 * records its cached path in var/mediasoup-worker-bin. An explicit path wins.
 */
export function resolveWorkerBin(explicit?: string): string {
  const candidates = [explicit, process.env.OPTIN_MEDIASOUP_WORKER_BIN];
  const recorded = `${ROOT}var/mediasoup-worker-bin`;
  if (existsSync(recorded)) candidates.push(readFileSync(recorded, 'utf8').trim());
  const envBin = process.env.MEDIASOUP_WORKER_BIN;
  if (envBin && !envBin.startsWith('/nonexistent')) candidates.push(envBin);

  for (const bin of candidates) {
    if (!bin) continue;
    try {
      accessSync(bin, constants.X_OK);
      return bin;
    } catch {
      throw new OptinError(
        'WORKER_BIN_MISSING',
        `mediasoup worker binary not found or not executable at ${bin}: run \`npm run setup\` ` +
          'to build it, or set OPTIN_MEDIASOUP_WORKER_BIN to a working mediasoup-worker 3.27.1',
      );
    }
  }
  throw new OptinError(
    'WORKER_BIN_MISSING',
    'no mediasoup worker binary configured: run `npm run setup` (builds it from Debian packages ' +
      'and caches it), or set OPTIN_MEDIASOUP_WORKER_BIN',
  );
}
