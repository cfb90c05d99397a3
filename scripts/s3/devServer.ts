import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OptinError } from '../../src/errors/OptinError.ts';
import type { Logger } from '../../src/log/logger.ts';
import { S3_FIX_HINT as FIX_HINT, assertS3Reachable, httpProbe, type S3Config } from '../../src/storage/s3Endpoint.ts';

/**
 * Development only: finds (or starts) the S3-compatible server that tests, the demo and the
 * benchmarks talk to, in this order:
 *   1. `OPTIN_S3_ENDPOINT` (+ `OPTIN_S3_ACCESS_KEY`, `OPTIN_S3_SECRET_KEY`): an external server;
 *   2. a `minio` server binary on PATH: started on 127.0.0.1:9000 with a temp dir;
 *   3. `scripts/s3/rgw.sh`: a throwaway single-node Ceph RADOS Gateway on 127.0.0.1:7480.
 * The production client (createS3Client, assertS3Reachable) is src/storage/s3Endpoint.ts.
 */

export type S3ServerKind = 'external' | 'minio' | 'rgw';

export interface S3Server extends S3Config {
  kind: S3ServerKind;
  /** True when this call started the server. */
  startedByUs: boolean;
  /**
   * Ends this user's hold on the server. It stops the server only if this process started it
   * (or, for RGW, inherited it from a finished run) and no other live run still uses it; a
   * server configured from outside or started by hand is never stopped.
   */
  stop(): Promise<void>;
}

export interface EnsureS3Options {
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Skip the PATH lookup for `minio` (e.g. to force the RGW path). */
  allowMinio?: boolean;
  /** Overall start budget. A fresh machine may first `apt-get install` Ceph, hence generous. */
  startTimeoutMs?: number;
}

const RGW_SCRIPT = fileURLToPath(new URL('./rgw.sh', import.meta.url));
// Test-only credentials for a server we start ourselves on loopback.
const MINIO_TEST_ACCESS = 'optin-test-access';
const MINIO_TEST_SECRET = 'optin-test-secret-0123456789abcdef';
const MINIO_ADDRESS = '127.0.0.1:9000';

/** Resolves the S3 server (see the module comment); starts one when none is configured. */
export async function ensureS3Server(opts: EnsureS3Options = {}): Promise<S3Server> {
  const env = opts.env ?? process.env;
  const timeoutMs = opts.startTimeoutMs ?? 900_000;

  if (env.OPTIN_S3_ENDPOINT) {
    const { OPTIN_S3_ACCESS_KEY: accessKey, OPTIN_S3_SECRET_KEY: secretKey } = env;
    if (!accessKey || !secretKey) {
      throw new OptinError('S3_CONFIG', 'OPTIN_S3_ENDPOINT is set but OPTIN_S3_ACCESS_KEY or OPTIN_S3_SECRET_KEY is missing: set both');
    }
    const cfg = { endpoint: env.OPTIN_S3_ENDPOINT, accessKey, secretKey };
    await assertS3Reachable(cfg);
    return { ...cfg, kind: 'external', startedByUs: false, stop: async () => {} };
  }

  const minioBin = opts.allowMinio === false ? undefined : await findOnPath('minio', env);
  if (minioBin) return startMinio(minioBin, timeoutMs, opts.logger);
  return startRgw(env, timeoutMs, opts.logger);
}

async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Polls `check` until true; a failed probe means "not yet", an OptinError means "give up". */
async function waitUntil(what: string, deadline: number, check: () => Promise<boolean>): Promise<void> {
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof OptinError) throw err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new OptinError('S3_START_TIMEOUT', `${what} did not become ready in time: ${FIX_HINT}`, { retryable: true });
}

async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

