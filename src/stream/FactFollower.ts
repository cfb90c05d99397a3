import type { Database, Listener } from '../db/Database.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { FACTS_CHANNEL, readFactsAfter, streamHead, type StoredFact } from '../db/factLog.ts';
import type { Logger } from '../log/logger.ts';

/**
 * One per replica: follows the `facts` table. A NOTIFY on optin_facts (sent at each writer's
 * commit, by any replica) triggers a read at once, for latency; a read on every heartbeat tick
 * covers lost notifications (the LISTEN connection may have been down). The tick reports whether
 * its read reached the database: heartbeats are sent only after a successful one, so a replica
 * that cannot read its database falls silent and every worker goes stale (`control-stale`).
 *
 * Recent facts are kept in a bounded ring so sessions catch up without a query each.
 */

export type FactFollowerEvents = {
  /** New facts, in order, contiguous with the previous batch. */
  facts: [facts: StoredFact[]];
  /** A heartbeat tick: `ok` when this tick's database read succeeded. */
  tick: [ok: boolean];
};

export interface FactFollowerOptions {
  db: Database;
  heartbeatMs: number;
  logger: Logger;
  /** Facts kept in memory for sessions catching up. Default 8192. */
  ringSize?: number;
  batch?: number;
}

export class FactFollower extends TypedEmitter<FactFollowerEvents> {
  readonly #db: Database;
  readonly #heartbeatMs: number;
  readonly #logger: Logger;
  readonly #ringSize: number;
  readonly #batch: number;
  readonly #ring: StoredFact[] = [];
  #head = 0;
  #listener: Listener | undefined;
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #pollQueued = false;
  #tickRunning = false;
  #closed = false;
  #lastOk = false;

  constructor(options: FactFollowerOptions) {
    super();
    this.#db = options.db;
    this.#heartbeatMs = options.heartbeatMs;
    this.#logger = options.logger;
    this.#ringSize = options.ringSize ?? 8192;
    this.#batch = options.batch ?? 1000;
  }

  /** The last seq this replica has read. */
  get head(): number {
    return this.#head;
  }

  get dbReachable(): boolean {
    return this.#lastOk;
  }

  async start(): Promise<void> {
    this.#head = await streamHead(this.#db);
    this.#lastOk = true;
    this.#listener = await this.#db.listen(FACTS_CHANNEL, () => this.requestPoll());
    this.#timer = setInterval(() => this.#tick(), this.#heartbeatMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.#listener?.close().catch(() => undefined);
    await this.#chain.catch(() => undefined);
  }

  /** Reads new facts soon (coalesced: many notifications, one read). */
  requestPoll(): void {
    if (this.#pollQueued || this.#closed) return;
    this.#pollQueued = true;
    void this.poll().catch(() => undefined);
  }

  /** Reads every fact after the head; resolves true when the database answered. Serialised. */
  poll(): Promise<boolean> {
    const run = this.#chain.then(async () => {
      this.#pollQueued = false;
      if (this.#closed) return false;
      try {
        for (;;) {
          const facts = await readFactsAfter(this.#db, this.#head, this.#batch);
          if (facts.length > 0) this.#accept(facts);
          if (facts.length < this.#batch) break;
        }
        this.#lastOk = true;
        return true;
      } catch (err) {
        if (this.#lastOk) this.#logger.warn({ err: (err as Error).message }, 'stream: cannot read facts; heartbeats stop until the database answers');
        this.#lastOk = false;
        return false;
      }
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }

  #accept(facts: StoredFact[]): void {
    const contiguous: StoredFact[] = [];
    for (const f of facts) {
      if (f.seq !== this.#head + 1) {
        // Cannot happen with the stream_head lock; if it does, sessions detect it (gap) and restart.
        this.#logger.error({ expected: this.#head + 1, got: f.seq }, 'stream: facts table has a gap');
        this.#ring.length = 0;
      }
      this.#head = f.seq;
      this.#ring.push(f);
      contiguous.push(f);
    }
    if (this.#ring.length > this.#ringSize) this.#ring.splice(0, this.#ring.length - this.#ringSize);
    this.safeEmit('facts', contiguous);
  }

  /** Facts after `seq` from memory, or undefined when the ring no longer reaches back that far. */
  since(seq: number, limit: number): StoredFact[] | undefined {
    if (seq >= this.#head) return [];
    const first = this.#ring[0];
    if (first === undefined || first.seq > seq + 1) return undefined;
    const start = seq + 1 - first.seq;
    return this.#ring.slice(start, start + limit);
  }

  #tick(): void {
    // A read still running from the previous tick (a hung database): this tick has no success.
    if (this.#tickRunning || this.#closed) {
      if (!this.#closed) this.safeEmit('tick', false);
      return;
    }
    this.#tickRunning = true;
    void this.poll()
      .then((ok) => this.safeEmit('tick', ok))
      .finally(() => {
        this.#tickRunning = false;
      });
  }
}
