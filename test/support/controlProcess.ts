import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
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