async function startMinio(bin: string, timeoutMs: number, logger?: Logger): Promise<S3Server> {
  const cfg = { endpoint: `http://${MINIO_ADDRESS}`, accessKey: MINIO_TEST_ACCESS, secretKey: MINIO_TEST_SECRET };
  // A server already on the port that takes our test keys is one we (or a parallel run)
  // started: reuse it, and leave it running at the end.
  try {
    await assertS3Reachable(cfg, { timeoutMs: 1000 });
    return { ...cfg, kind: 'minio', startedByUs: false, stop: async () => {} };
  } catch (err) {
    if (err instanceof OptinError && err.code === 'S3_BAD_CREDENTIALS') {
      throw new OptinError('S3_PORT_BUSY', `another S3 server holds ${MINIO_ADDRESS} with other keys: ${FIX_HINT}`);
    }
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'optin-minio-'));
  const child = spawn(bin, ['server', dataDir, '--address', MINIO_ADDRESS, '--console-address', '127.0.0.1:9001', '--quiet'], {
    env: { ...process.env, MINIO_ROOT_USER: cfg.accessKey, MINIO_ROOT_PASSWORD: cfg.secretKey },
    stdio: 'ignore',
  });
  // 'exit' and 'error' (e.g. EACCES) both end the wait at once; an unhandled 'error' would crash.
  let failure: string | undefined;
  child.once('exit', (code, signal) => (failure ??= `minio exited (${signal ?? code})`));
  child.once('error', (err) => (failure ??= `minio could not start (${err.message})`));
  logger?.info({ pid: child.pid }, 'started minio for tests');
  const cleanup = async (): Promise<void> => {
    await stopChild(child);
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await waitUntil('minio', Date.now() + Math.min(timeoutMs, 60_000), async () => {
      if (failure) throw new OptinError('S3_START_FAILED', `${failure}: ${FIX_HINT}`);
      return (await httpProbe(`${cfg.endpoint}/minio/health/live`, 1000)) === 200;
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { ...cfg, kind: 'minio', startedByUs: true, stop: cleanup };
}

// ---- RGW ----------------------------------------------------------------------------------
//
// The gateway is one per machine (fixed ports) and several test runs may use it at the same
// time (engineers share the machine). rgw.sh keeps the bookkeeping under its lock: each user
// takes a lease with its pid (`start --lease PID`) and gives it back (`release PID`); the
// gateway stops at the release of the last live user, and only if a test run started it (a
// gateway started by hand with `npm run s3:start` is left alone).

function runScript(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('bash', [RGW_SCRIPT, ...args], { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const last = stderr.trim().split('\n').slice(-3).join(' | ');
        reject(new OptinError('S3_START_FAILED', `scripts/s3/rgw.sh ${args[0]} failed (${last || err.message}): ${FIX_HINT}`, { cause: err }));
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

function parseExports(stdout: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const m of stdout.matchAll(/^export ([A-Z0-9_]+)=(.*)$/gm)) vars[m[1] as string] = m[2] as string;
  return vars;
}

async function startRgw(env: NodeJS.ProcessEnv, timeoutMs: number, logger?: Logger): Promise<S3Server> {
  const t0 = Date.now();
  const lease = String(process.pid);
  const { stdout } = await runScript(['start', '--lease', lease], env, timeoutMs);
  const startedByUs = stdout.includes('# rgw: started');
  const vars = parseExports(stdout);
  const { OPTIN_S3_ENDPOINT: endpoint, OPTIN_S3_ACCESS_KEY: accessKey, OPTIN_S3_SECRET_KEY: secretKey } = vars;
  if (!endpoint || !accessKey || !secretKey) {
    throw new OptinError('S3_START_FAILED', `scripts/s3/rgw.sh start printed no endpoint/keys: ${FIX_HINT}`);
  }
  logger?.info({ startedByUs, ms: Date.now() - t0 }, 'rgw ready');
  let released = false;
  const stop = async (): Promise<void> => {
    if (released) return;
    released = true;
    await runScript(['release', lease], env, 120_000);
  };
  return { endpoint, accessKey, secretKey, kind: 'rgw', startedByUs, stop };
}
