/**
 * G.711 -> Opus encoding off the event loop (docs/architecture.md §3: "only non-Opus legs
 * are decoded and encoded, off the event loop"; STYLE habit 3: heavy
 * encoding runs in a worker-thread pool, no thread per stream).
 *
 * - A fixed number of threads (default 1); each stream is pinned to one
 *   thread by a hash of its id, so its encoder state stays continuous.
 * - Frames requested during one event-loop turn are sent to each thread as
 *   ONE message (batched in a microtask), which keeps per-frame messaging
 *   cost low with hundreds of streams at 50 frames/s.
 * - Bounded: at most `maxPendingFrames` frames queued or in flight and
 *   `maxStreams` encoders; beyond that `encode` rejects with
 *   OptinError('TRANSCODER_OVERLOADED') instead of queueing without limit.
 *
 * Encoder settings: 8 kHz mono input, VOIP application, voice signal,
 * ~16 kbit/s, which is transparent for narrowband telephone speech.
 */
import { Worker } from 'node:worker_threads';
import { fnv1a, threadEntry } from '../async/threadEntry.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { FromThread, ToThread, TranscoderThreadConfig } from './transcoderThread.ts';

export interface TranscoderPoolOptions {
  /** Worker threads (default 1). */
  threads?: number;
  /** Frames queued or in flight across the pool before `encode` refuses (default 4096, ~80 s of audio). */
  maxPendingFrames?: number;
  /** Concurrent streams (encoders) across the pool (default 2000). */
  maxStreams?: number;
  /** Target bitrate, bit/s (default 16000). */
  bitrate?: number;
  /** libopus complexity 0-10 (default 5: the CPU/quality knee for narrowband speech, see bench/transcode.ts). */
  complexity?: number;
  /** Input sample rate (default 8000, G.711). */
  sampleRate?: 8000 | 16000 | 48000;
}

/**
 * Pre-skip for the Ogg header of transcoded tracks, in 48 kHz samples: the
 * libopus encoder's lookahead for the VOIP/AUDIO applications is
 * Fs/400 (2.5 ms) + Fs/250 delay compensation (4 ms) = 6.5 ms at any input
 * rate = 312 samples at 48 kHz (checked against OPUS_GET_LOOKAHEAD by
 * `lookahead48k()` and in test/unit/media/transcoder.test.ts).
 */
export const TRANSCODER_PRE_SKIP_48K = 312;

interface Pending {
  resolve: (packet: Buffer) => void;
  reject: (err: Error) => void;
}

interface Thread {
  worker: Worker | undefined;
  pending: Map<number, Pending>;
  streams: Set<string>;
  outbox: { ids: number[]; streams: string[]; frames: number[]; chunks: Int16Array[]; samples: number };
  scheduled: boolean;
}

/** Stream ids are internal (e.g. `<recordingId>/<participantId>/<run>`): printable ASCII, no spaces. */
const ID_RE = /^[\x21-\x7e]{1,256}$/;

export class TranscoderPool {
  readonly sampleRate: number;
  readonly #threads: Thread[];
  readonly #config: TranscoderThreadConfig;
  readonly #maxPending: number;
  readonly #maxStreams: number;
  readonly #validFrames: Set<number>;
  readonly #control = new Map<number, { thread: Thread; settle: (msg: FromThread | Error) => void }>();
  #nextId = 1;
  #pendingFrames = 0;
  #streamCount = 0;
  #closed = false;

