import type { GatedTrack } from '../recorder/RecorderTrack.ts';
import type { SegmentStore } from '../recorder/TrackRecorder.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { GateSlots } from './GateSlots.ts';
import type { ToThread, TrackStats } from './protocol.ts';

/** The thread side of a ThreadedTrack, as the pool exposes it. */
export interface TrackThread {
  send(msg: ToThread): void;
  /** Sends a message carrying `req` (moving `transfer` with it) and resolves (or rejects) with the thread's answer. */
  request(make: (req: number) => ToThread, transfer?: ArrayBuffer[]): Promise<unknown>;
}

const ZERO_COUNTERS = { received: 0, written: 0, writtenBytes: 0, droppedClosed: 0, droppedPreOpening: 0, malformed: 0, segments: 0, timelineMs: 0 };
const ZERO_HEALTH = { jitterMs: 0, lost: 0, expected: 0, concealedMs: 0, written: 0, writtenBytes: 0 };

/**
 * The main thread's handle on a track that lives in a media thread: the call drives its runs
 * (messages, in order), and its gate word (shared memory, at once). Packets never come here.
 * Counters and health are the thread's, at most a second old (final after `close`).
 */
export class ThreadedTrack implements GatedTrack {
  readonly callId: string;
  readonly participantId: string;
  readonly codec: AudioCodec;
  readonly id: number;
  readonly thread: TrackThread;
  readonly sink: SegmentStore;
  readonly onStoreError: (err: Error) => void;
  readonly #gate: GateSlots;
  readonly #slot: number;
  readonly #word: number;
  readonly #metrics: Metrics | undefined;
  readonly #release: () => void;
  #recording = false;
  #closed = false;
  /** The call's verdict (setWritable) and whether the thread has the run it applies to. */
  #wantOpen = false;
  #runReady = false;
  #runEpoch = 0;
  #stats: TrackStats | undefined;
  #flushed = { ...ZERO_COUNTERS };

  constructor(o: {
    id: number;
    callId: string;
    participantId: string;
    codec: AudioCodec;
    thread: TrackThread;
    gate: GateSlots;
    slot: number;
    word: number;
    sink: SegmentStore;
    onStoreError: (err: Error) => void;
    metrics?: Metrics | undefined;
    release: () => void;
  }) {
    this.id = o.id;
    this.callId = o.callId;
    this.participantId = o.participantId;
    this.codec = o.codec;
    this.thread = o.thread;
    this.sink = o.sink;
    this.onStoreError = o.onStoreError;
    this.#gate = o.gate;
    this.#slot = o.slot;
    this.#word = o.word;
    this.#metrics = o.metrics;
    this.#release = o.release;
  }

  get recording(): boolean {
    return this.#recording;
  }

  get counters(): TrackStats['counters'] {
    return this.#stats?.counters ?? ZERO_COUNTERS;
  }

  get health(): TrackStats['health'] {
    return this.#stats?.health ?? ZERO_HEALTH;
  }

  /** The thread's latest figures for this track. */
  updateStats(stats: TrackStats): void {
    this.#stats = stats;
  }

  /**
   * The gate word opens only once the thread holds the run it opens for (its `run.start` answered):
   * a packet read as writable is then always written. Closing is at once.
   */
  setWritable(writable: boolean): void {
    if (this.#closed) return;
    this.#wantOpen = writable;
    this.#gate.set(this.#slot, this.#word, writable && this.#runReady);
  }

  /** The call opened this track's gate and the thread has not yet confirmed the run (the gate word still closed). */
  get opening(): boolean {
    return this.#wantOpen && this.#recording && !this.#runReady;
  }

  startRun(recordingId: string, index: number, openedAtMs: number): void {
    if (this.#closed || this.#recording) return;
    this.#recording = true;
    this.#runReady = false;
    const epoch = ++this.#runEpoch;
    this.thread.request((req) => ({ t: 'run.start', id: this.id, recordingId, index, openedAtMs, req })).then(
      () => {
        if (epoch !== this.#runEpoch || !this.#recording || this.#closed) return;
        this.#runReady = true;
        this.setWritable(this.#wantOpen);
      },
      () => undefined, // the thread is gone: the word stays closed
    );
  }

  async endRun(nowMs: number): Promise<void> {
    if (!this.#recording) return;
    this.#recording = false;
    this.#runReady = false;
    this.#runEpoch++;
    // Closed first: nothing more is kept from the next packet on, whatever the call's gate says.
    this.#gate.close(this.#slot);
    await this.thread.request((req) => ({ t: 'run.end', id: this.id, nowMs, req }));
  }

  async restartRun(nowMs: number, index: number): Promise<void> {
    if (!this.#recording) return;
    await this.thread.request((req) => ({ t: 'run.restart', id: this.id, nowMs, index, req }));
  }

  /** Applied by the media thread itself when its stream resumes (before the next packet): nothing to do here. */
  resumedAt(): void {}

  discardRun(): void {
    this.#runReady = false;
    this.#runEpoch++;
    this.#gate.close(this.#slot);
    if (!this.#recording) return;
    this.#recording = false;
    this.thread.send({ t: 'run.discard', id: this.id });
  }

  /** The media thread ticks its own tracks. */
  tick(): void {}

  flushMetrics(): void {
    const m = this.#metrics;
    const c = this.counters;
    if (!m) return;
    const f = this.#flushed;
    if (c.received > f.received) m.packetsReceived.inc({ codec: this.codec }, c.received - f.received);
    if (c.written > f.written) m.packetsWritten.inc({ codec: this.codec }, c.written - f.written);
    if (c.droppedClosed > f.droppedClosed) m.packetsDropped.inc({ reason: 'gate-closed' }, c.droppedClosed - f.droppedClosed);
    if (c.droppedPreOpening > f.droppedPreOpening) m.packetsDropped.inc({ reason: 'pre-opening' }, c.droppedPreOpening - f.droppedPreOpening);
    if (c.malformed > f.malformed) m.packetsDropped.inc({ reason: 'malformed' }, c.malformed - f.malformed);
    this.#flushed = { ...c };
  }

  async settled(): Promise<void> {
    if (this.#closed) return;
    await this.thread.request((req) => ({ t: 'track.settled', id: this.id, req }));
  }

  async close(nowMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#recording = false;
    this.#runReady = false;
    this.#gate.close(this.#slot);
    try {
      await this.thread.request((req) => ({ t: 'track.close', id: this.id, nowMs, req }));
    } finally {
      this.flushMetrics();
      this.#release();
    }
  }
}
