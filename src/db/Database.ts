/**
 * The control plane's view of PostgreSQL: one small interface, two implementations with the
 * same SQL text (PgDatabase: a real server through node-postgres; EmbeddedDatabase: PGlite, the
 * WASM build of Postgres, for a single machine and the demo).
 *
 * Rules every caller follows:
 * - SQL text is a constant; values travel as parameters ($1, $2, ...). Never build SQL from input.
 * - Times are integer milliseconds since the epoch in `bigint` columns (`*_ms`), as on the wire.
 *   Both implementations hand int8 back as a JS number (safe below 2^53: ms until year 287396).
 * - jsonb parameters are passed as JSON text with an explicit `::jsonb` cast.
 */

export type SqlValue = string | number | boolean | null | readonly string[] | readonly number[];

export interface QueryResult<R> {
  rows: R[];
  /** Rows returned (SELECT, RETURNING) or affected (INSERT/UPDATE/DELETE without RETURNING). */
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Promise<QueryResult<R>>;
}

/** A transaction's handle: statements, and scripts for migrations. */
export interface Tx extends Queryable {
  exec(script: string): Promise<void>;
}

export type Isolation = 'read committed' | 'repeatable read' | 'serializable';

export interface TransactionOptions {
  /** Default read committed (writers serialise on row locks, e.g. stream_head). */
  isolation?: Isolation;
  readOnly?: boolean;
  /**
   * Attempts on a serialization failure (40001) or deadlock (40P01): the whole callback runs
   * again, so it must not have side effects outside the transaction. Default 3.
   */
  attempts?: number;
}

export interface Listener {
  close(): Promise<void>;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'embedded';
  /** Runs `fn` in one transaction: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Runs a multi-statement script without parameters (migrations only). */
  exec(script: string): Promise<void>;
  /**
   * LISTEN on a channel. `onPayload` gets each NOTIFY payload (delivered at the notifier's
   * commit). With a real server the listening connection is re-established after a failure;
   * notifications sent while it was down are lost, which is why followers also poll.
   */
  listen(channel: string, onPayload: (payload: string) => void): Promise<Listener>;
  /** Cheap round trip, for /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** SQLSTATEs after which a whole transaction may simply be tried again. */
export const RETRYABLE_SQLSTATES: ReadonlySet<string> = new Set(['40001', '40P01']);

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Hook for metrics: called once per statement with its duration and outcome. */
export type QueryObserver = (seconds: number, ok: boolean) => void;

/** The BEGIN statement for the options (constant texts only). */
export function beginStatement(options: TransactionOptions): string {
  const iso = options.isolation ?? 'read committed';
  const level =
    iso === 'serializable' ? 'ISOLATION LEVEL SERIALIZABLE' : iso === 'repeatable read' ? 'ISOLATION LEVEL REPEATABLE READ' : 'ISOLATION LEVEL READ COMMITTED';
  return options.readOnly ? `BEGIN ${level} READ ONLY` : `BEGIN ${level}`;
}

export function setTransactionStatement(options: TransactionOptions): string {
  return beginStatement(options).replace(/^BEGIN/, 'SET TRANSACTION');
}