  constructor(options: TranscoderPoolOptions = {}) {
    const threads = options.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) {
      throw new OptinError('TRANSCODER_INVALID_OPTIONS', `transcoder threads must be 1..64, got ${threads}`);
    }
    this.sampleRate = options.sampleRate ?? 8000;
    this.#config = {
      sampleRate: options.sampleRate ?? 8000,
      bitrate: options.bitrate ?? 16_000,
      complexity: options.complexity ?? 5,
    };
    this.#maxPending = options.maxPendingFrames ?? 4096;
    this.#maxStreams = options.maxStreams ?? 2000;
    // Opus frame durations (RFC 6716 §2.1.4): 2.5, 5, 10, 20, 40, 60 ms.
    this.#validFrames = new Set([2.5, 5, 10, 20, 40, 60].map((ms) => (this.sampleRate * ms) / 1000));
    this.#threads = Array.from({ length: threads }, () => ({
      worker: undefined,
      pending: new Map(),
      streams: new Set<string>(),
      outbox: { ids: [], streams: [], frames: [], chunks: [], samples: 0 },
      scheduled: false,
    }));
    // Start the threads now: loading the codec takes a moment, better at startup than on the first call.
    this.#threads.forEach((t, i) => this.#spawn(t, i));
  }

  /** Pre-skip (48 kHz samples) to put in OpusHead of a track encoded by this pool. */
  get preSkip(): number {
    return TRANSCODER_PRE_SKIP_48K;
  }

  /** Frames queued or in flight. */
  get pendingFrames(): number {
    return this.#pendingFrames;
  }

  get streams(): number {
    return this.#streamCount;
  }

  /**
   * Encodes one frame of a stream (20 ms = 160 samples at 8 kHz; any Opus
   * frame duration 2.5-60 ms is accepted) and resolves with one Opus packet.
   * Frames of a stream must be submitted in order; they are encoded in order.
   * `pcm` is copied, the caller may reuse it at once.
   */
  encode(streamId: string, pcm: Int16Array): Promise<Buffer> {
    const refusal = this.#admit(streamId, pcm.length, 1);
    if (refusal) return Promise.reject(refusal);
    return this.#enqueue(streamId, pcm.slice());
  }

  /** Encodes `pcm` as consecutive frames of `frameSamples` (default 20 ms); all or nothing admission. */
  encodeFrames(streamId: string, pcm: Int16Array, frameSamples = (this.sampleRate * 20) / 1000): Promise<Buffer[]> {
    if (pcm.length % frameSamples !== 0) {
      return Promise.reject(new OptinError('TRANSCODER_BAD_FRAME', `PCM length ${pcm.length} is not a multiple of the frame size ${frameSamples}`));
    }
    const n = pcm.length / frameSamples;
    const refusal = this.#admit(streamId, frameSamples, n);
    if (refusal) return Promise.reject(refusal);
    const out: Promise<Buffer>[] = [];
    for (let i = 0; i < n; i++) out.push(this.#enqueue(streamId, pcm.slice(i * frameSamples, (i + 1) * frameSamples)));
    return Promise.all(out);
  }

  /** Frees the stream's encoder (its next frame would start a fresh encoder). */
  closeStream(streamId: string): void {
    const t = this.#threadFor(streamId);
    if (!t.streams.delete(streamId)) return;
    this.#streamCount--;
    this.#flush(t); // frames already queued for the stream go first
    t.worker?.postMessage({ type: 'close', streamId } satisfies ToThread);
  }

  /** Encoder lookahead reported by libopus, in 48 kHz samples (expected: TRANSCODER_PRE_SKIP_48K). */
  lookahead48k(): Promise<number> {
    return this.#request(0, (id) => ({ type: 'lookahead', id }), (m) => (m.type === 'lookahead' ? m.samples : Number.NaN));
  }

  /** Per-thread counters: streams, frames encoded, milliseconds spent encoding. */
  async threadStats(): Promise<{ streams: number; frames: number; encodeMs: number }[]> {
    return Promise.all(
      this.#threads.map((_, i) =>
        this.#request(i, (id) => ({ type: 'stats', id }), (m) =>
          m.type === 'stats' ? { streams: m.streams, frames: m.frames, encodeMs: m.encodeMs } : { streams: 0, frames: 0, encodeMs: 0 },
        ),
      ),
    );
  }

  /** Stops the threads; pending frames reject with TRANSCODER_CLOSED. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const err = new OptinError('TRANSCODER_CLOSED', 'transcoder pool closed while frames were pending');
    await Promise.all(
      this.#threads.map(async (t) => {
        this.#failThread(t, err);
        const w = t.worker;
        t.worker = undefined;
        if (w) await w.terminate();
      }),
    );
  }

  #admit(streamId: string, frameSamples: number, frames: number): OptinError | undefined {
    if (this.#closed) return new OptinError('TRANSCODER_CLOSED', 'transcoder pool is closed');
    if (!ID_RE.test(streamId)) return new OptinError('TRANSCODER_BAD_STREAM', 'transcoder stream id must be 1-256 printable ASCII characters without spaces');
    if (!this.#validFrames.has(frameSamples)) {
      return new OptinError('TRANSCODER_BAD_FRAME', `frame of ${frameSamples} samples is not an Opus frame size at ${this.sampleRate} Hz (2.5-60 ms)`);
    }
    if (this.#pendingFrames + frames > this.#maxPending) {
      return new OptinError(
        'TRANSCODER_OVERLOADED',
        `transcoder queue full (${this.#maxPending} frames): admit fewer G.711 streams or add transcoder threads`,
        { retryable: true },
      );
    }
    const t = this.#threadFor(streamId);
    if (!t.streams.has(streamId)) {
      if (this.#streamCount >= this.#maxStreams) {
        return new OptinError('TRANSCODER_OVERLOADED', `transcoder at its stream limit (${this.#maxStreams}): refuse the call at admission`, {
          retryable: true,
        });
      }
      t.streams.add(streamId);
      this.#streamCount++;
    }
    return undefined;
  }

  #enqueue(streamId: string, pcm: Int16Array): Promise<Buffer> {
    const t = this.#threadFor(streamId);
    const id = this.#nextId++;
    this.#pendingFrames++;
    const o = t.outbox;
    o.ids.push(id);
    o.streams.push(streamId);
    o.frames.push(pcm.length);
    o.chunks.push(pcm);
    o.samples += pcm.length;
    if (!t.scheduled) {
      t.scheduled = true;
      queueMicrotask(() => this.#flush(t));
    }
    return new Promise<Buffer>((resolve, reject) => t.pending.set(id, { resolve, reject }));
  }

  #flush(t: Thread): void {
    t.scheduled = false;
    const o = t.outbox;
    if (o.ids.length === 0 || this.#closed) return;
    const pcm = new Int16Array(o.samples);
    let at = 0;
    for (const c of o.chunks) {
      pcm.set(c, at);
      at += c.length;
    }
    const msg: ToThread = { type: 'encode', ids: o.ids, streams: o.streams, frames: o.frames, pcm };
    t.outbox = { ids: [], streams: [], frames: [], chunks: [], samples: 0 };
    const w = this.#workerOf(t);
    w.ref(); // keep the process alive while frames are in flight
    w.postMessage(msg, [pcm.buffer]);
  }

  #threadFor(streamId: string): Thread {
    return this.#threads[fnv1a(streamId) % this.#threads.length]!;
  }

  #workerOf(t: Thread): Worker {
    if (!t.worker) this.#spawn(t, this.#threads.indexOf(t));
    return t.worker!;
  }

  #spawn(t: Thread, index: number): void {
    const [entry, extra] = threadEntry(import.meta.url, 'transcoderThread');
    const worker = new Worker(entry, { ...extra, workerData: this.#config, name: `optin-transcoder-${index}` });
    worker.unref(); // idle threads must not keep the process alive
    worker.on('message', (m: FromThread) => this.#onMessage(t, m));
    const fail = (err: Error): void => {
      if (t.worker !== worker) return;
      t.worker = undefined;
      // The encoders of this thread are gone; its streams start fresh on a new thread.
      this.#streamCount -= t.streams.size;
      t.streams.clear();
      this.#failThread(t, new OptinError('TRANSCODER_FAILED', `transcoder thread ${index} failed: ${err.message}`, { retryable: true, cause: err }));
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    t.worker = worker;
  }

  #onMessage(t: Thread, m: FromThread): void {
    if (m.type !== 'encoded') {
      const c = this.#control.get(m.id);
      this.#control.delete(m.id);
      c?.settle(m);
      return;
    }
    let offset = 0;
    for (let i = 0; i < m.ids.length; i++) {
      const id = m.ids[i]!;
      const size = m.sizes[i]!;
      const p = t.pending.get(id);
      t.pending.delete(id);
      if (p) this.#pendingFrames--;
      if (size < 0) {
        p?.reject(new OptinError('TRANSCODER_ENCODE_FAILED', `Opus encode failed: ${m.errors[id] ?? 'unknown error'}`));
        continue;
      }
      // Views into the one transferred buffer of this batch: no copy per packet.
      p?.resolve(Buffer.from(m.data.buffer, m.data.byteOffset + offset, size));
      offset += size;
    }
    if (t.pending.size === 0) t.worker?.unref();
  }

  #failThread(t: Thread, err: OptinError): void {
    for (const [id, c] of this.#control) {
      if (c.thread !== t) continue;
      this.#control.delete(id);
      c.settle(err);
    }
    this.#pendingFrames -= t.pending.size;
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
    t.outbox = { ids: [], streams: [], frames: [], chunks: [], samples: 0 };
  }

  #request<T>(threadIndex: number, make: (id: number) => ToThread, read: (m: FromThread) => T): Promise<T> {
    if (this.#closed) return Promise.reject(new OptinError('TRANSCODER_CLOSED', 'transcoder pool is closed'));
    const t = this.#threads[threadIndex]!;
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const w = this.#workerOf(t);
      w.ref();
      this.#control.set(id, {
        thread: t,
        settle: (m) => {
          if (t.pending.size === 0) t.worker?.unref();
          if (m instanceof Error) reject(m);
          else resolve(read(m));
        },
      });
      w.postMessage(make(id));
    });
  }
}

