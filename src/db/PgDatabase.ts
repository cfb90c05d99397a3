import pg from 'pg';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import {
  RETRYABLE_SQLSTATES,
  beginStatement,
  sqlState,
  type Database,
  type Listener,
  type QueryObserver,
  type QueryResult,
  type Tx,
  type SqlValue,
  type TransactionOptions,
} from './Database.ts';

/** int8 as a JS number, as PGlite does: our bigints are ms and sequence numbers, far below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export interface PgDatabaseOptions {
  url: string;
  /** Pool size. Default 10. */
  max?: number;
  /** Fail a connection attempt after this long (the DB is then "unreachable"). Default 3000 ms. */
  connectTimeoutMs?: number;
  /** Server-side statement timeout and client-side query timeout. Default 10 000 ms. */
  statementTimeoutMs?: number;
  logger?: Logger;
  onQuery?: QueryObserver;
}

/** Errors that mean "cannot talk to the database" rather than "the statement failed". */
function isConnectionError(err: unknown): boolean {
  const state = sqlState(err);
  if (state !== undefined) return state.startsWith('08') || state === '57P01' || state === '57P03';
  const msg = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown }).code;
  return (
    typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH'].includes(code)
  ) || /timeout|terminated|Connection terminated|not queryable|ECONNREFUSED/i.test(msg);
}

function wrap(err: unknown): unknown {
  if (err instanceof OptinError || !isConnectionError(err)) return err;
  return new OptinError('DB_UNAVAILABLE', `the database is unreachable (${(err as Error).message}); check OPTIN_DATABASE_URL and the server`, { cause: err });
}

/** A real PostgreSQL server through node-postgres (OPTIN_DATABASE_URL). */
export class PgDatabase implements Database {
  readonly kind = 'postgres' as const;
  readonly #pool: pg.Pool;
  readonly #options: PgDatabaseOptions;
  readonly #listeners = new Set<PgListener>();
  #closed = false;

