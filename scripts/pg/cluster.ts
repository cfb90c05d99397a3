import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { OptinError } from '../../src/errors/OptinError.ts';

/**
 * A throwaway PostgreSQL cluster for a test run or a benchmark: scripts/pg/pg.sh in a fresh
 * temporary directory on a free loopback port. `stop()` shuts it down and removes the directory.
 * A missing server binary is an error (tests fail rather than skip).
 */

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('./pg.sh', import.meta.url));
export const PG_BIN = process.env.OPTIN_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface ThrowawayCluster {
  /** Admin URL (user postgres, database postgres). */
  url: string;
  dir: string;
  port: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function startThrowawayCluster(options: { fast?: boolean } = {}): Promise<ThrowawayCluster> {
  if (!existsSync(path.join(PG_BIN, 'initdb'))) {
    throw new OptinError('PG_MISSING', `PostgreSQL server binaries not found in ${PG_BIN}: install postgresql-15 (scripts/setup.sh) or set OPTIN_PG_BIN`);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'optin-pg-'));
  const port = await freePort();
  const args = ['start', '--dir', dir, '--port', String(port), ...(options.fast ? ['--fast'] : [])];
  let url: string;
  try {
    const { stdout } = await run('bash', [SCRIPT, ...args], { timeout: 60_000 });
    url = stdout.trim().split('\n').at(-1) ?? '';
  } catch (err) {
    throw new OptinError('PG_START_FAILED', `scripts/pg/pg.sh start failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`);
  }
  let stopped = false;
  return {
    url,
    dir,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      await run('bash', [SCRIPT, 'stop', '--dir', dir, '--remove'], { timeout: 60_000 });
    },
  };
}
