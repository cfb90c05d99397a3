import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createToken } from '../../src/facts/integrations.ts';

/**
 * `workers/control.ts` as its own process, as in production: for kill -9 and restart tests.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Writes an integrations bootstrap file with one all-scopes integration; returns its token. */
export function writeIntegrationsFile(dir: string, id = 'all'): { file: string; token: string } {
  const t = createToken(id);
  const file = path.join(dir, 'integrations.json');
  writeFileSync(file, JSON.stringify([{ id, scopes: ['ivr', 'wfm', 'hr', 'ops'], secretSha256: t.secretHash }]));
  return { file, token: t.token };
}

/** Where a control plane process of a test lives: its data directory, port, API token and environment. */
export interface ControlProcessSetup {
  dir: string;
  port: number;
  /** A token of an integration with every scope (ivr, wfm, hr, ops). */
  token: string;
  env: Record<string, string>;
}

/**
 * A data directory (`tmpPrefix`...), a free port, an all-scopes integration and the environment for
 * `spawnControlPlane` on `databaseUrl`, plus `extra`. The caller removes `dir`.
 */
export async function controlProcessSetup(databaseUrl: string, secret: string, tmpPrefix: string, extra: Record<string, string> = {}): Promise<ControlProcessSetup> {
  const dir = mkdtempSync(path.join(tmpdir(), tmpPrefix));
  const port = await freePort();
  const integrations = writeIntegrationsFile(dir);
  const env = {
    OPTIN_CONTROL_SECRET: secret,
    OPTIN_DATABASE_URL: databaseUrl,
    OPTIN_CONTROL_PORT: String(port),
    OPTIN_CONTROL_INTEGRATIONS_FILE: integrations.file,
    OPTIN_DATA_DIR: dir,
    ...extra,
  };
  return { dir, port, token: integrations.token, env };
}

export interface ControlProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when the process logged "control plane listening". */
  ready: Promise<void>;
}

export function spawnControlPlane(env: Record<string, string>): ControlProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/control.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', OPTIN_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control plane not ready in 60 s:\n${out}`)), 60_000);
    const check = (): void => {
      if (out.includes('"msg":"control plane listening"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`control plane exited (${code}) before it was ready:\n${out}`));
    });
  });
  ready.catch(() => undefined);
  return { child, output: () => out, exited, ready };
}