  constructor(options: PgDatabaseOptions) {
    this.#options = options;
    const statementTimeout = options.statementTimeoutMs ?? 10_000;
    this.#pool = new pg.Pool({
      connectionString: options.url,
      max: options.max ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 3_000,
      statement_timeout: statementTimeout,
      query_timeout: statementTimeout + 1_000,
      idleTimeoutMillis: 30_000,
      application_name: 'optin-control',
      types,
    });
    // An idle client whose server went away must not crash the process; the pool drops it.
    this.#pool.on('error', (err) => options.logger?.warn({ err: err.message }, 'db: idle connection failed'));
  }

  async query<R = Record<string, unknown>>(sql: string, params: readonly SqlValue[] = []): Promise<QueryResult<R>> {
    const t0 = performance.now();
    try {
      const res = await this.#pool.query(sql, params as unknown[]);
      this.#options.onQuery?.((performance.now() - t0) / 1000, true);
      return { rows: res.rows as R[], rowCount: res.rowCount ?? res.rows.length };
    } catch (err) {
      this.#options.onQuery?.((performance.now() - t0) / 1000, false);
      throw wrap(err);
    }
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const attempts = Math.max(1, options.attempts ?? 3);
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.#pool.connect();
      } catch (err) {
        throw wrap(err);
      }
      let broken = false;
      // A checked-out connection has no pool listener: an 'error' the server sends while no
      // query is running (57P01 from a crashed primary's backends, a reset socket) would be an
      // uncaught exception and end the process. It breaks this transaction instead.
      const onError = (err: Error): void => {
        broken = true;
        this.#options.logger?.warn({ err: err.message }, 'db: connection lost during a transaction');
      };
      client.on('error', onError);
      const release = (destroy: boolean): void => {
        client.off('error', onError);
        client.release(destroy ? true : undefined);
      };
      const observe = this.#options.onQuery;
      const tx: Tx = {
        async exec(script: string): Promise<void> {
          // Simple-query protocol (no parameters): several statements, results ignored.
          try {
            await client.query(script);
          } catch (err) {
            if (isConnectionError(err)) broken = true;
            throw wrap(err);
          }
        },
        async query<R>(sql: string, params: readonly SqlValue[] = []): Promise<QueryResult<R>> {
          const t0 = performance.now();
          try {
            const res = await client.query(sql, params as unknown[]);
            observe?.((performance.now() - t0) / 1000, true);
            return { rows: res.rows as R[], rowCount: res.rowCount ?? res.rows.length };
          } catch (err) {
            observe?.((performance.now() - t0) / 1000, false);
            if (isConnectionError(err)) broken = true;
            throw wrap(err);
          }
        },
      };
      try {
        await client.query(beginStatement(options));
        const result = await fn(tx);
        await client.query('COMMIT');
        release(broken);
        return result;
      } catch (err) {
        try {
          if (!broken) await client.query('ROLLBACK');
        } catch {
          broken = true;
        }
        // A connection that failed mid-transaction is destroyed, not returned to the pool.
        release(broken);
        const state = sqlState((err as { cause?: unknown }).cause ?? err) ?? sqlState(err);
        if (state !== undefined && RETRYABLE_SQLSTATES.has(state) && attempt < attempts) {
          await new Promise((r) => setTimeout(r, Math.random() * 10 * attempt));
          continue;
        }
        throw wrap(err);
      }
    }
  }

  async exec(script: string): Promise<void> {
    try {
      await this.#pool.query(script);
    } catch (err) {
      throw wrap(err);
    }
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<Listener> {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new OptinError('INVALID_INPUT', `channel ${JSON.stringify(channel)} must be a lower-case SQL identifier`);
    const listener = new PgListener(this.#options, channel, onPayload, () => this.#listeners.delete(listener));
    this.#listeners.add(listener);
    await listener.connect().catch((err: unknown) => {
      // Not fatal: the follower's poll covers the gap and the listener keeps retrying.
      this.#options.logger?.warn({ err: (err as Error).message }, 'db: LISTEN failed; retrying');
    });
    return listener;
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#listeners].map((l) => l.close()));
    await this.#pool.end();
  }
}

/**
 * One dedicated connection holding LISTEN (a pooled connection could be handed to someone else).
 * Reconnects with backoff after a failure; the channel name was validated as an identifier,
 * which is the one place a name enters SQL text (LISTEN takes no parameters).
 */
class PgListener implements Listener {
  readonly #options: PgDatabaseOptions;
  readonly #channel: string;
  readonly #onPayload: (payload: string) => void;
  readonly #onClosed: () => void;
  #client: pg.Client | undefined;
  #timer: NodeJS.Timeout | undefined;
  #delayMs = 200;
  #closed = false;

  constructor(options: PgDatabaseOptions, channel: string, onPayload: (payload: string) => void, onClosed: () => void) {
    this.#options = options;
    this.#channel = channel;
    this.#onPayload = onPayload;
    this.#onClosed = onClosed;
  }

  async connect(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({
      connectionString: this.#options.url,
      connectionTimeoutMillis: this.#options.connectTimeoutMs ?? 3_000,
      application_name: 'optin-control-listen',
      // TCP keepalive notices a silently dead server within about a minute even without traffic.
      keepAlive: true,
      types,
    });
    const fail = (err?: Error): void => {
      if (this.#client !== client) return;
      this.#client = undefined;
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end().catch(() => undefined);
      if (err !== undefined) this.#options.logger?.warn({ err: err.message }, 'db: LISTEN connection lost');
      this.#schedule();
    };
    this.#client = client;
    client.on('error', (err) => fail(err));
    client.on('end', () => fail());
    client.on('notification', (n) => {
      if (n.channel === this.#channel && n.payload !== undefined) this.#onPayload(n.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.#channel}`);
      this.#delayMs = 200;
    } catch (err) {
      fail(err as Error);
      throw err;
    }
  }

  #schedule(): void {
    if (this.#closed || this.#timer !== undefined) return;
    const delay = this.#delayMs;
    this.#delayMs = Math.min(this.#delayMs * 2, 5_000);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.connect().catch(() => undefined);
    }, delay);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const client = this.#client;
    this.#client = undefined;
    this.#onClosed();
    if (client !== undefined) {
      client.removeAllListeners();
      client.on('error', () => undefined);
      await client.end().catch(() => undefined);
    }
  }
}
