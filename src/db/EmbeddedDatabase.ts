import { mkdirSync } from 'node:fs';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import {
  setTransactionStatement,
  type Database,
  type Listener,
  type QueryObserver,
  type QueryResult,
  type Tx,
  type SqlValue,
  type TransactionOptions,
} from './Database.ts';

export interface EmbeddedDatabaseOptions {
  /** Data directory; created if missing. `memory://` keeps everything in RAM (tests only). */
  dataDir: string;
  onQuery?: QueryObserver;
}

/**
 * PGlite: PostgreSQL compiled to WASM, in this process. One connection, so transactions run one
 * at a time (PGlite queues them): fine for one control-plane replica on one machine, which is
 * what the embedded mode is for. Several replicas need a real server (OPTIN_DATABASE_URL).
 * Isolation levels are accepted and trivially satisfied by the single connection.
 */
export class EmbeddedDatabase implements Database {
  readonly kind = 'embedded' as const;
  readonly #db: PGlite;
  readonly #onQuery: QueryObserver | undefined;
  #closed = false;

  private constructor(db: PGlite, onQuery: QueryObserver | undefined) {
    this.#db = db;
    this.#onQuery = onQuery;
  }

  static async open(options: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
    if (!options.dataDir.startsWith('memory://')) mkdirSync(options.dataDir, { recursive: true, mode: 0o700 }); // consent evidence and ids: private
    const db = await PGlite.create(options.dataDir);
    return new EmbeddedDatabase(db, options.onQuery);
  }

  async query<R = Record<string, unknown>>(sql: string, params: readonly SqlValue[] = []): Promise<QueryResult<R>> {
    return run<R>(this.#db, sql, params, this.#onQuery);
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const onQuery = this.#onQuery;
    return this.#db.transaction(async (t: Transaction) => {
      if (options.isolation !== undefined || options.readOnly) await t.query(setTransactionStatement(options));
      return fn({
        query: <R>(sql: string, params: readonly SqlValue[] = []) => run<R>(t, sql, params, onQuery),
        exec: async (script: string) => {
          await t.exec(script);
        },
      });
    });
  }

  async exec(script: string): Promise<void> {
    await this.#db.exec(script);
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<Listener> {
    const unlisten = await this.#db.listen(channel, onPayload);
    return { close: () => unlisten() };
  }

  async ping(): Promise<void> {
    await this.#db.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#db.close();
  }
}

async function run<R>(
  q: Pick<PGlite, 'query'> | Transaction,
  sql: string,
  params: readonly SqlValue[],
  onQuery: QueryObserver | undefined,
): Promise<QueryResult<R>> {
  const t0 = performance.now();
  try {
    const res = await q.query<R>(sql, params as unknown[]);
    onQuery?.((performance.now() - t0) / 1000, true);
    return { rows: res.rows, rowCount: res.fields.length > 0 ? res.rows.length : (res.affectedRows ?? 0) };
  } catch (err) {
    onQuery?.((performance.now() - t0) / 1000, false);
    throw err;
  }
}
