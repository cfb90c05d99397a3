/**
 * Fixed-size blocks carved from large slabs, for the bytes a track holds for a long time: its open
 * segment's Ogg pages (up to a segment length: 60 s is ~140 KB of speech) and its open page's body.
 *
 * Why not Buffer.allocUnsafe: a media thread also allocates one short-lived Buffer per datagram
 * (Node's UDP receive). Pages that live for a minute, malloc'd between thousands of receive buffers
 * that live for milliseconds, pin the allocator's arenas: at 1,000 streams glibc held ~210 MB for
 * ~85 MB of live pages (README, performance). Blocks from slabs keep the long-lived bytes out of the
 * arenas and reuse them segment after segment.
 *
 * A released block is zeroed first: a free block holds no one's voice. Slabs are never returned
 * (the pool stays at its peak, which admission bounds); one pool per thread (module state is per
 * isolate), so no locking.
 */
export class BlockPool {
  readonly blockBytes: number;
  readonly #slabBlocks: number;
  readonly #free: Buffer[] = [];
  #slabs = 0;
  #inUse = 0;

  constructor(blockBytes = 16 * 1024, slabBytes = 1024 * 1024) {
    if (!Number.isInteger(blockBytes) || blockBytes < 256) throw new RangeError(`block size must be an integer >= 256, got ${blockBytes}`);
    this.blockBytes = blockBytes;
    this.#slabBlocks = Math.max(1, Math.floor(slabBytes / blockBytes));
  }

  /** A block of `blockBytes` (contents unspecified: zeros or never written). */
  take(): Buffer {
    let block = this.#free.pop();
    if (block === undefined) {
      const slab = new ArrayBuffer(this.#slabBlocks * this.blockBytes);
      this.#slabs++;
      for (let i = this.#slabBlocks - 1; i > 0; i--) this.#free.push(Buffer.from(slab, i * this.blockBytes, this.blockBytes));
      block = Buffer.from(slab, 0, this.blockBytes);
    }
    this.#inUse++;
    return block;
  }

  /** Gives a block back, zeroed. The caller must not touch it afterwards. */
  release(block: Buffer): void {
    block.fill(0);
    this.#inUse--;
    this.#free.push(block);
  }

  get stats(): { slabs: number; blocksInUse: number; blocksFree: number; bytes: number } {
    return { slabs: this.#slabs, blocksInUse: this.#inUse, blocksFree: this.#free.length, bytes: this.#slabs * this.#slabBlocks * this.blockBytes };
  }
}

/**
 * An append-only byte run in pool blocks: what a writer has produced and not yet handed out.
 * `take()` copies it out as one Buffer and gives the blocks back.
 */
export class BlockBytes {
  readonly #pool: BlockPool;
  #blocks: Buffer[] = [];
  /** Bytes written into the last block. */
  #tail = 0;
  #length = 0;

  constructor(pool: BlockPool) {
    this.#pool = pool;
  }

  get length(): number {
    return this.#length;
  }

  append(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      let last = this.#blocks[this.#blocks.length - 1];
      if (last === undefined || this.#tail === last.length) {
        last = this.#pool.take();
        this.#blocks.push(last);
        this.#tail = 0;
      }
      const n = Math.min(bytes.length - at, last.length - this.#tail);
      last.set(bytes.subarray(at, at + n), this.#tail);
      this.#tail += n;
      at += n;
    }
    this.#length += bytes.length;
  }

  /**
   * Everything appended since the last take, in one new Buffer after `prefix` (copied once: no
   * concatenation afterwards); the blocks go back to the pool.
   */
  take(prefix?: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe((prefix?.length ?? 0) + this.#length);
    let at = 0;
    if (prefix) {
      out.set(prefix);
      at = prefix.length;
    }
    for (let i = 0; i < this.#blocks.length; i++) {
      const b = this.#blocks[i]!;
      const n = i === this.#blocks.length - 1 ? this.#tail : b.length;
      b.copy(out, at, 0, n);
      at += n;
    }
    this.discard();
    return out;
  }

  /** Drops what was appended (zeroed, back to the pool). */
  discard(): void {
    for (const b of this.#blocks) this.#pool.release(b);
    this.#blocks = [];
    this.#tail = 0;
    this.#length = 0;
  }
}
