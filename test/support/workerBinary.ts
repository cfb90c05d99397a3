import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolveWorkerBin } from '../../src/sfu/workerBin.ts';

/**
 * Which mediasoup worker binary the tests ran on (issue 17): the official prebuilt (downloaded by
 * scripts/mediasoup-worker/build.sh where GitHub is reachable; statically linked) or the one built
 * here from mediasoup's sources against Debian's libraries (dynamically linked to libuv and
 * libsrtp2). Told apart by the shared libraries the binary names, so the answer does not depend
 * on how it got into the cache.
 */
export interface WorkerBinary {
  path: string;
  origin: 'built here (Debian libuv, OpenSSL, libsrtp2)' | 'official prebuilt';
  sha256: string;
}

export function describeWorkerBinary(): WorkerBinary {
  const path = resolveWorkerBin();
  const bytes = readFileSync(path);
  const dynamic = bytes.includes('libsrtp2.so') || bytes.includes('libuv.so.1');
  return {
    path,
    origin: dynamic ? 'built here (Debian libuv, OpenSSL, libsrtp2)' : 'official prebuilt',
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

export function workerBinaryLine(): string {
  try {
    const w = describeWorkerBinary();
    return `mediasoup worker: ${w.origin}, ${w.path}, sha256 ${w.sha256.slice(0, 16)}`;
  } catch (err) {
    return `mediasoup worker: none resolved (${(err as Error).message.split(':')[0]})`;
  }
}
