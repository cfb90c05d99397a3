import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgDatabase } from '../../../src/db/PgDatabase.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';

/**
 * A server that ends a connection in the middle of a transaction (57P01: what every backend of a
 * crashed primary says when it notices its postmaster is gone, and what pg_terminate_backend
 * says) must fail that transaction, not the process: found by the cluster test (npm run
 * test:cluster), where a control-plane replica exited on the PostgreSQL primary's crash because
 * the checked-out connection's 'error' event had no listener.
 */

const logger = createLogger('silent');
let tdb: TestDatabase;
let db: PgDatabase;
let admin: pg.Client;

beforeAll(async () => {
  tdb = await createTestDatabase();
  db = new PgDatabase({ url: tdb.url, logger });
  admin = new pg.Client({ connectionString: tdb.url });
  await admin.connect();
});

afterAll(async () => {
  await admin?.end();
  await db?.close();
  await tdb?.drop();
});

describe('a connection terminated by the server mid-transaction', () => {
  it('fails that transaction; the process lives on and the next transaction gets a fresh connection', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => void uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      let killedPid = 0;
      const attempt = db.transaction(
        async (tx) => {
          const { rows } = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
          killedPid = rows[0]!.pid;
          await admin.query('SELECT pg_terminate_backend($1)', [killedPid]);
          // Idle inside the transaction while the server's FATAL arrives: no query to hand it to.
          await sleep(300);
          await tx.query('SELECT 1');
        },
        { attempts: 1 },
      );
      await expect(attempt).rejects.toThrow();
      expect(uncaught).toEqual([]);
      const { rows } = await db.transaction((tx) => tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'));
      expect(rows[0]!.pid).not.toBe(killedPid);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
