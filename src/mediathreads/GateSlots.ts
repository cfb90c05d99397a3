import { OptinError } from '../errors/OptinError.ts';

/**
 * The per-packet gate of every threaded track, in shared memory (one SharedArrayBuffer seen by
 * the main thread and every media thread). A slot is one Int32 word: `generation << 1 | open`.
 * The main thread decides (GateMachine, recording phase, participants) and writes the word with
 * Atomics.store; a media thread reads it with Atomics.load on every packet before anything else.
 * So a closing decision is one store, and the very next packet any thread reads after it is
 * dropped: there is no message to wait for (DESIGN §2 R4).
 *
 * The generation makes a reused slot safe: a track remembers the word it was given, and keeps a
 * packet only when the slot holds exactly that word with the open bit set. A slot freed and handed
 * to another track has a new generation, so the old track (its close still in flight) reads closed.
 */
export class GateSlots {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  constructor(bufferOrCapacity: SharedArrayBuffer | number) {
    if (typeof bufferOrCapacity === 'number') {
      if (!Number.isInteger(bufferOrCapacity) || bufferOrCapacity < 1 || bufferOrCapacity > 1 << 20) {
        throw new OptinError('CONFIG_INVALID', `gate slot capacity must be 1..${1 << 20}, got ${bufferOrCapacity}`);
      }
      this.buffer = new SharedArrayBuffer(bufferOrCapacity * Int32Array.BYTES_PER_ELEMENT);
    } else {
      this.buffer = bufferOrCapacity;
    }
    this.#words = new Int32Array(this.buffer);
  }

  get capacity(): number {
    return this.#words.length;
  }

  /** Hot path (media threads): may a packet of the track holding `word` for `slot` be kept now? */
  isOpen(slot: number, word: number): boolean {
    return Atomics.load(this.#words, slot) === (word | 1);
  }

  /** Main thread: the slot closes (generation kept). Effective for the next packet read anywhere. */
  close(slot: number): void {
    Atomics.and(this.#words, slot, ~1);
  }

  /** Main thread: the slot opens for the track holding `word`; a stale word changes nothing. */
  open(slot: number, word: number): void {
    Atomics.compareExchange(this.#words, slot, word & ~1, word | 1);
  }

  set(slot: number, word: number, open: boolean): void {
    if (open) this.open(slot, word);
    else this.close(slot);
  }

  /** Main thread: a fresh word (next generation, closed) for a slot handed to a new track. */
  claim(slot: number): number {
    const cur = Atomics.load(this.#words, slot);
    // 30 bits of generation: wraps after a billion reuses of one slot, long after any stale track.
    const next = (((cur >>> 1) + 1) & 0x3fff_ffff) << 1;
    Atomics.store(this.#words, slot, next);
    return next;
  }

  /** Main thread: the slot's track is gone; closed, and its word will never open again. */
  release(slot: number): void {
    this.claim(slot);
  }
}

/**
 * The main thread's pulse, in shared memory: it stamps the time every `MAIN_PULSE_MS`; a media
 * thread that finds the stamp older than `MAIN_SILENCE_MS` keeps nothing until it is fresh again.
 * The gate words are only as current as the thread that writes them: a main thread stalled (a
 * long GC, a runaway task) may be sitting on a consent withdrawal it has not read yet, while the
 * media threads, which do not stall with it, would go on recording (fail closed, DESIGN §2).
 */
export class MainPulse {
  readonly buffer: SharedArrayBuffer;
  readonly #stamp: BigInt64Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(BigInt64Array.BYTES_PER_ELEMENT);
    this.#stamp = new BigInt64Array(this.buffer);
  }

  /** Main thread: alive now. */
  beat(nowMs = Date.now()): void {
    Atomics.store(this.#stamp, 0, BigInt(Math.floor(nowMs)));
  }

  /** Media thread: has the main thread been heard from within `silenceMs`? */
  fresh(nowMs: number, silenceMs = MAIN_SILENCE_MS): boolean {
    return nowMs - Number(Atomics.load(this.#stamp, 0)) <= silenceMs;
  }
}

export const MAIN_PULSE_MS = 100;
export const MAIN_SILENCE_MS = 1000;

/** Free slot numbers of a GateSlots table (main thread only). */
export class SlotAllocator {
  readonly #free: number[] = [];
  #next = 0;
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  take(): number {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    if (this.#next >= this.#capacity) throw new OptinError('MEDIA_PORTS_EXHAUSTED', `all ${this.#capacity} gate slots are in use; raise the media threads' track capacity or add recorders`);
    return this.#next++;
  }

  give(slot: number): void {
    this.#free.push(slot);
  }
}
