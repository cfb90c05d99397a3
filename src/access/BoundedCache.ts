/**
 * A small in-memory cache bounded by total bytes and entry age, with LRU eviction and one
 * computation per key in flight (ten range requests arriving together render once). Used for
 * coaching renders: a player seeks with many Range requests, the render happens once.
 */
export interface CacheEntryValue {
  bytes: Buffer;
}

interface Entry<V> {
  value: V;
  expiresAtMs: number;
}

export class BoundedCache<V extends CacheEntryValue> {
  readonly maxBytes: number;
  readonly ttlMs: number;
  readonly #now: () => number;
  /** Map iteration order is insertion order: re-inserting on use makes the first entry the LRU. */
  readonly #entries = new Map<string, Entry<V>>();
  readonly #inflight = new Map<string, Promise<V>>();
  /**
   * Prefixes evicted recently, with when: a computation that started before an eviction must not
   * put its (now stale: e.g. deleted audio, R9) result back into the cache when it finishes.
   */
  readonly #evicted = new Map<string, number>();
  #bytes = 0;

  constructor(options: { maxBytes: number; ttlMs: number; now?: () => number }) {
    this.maxBytes = options.maxBytes;
    this.ttlMs = options.ttlMs;
    this.#now = options.now ?? Date.now;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): V | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAtMs <= this.#now()) {
      this.#remove(key);
      return undefined;
    }
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return e.value;
  }

  /** The cached value, or the one `compute` produces (shared by concurrent callers of the same key). */
  async getOrCompute(key: string, compute: () => Promise<V>, notAfterMs?: number): Promise<V> {
    const hit = this.get(key);
    if (hit !== undefined) return hit;
    const running = this.#inflight.get(key);
    if (running !== undefined) return running;
    const startedAt = this.#now();
    const p = compute().then(
      (value) => {
        this.#inflight.delete(key);
        if (!this.#evictedSince(key, startedAt)) this.set(key, value, notAfterMs);
        return value;
      },
      (err: unknown) => {
        this.#inflight.delete(key);
        throw err;
      },
    );
    this.#inflight.set(key, p);
    return p;
  }

  /**
   * Stores a value; one larger than the whole bound is not kept (the caller still has it).
   * `notAfterMs` caps the entry's life below the TTL (a recording's expiry instant: R8).
   */
  set(key: string, value: V, notAfterMs?: number): void {
    this.#remove(key);
    if (value.bytes.length > this.maxBytes) return;
    this.#purgeExpired();
    while (this.#bytes + value.bytes.length > this.maxBytes && this.#entries.size > 0) {
      this.#remove(this.#entries.keys().next().value as string);
    }
    const expiresAtMs = Math.min(this.#now() + this.ttlMs, notAfterMs ?? Number.POSITIVE_INFINITY);
    if (expiresAtMs <= this.#now()) return;
    this.#entries.set(key, { value, expiresAtMs });
    this.#bytes += value.bytes.length;
  }

  /** Drops every entry whose key starts with `prefix` (e.g. a deleted recording's renders). */
  evictPrefix(prefix: string): void {
    for (const key of [...this.#entries.keys()]) if (key.startsWith(prefix)) this.#remove(key);
    const now = this.#now();
    for (const [p, at] of this.#evicted) if (at + this.ttlMs < now) this.#evicted.delete(p);
    this.#evicted.set(prefix, now);
  }

  #evictedSince(key: string, startedAt: number): boolean {
    for (const [prefix, at] of this.#evicted) if (at >= startedAt && key.startsWith(prefix)) return true;
    return false;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** Keys held now (tests and metrics). */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /** Drops expired entries now (a periodic sweep: expired audio must not stay in memory). */
  purgeExpired(): void {
    this.#purgeExpired();
  }

  #purgeExpired(): void {
    const now = this.#now();
    for (const [key, e] of this.#entries) if (e.expiresAtMs <= now) this.#remove(key);
  }

  #remove(key: string): void {
    const e = this.#entries.get(key);
    if (e === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= e.value.bytes.length;
  }
}
