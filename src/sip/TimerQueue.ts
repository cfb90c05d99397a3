/**
 * All SIP timers (RFC 3261 §17 timers E-K, 2xx retransmission §13.3.1.4, RFC 6026 Timer L) on ONE
 * Node timer: a binary min-heap of deadlines, and a single setTimeout armed for the earliest.
 * Thousands of transactions then cost one timer, not thousands (STYLE: no per-stream timers).
 * Cancelling marks the entry dead; dead entries are discarded when they reach the top.
 */
export interface TimerHandle {
  cancel(): void;
}

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  dead: boolean;
}

export class TimerQueue {
  readonly #heap: Entry[] = [];
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #armedAt = Infinity;
  #seq = 0;
  #closed = false;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Runs `fn` after `delayMs` (clamped at 0). */
  after(delayMs: number, fn: () => void): TimerHandle {
    const entry: Entry = { at: this.#now() + Math.max(0, delayMs), seq: this.#seq++, fn, dead: false };
    if (this.#closed) return { cancel: () => undefined };
    this.#push(entry);
    this.#arm();
    return {
      cancel: () => {
        entry.dead = true;
      },
    };
  }

  get size(): number {
    return this.#heap.length;
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#heap.length = 0;
  }

  #arm(): void {
    while (this.#heap.length > 0 && this.#heap[0]!.dead) this.#pop();
    const top = this.#heap[0];
    if (!top) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#armedAt = Infinity;
      return;
    }
    if (this.#timer && this.#armedAt <= top.at) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#armedAt = top.at;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, top.at - this.#now()));
    // SIP timers must not keep a process alive on their own.
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = this.#now();
    // Run everything due, in deadline order; callbacks may schedule more.
    while (this.#heap.length > 0 && this.#heap[0]!.at <= now + 1) {
      const e = this.#pop()!;
      if (e.dead) continue;
      e.dead = true;
      try {
        e.fn();
      } catch {
        // A timer callback is library code that must not throw; if it does, the queue survives.
      }
    }
    if (!this.#closed) this.#arm();
  }

  #less(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #push(e: Entry): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  #pop(): Entry | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.#less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
