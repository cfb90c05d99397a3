import type { Logger } from '../log/logger.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';

/**
 * Deletes each recording at its exact expiry instant (R8: "to the second"), the store's lifecycle
 * rule being only the backstop (S3 lifecycle works in whole days).
 *
 * One shared timer armed for the earliest expiry, never one timer per recording (STYLE habit 3):
 * expiries sit in a min-heap. A periodic scan of the manifests picks up recordings this process
 * did not create (written by another process, or before a restart).
 *
 * The sweeper knows nothing about S3: the store passes a target that can enumerate expiries and
 * expire one recording (keys first, then media, spool copies, manifest; audited).
 */

export interface SweepTarget {
  /** Yields expiries of recordings the sweeper does not know yet (`isKnown` lets the scan skip reads). */
  scan(isKnown: (recordingId: string) => boolean): AsyncIterable<{ recordingId: string; expiresAtMs: number }>;
  expire(recordingId: string): Promise<void>;
}

export interface SweeperOptions {
  target: SweepTarget;
  logger: Logger;
  now?: () => number;
  /** How often to scan the manifests for recordings we do not know yet. Default 60 s. */
  scanIntervalMs?: number;
  /** Delay before retrying an expiry that failed. Default 5 s. */
  retryMs?: number;
}

export type SweeperEvents = {
  expired: [recordingId: string];
  error: [Error];
};

/** setTimeout's limit (~24.8 days); a 30-day expiry is reached in two hops. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Sweeper extends TypedEmitter<SweeperEvents> {
  readonly #target: SweepTarget;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #scanIntervalMs: number;
  readonly #retryMs: number;
  /** Current expiry per recording; heap entries that disagree with it are stale (lazy deletion). */
  readonly #due = new Map<string, number>();
  readonly #heap: Array<{ id: string; at: number }> = [];
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #scanTimer: NodeJS.Timeout | undefined;
  #running = false;
  #scanning: Promise<void> | undefined;
  #closed = false;
  #started = false;

  constructor(options: SweeperOptions) {
    super();
    this.#target = options.target;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#scanIntervalMs = options.scanIntervalMs ?? 60_000;
    this.#retryMs = options.retryMs ?? 5_000;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Starts the periodic scan (first one immediately) and the expiry timer. */
  start(): void {
    if (this.#closed || this.#started) return;
    this.#started = true;
    this.#scanTimer = setInterval(() => void this.scanNow(), this.#scanIntervalMs);
    this.#scanTimer.unref();
    void this.scanNow();
    this.#arm();
  }

  /** Number of recordings with a pending expiry. */
  size(): number {
    return this.#due.size;
  }

  has(recordingId: string): boolean {
    return this.#due.has(recordingId);
  }

  expiryOf(recordingId: string): number | undefined {
    return this.#due.get(recordingId);
  }

  /** Registers (or moves) a recording's expiry. */
  schedule(recordingId: string, expiresAtMs: number): void {
    if (this.#closed || !Number.isFinite(expiresAtMs)) return;
    if (this.#due.get(recordingId) === expiresAtMs) return;
    this.#due.set(recordingId, expiresAtMs);
    this.#push({ id: recordingId, at: expiresAtMs });
    if (expiresAtMs < this.#timerAt) this.#arm();
  }

  /** Forgets a recording (it was deleted by other means). */
  unschedule(recordingId: string): void {
    this.#due.delete(recordingId);
  }

  /** Runs one scan now; concurrent callers share it. */
  scanNow(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#scanning ??= (async () => {
      try {
        for await (const { recordingId, expiresAtMs } of this.#target.scan((id) => this.#due.has(id))) {
          if (this.#closed) return;
          this.schedule(recordingId, expiresAtMs);
        }
      } catch (err) {
        this.#logger.warn({ err: (err as Error).message }, 'sweeper scan failed; retrying at the next interval');
        this.safeEmit('error', err as Error);
      } finally {
        this.#scanning = undefined;
      }
    })();
    return this.#scanning;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#scanTimer !== undefined) clearInterval(this.#scanTimer);
    this.#timer = undefined;
    this.#scanTimer = undefined;
  }

  #arm(): void {
    // Before start() expiries only accumulate: a store opened without sweeping never deletes.
    if (this.#closed || !this.#started) return;
    const top = this.#peekValid();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (top === undefined) return;
    const delay = Math.min(Math.max(0, top.at - this.#now()), MAX_TIMER_MS);
    this.#timerAt = top.at;
    this.#timer = setTimeout(() => void this.#fire(), delay);
    // The sweeper alone must not keep a process alive; the store's owner decides lifetime.
    this.#timer.unref();
  }

  async #fire(): Promise<void> {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#running || this.#closed) return;
    this.#running = true;
    try {
      for (;;) {
        const top = this.#peekValid();
        if (top === undefined || top.at > this.#now() || this.#closed) break;
        this.#pop();
        this.#due.delete(top.id);
        try {
          await this.#target.expire(top.id);
          this.safeEmit('expired', top.id);
        } catch (err) {
          this.#logger.error({ recordingId: top.id, err: (err as Error).message }, 'expiry failed; will retry');
          this.safeEmit('error', err as Error);
          // Retry soon; keeping it in the heap is what makes the sweeper eventually win.
          this.schedule(top.id, this.#now() + this.#retryMs);
        }
      }
    } finally {
      this.#running = false;
      this.#arm();
    }
  }

  // ---- binary min-heap on `at` ----

  #peekValid(): { id: string; at: number } | undefined {
    while (this.#heap.length > 0) {
      const top = this.#heap[0]!;
      if (this.#due.get(top.id) === top.at) return top;
      this.#pop();
    }
    return undefined;
  }

  #push(e: { id: string; at: number }): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  #pop(): void {
    const h = this.#heap;
    const last = h.pop();
    if (h.length === 0 || last === undefined) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
}
