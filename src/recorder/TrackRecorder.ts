import { parseRtp } from '../rtp/RtpPacket.ts';
import { JitterBuffer, codecTiming, type TimelineItem, type JitterStats } from '../media/JitterBuffer.ts';
import { MediaTimeAnchor } from '../media/MediaTimeAnchor.ts';
import { Segmenter, type Segment } from '../media/Segmenter.ts';
import { observeSegmentQuality, segmentQuality } from '../media/segmentQuality.ts';
import { G711Framer, type PcmFrame } from '../media/G711Framer.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { SegmentBody, SegmentInput } from '../storage/types.ts';
import type { PageStore } from '../media/OpenSegmentFiles.ts';

/** Where a track's finished segments go (RecordingStore satisfies it). */
export interface SegmentSink {
  putSegment(meta: SegmentInput, ogg: Buffer): Promise<unknown>;
}

/**
 * Where a call's segments go: the Ogg file of a track here, or a media thread's handle on the file
 * it keeps (HeldSegment: sealed and PUT in that thread). RecordingStore satisfies it.
 */
export interface SegmentStore {
  putSegment(meta: SegmentInput, ogg: SegmentBody): Promise<unknown>;
}

/** PCM -> Opus for G.711 legs, off the event loop (TranscoderPool satisfies it). */
export interface OpusEncoderPool {
  encode(streamId: string, pcm: Int16Array): Promise<Buffer>;
  closeStream(streamId: string): void;
  /** Encoder lookahead in 48 kHz samples: the pre-skip of a transcoded track's first segment. */
  readonly preSkip: number;
}

/**
 * Metric label sets, built once: the per-packet counters get these rather than a fresh object
 * per packet (prom-client only reads them; it copies before it changes anything).
 */
const CODEC_LABELS: Readonly<Record<AudioCodec, Readonly<{ codec: AudioCodec }>>> = Object.freeze({
  opus: Object.freeze({ codec: 'opus' as const }),
  pcmu: Object.freeze({ codec: 'pcmu' as const }),
  pcma: Object.freeze({ codec: 'pcma' as const }),
});
const GATE_CLOSED_LABELS = Object.freeze({ reason: 'gate-closed' });
const PRE_OPENING_LABELS = Object.freeze({ reason: 'pre-opening' });

/** The framer's flush at the end of a run. */
const END = Object.freeze({ kind: 'end' as const });

export interface TrackRecorderOptions {
  callId: string;
  participantId: string;
  codec: AudioCodec;
  segmentSamples: number;
  sink: SegmentSink;
  encoder?: OpusEncoderPool;
  logger: Logger;
  metrics?: Metrics;
  /** Called when storing a segment failed for good (the recorder closes the gate). */
  onStoreError: (err: Error) => void;
  /**
   * Where this participant's track stands when an earlier TrackRecorder of the same participant
   * (another codec: the speaker reconnected) was retired: numbering and position continue from it.
   */
  continueFrom?: { nextSegment: number; position: number };
  /** Where open segments' closed pages wait (a media thread's encrypted files; default memory). */
  pageStore?: () => PageStore;
}

interface Run {
  recordingId: string;
  index: number;
  /** The instant the gate opened for this run (wall clock): audio from before it is never kept (R4). */
  openedAtMs: number;
  jitter: JitterBuffer;
  segmenter: Segmenter;
  /** Track position (48 kHz samples) where this run started. */
  startSample: number;
  /** G.711 only: timeline -> 60 ms PCM frames (20 ms at the tail), and the ordered encode chain. */
  framer: G711Framer | undefined;
  chain: Promise<void>;
  /** G.711: 48 kHz samples handed to the encoder and not yet pushed into the segmenter. */
  pendingSamples: number;
  packetsWritten: number;
}

/**
 * One participant's voice: RTP in, sealed segments out. The gate is checked on every packet
 * at arrival (`writable`), so a packet that arrives while the gate is closed is never held,
 * not even in the jitter buffer (R4). Nothing here owns a timer: the Recorder's one shared
 * tick calls `tick` for every track.
 */
export class TrackRecorder {
  readonly callId: string;
  readonly participantId: string;
  readonly codec: AudioCodec;
  readonly #o: TrackRecorderOptions;
  readonly #log: Logger;
  #run: Run | undefined;
  #nextSegment = 0;
  #position = 0;
  #pendingPuts = new Set<Promise<unknown>>();
  #closed = false;
  /** Counters over the track's life (the jitter buffer's are per run). */
  readonly counters = { received: 0, written: 0, writtenBytes: 0, droppedClosed: 0, droppedPreOpening: 0, malformed: 0, segments: 0, timelineMs: 0 };
  /** RTP time -> wall clock of late packets, over the track's life (every packet, every run): the media-time gate. */
  readonly #mediaTime: MediaTimeAnchor;
  #lastStats: JitterStats | undefined;

  constructor(opts: TrackRecorderOptions) {
    this.#o = opts;
    this.callId = opts.callId;
    this.participantId = opts.participantId;
    this.codec = opts.codec;
    this.#log = opts.logger.child({ participantId: opts.participantId });
    this.#mediaTime = new MediaTimeAnchor({ clockRate: codecTiming(opts.codec).clockRate });
    if (opts.continueFrom) {
      this.#nextSegment = opts.continueFrom.nextSegment;
      this.#position = opts.continueFrom.position;
    }
  }

  /**
   * The next segment number and track position a run started now would take. Read right after
   * `endRun` was called (synchronously) to continue the track in another TrackRecorder.
   */
  get continuation(): { nextSegment: number; position: number } {
    return { nextSegment: this.#nextSegment, position: this.#position };
  }

  get recording(): boolean {
    return this.#run !== undefined;
  }

  /** Live per-track health for metrics and the dashboard (no audio, no identifiers). */
  get health(): { jitterMs: number; lost: number; expected: number; concealedMs: number; written: number; writtenBytes: number } {
    const s = this.#run?.jitter.stats ?? this.#lastStats;
    const clock = this.codec === 'opus' ? 48 : 8;
    return {
      jitterMs: s?.jitterMs ?? 0,
      lost: s?.lost ?? 0,
      expected: s?.expected ?? 0,
      concealedMs: s ? s.concealedSamples / clock : 0,
      written: this.counters.written,
      writtenBytes: this.counters.writtenBytes,
    };
  }

  /**
   * Hot path: one call per RTP packet delivered by the tap consumer. `buf` must be the caller's
   * to give away: the payload is kept as a view into it (no copy) while it waits in the jitter
   * buffer and on the open Ogg page. The mediasoup tap satisfies this: it hands every packet over
   * in a Buffer of its own (Consumer 'rtp': `Buffer.from(notification.dataArray())`), never reused.
   *
   * `nowMs` is when the packet was read: never before it came, so the track's start (its
   * least-delayed packet's, JitterBuffer.wallClockAt) is never placed before its audio came.
   * `earliestMs` is the earliest it can have come, when the reader knows better than `nowMs` (a
   * media thread's drain: the start of the sleep it waited out); R4 judges by that.
   */
  onRtp(buf: Buffer, nowMs: number, writable: boolean, earliestMs = nowMs): void {
    // Counted locally and added to the Prometheus counters by flushMetrics (once a second and at
    // every scrape): a labelled counter increment per packet was a third of this path's cost.
    this.counters.received++;
    // Every packet, kept or not, keeps the track's media clock (it must be known at an opening).
    // Sequence, timestamp and SSRC at their fixed offsets (RFC 3550 §5.1); the full parse is below.
    const lateMediaMs = buf.length >= 12 ? this.#mediaTime.lateMediaTime(buf.readUInt32BE(8), buf.readUInt16BE(2), buf.readUInt32BE(4), nowMs) : Number.NaN;
    const run = this.#run;
    if (!writable || run === undefined) {
      // R4: dropped on arrival, never buffered.
      this.counters.droppedClosed++;
      return;
    }
    const m = this.#o.metrics;
    if (earliestMs < run.openedAtMs || lateMediaMs < run.openedAtMs) {
      // R4: it may have come before the opening (a media thread's drain whose sleep began before
      // it), or (issue 19, by media time) it came after the opening behind a later packet of its
      // source, its audio from before the opening (NaN, a packet in order, never is).
      this.counters.droppedPreOpening++;
      m?.packetsDropped.inc(PRE_OPENING_LABELS);
      return;
    }
    const parsed = parseRtp(buf);
    if (!parsed.ok) {
      this.counters.malformed++;
      m?.packetsDropped.inc({ reason: 'malformed' });
      return;
    }
    const p = parsed.packet;
    // The payload is a view into `buf`, which is ours (see above): no copy.
    const result = run.jitter.push({ seq: p.sequenceNumber, ts: p.timestamp, ssrc: p.ssrc, marker: p.marker, payload: p.payload }, nowMs);
    if (result !== 'buffered') m?.packetsDropped.inc({ reason: result });
  }

  #flushed = { received: 0, droppedClosed: 0 };

  /** Adds the packets counted since the last flush to the Prometheus counters. */
  flushMetrics(): void {
    const m = this.#o.metrics;
    if (!m) return;
    const received = this.counters.received - this.#flushed.received;
    const dropped = this.counters.droppedClosed - this.#flushed.droppedClosed;
    if (received > 0) m.packetsReceived.inc(CODEC_LABELS[this.codec], received);
    if (dropped > 0) m.packetsDropped.inc(GATE_CLOSED_LABELS, dropped);
    this.#flushed = { received: this.counters.received, droppedClosed: this.counters.droppedClosed };
  }

  /**
   * Starts an open period of the gate: a new run of segments with its own timeline anchor.
   * `openedAtMs`: when the gate opened (wall clock, the arrival clock of `onRtp`); packets whose
   * audio is from before it are dropped, whenever they arrive.
   */
  startRun(recordingId: string, index: number, openedAtMs: number): void {
    if (this.#closed || this.#run) return;
    const timing = codecTiming(this.codec);
    const transcoded = this.codec !== 'opus';
    this.#run = {
      recordingId,
      index,
      openedAtMs,
      jitter: new JitterBuffer({ ...timing }),
      segmenter: new Segmenter({
        serial: (Math.random() * 0x1_0000_0000) >>> 0,
        segmentSamples: this.#o.segmentSamples,
        preSkip: transcoded ? (this.#o.encoder?.preSkip ?? 0) : 0,
        inputSampleRate: transcoded ? 8000 : 48000,
        startIndex: this.#nextSegment,
        startSample: this.#position,
        ...(this.#o.pageStore ? { pageStore: this.#o.pageStore } : {}),
      }),
      startSample: this.#position,
      framer: this.codec === 'opus' ? undefined : new G711Framer(this.codec),
      chain: Promise.resolve(),
      pendingSamples: 0,
      packetsWritten: 0,
    };
  }

  /**
   * The speaker's media restarted (a reconnect: new producer, new SSRC, new RTP clock): ends the
   * open run, if any, and starts run `index` of the same recording, with its own jitter buffer and
   * timeline anchor. The gate did not reopen: the new run keeps the opening instant of the old.
   * Returns the ending run's hand-over (see `endRun`).
   */
  restartRun(nowMs: number, index: number): Promise<void> {
    const run = this.#run;
    if (!run) return Promise.resolve();
    const ending = this.endRun(nowMs);
    this.startRun(run.recordingId, index, run.openedAtMs);
    return ending;
  }

  /**
   * The speaker's stream was on hold and resumes now (SIPREC re-INVITE): the hold becomes silence
   * of its wall-clock length in the open run, whatever the sender's timestamps say.
   */
  resumedAt(atMs: number): void {
    this.#run?.jitter.resumedAt(atMs);
  }

  /** Shared tick: releases what the jitter buffer is done waiting for. */
  tick(nowMs: number): void {
    const run = this.#run;
    if (run) this.#feed(run, run.jitter.pull(nowMs));
  }

  /**
   * Ends the open period: what arrived while the gate was open is flushed into the last segment
   * of the run and handed to the store. Resolves when the run's segments are handed over (not
   * necessarily uploaded: see `settled`).
   */
  async endRun(nowMs: number): Promise<void> {
    const run = this.#run;
    if (!run) return;
    this.#run = undefined;
    this.#feed(run, run.jitter.pull(nowMs, { flush: true }));
    if (run.framer) {
      this.#encodeAll(run, run.framer.processInput(END));
      // Frames still in the encoder may complete more segments of this run after the gate has
      // already reopened a new one. Reserve their indices now, synchronously, so the next run can
      // never reuse a segment number (at worst it leaves a gap in the numbering).
      const reserved = run.segmenter.nextIndex + Math.ceil(run.pendingSamples / this.#o.segmentSamples) + 1;
      this.#nextSegment = reserved;
      this.#position = run.segmenter.position + run.pendingSamples;
      await run.chain;
      this.#o.encoder?.closeStream(this.#streamId(run));
      const last = run.segmenter.close();
      if (last) this.#emit(run, last);
      this.#lastStats = run.jitter.stats;
      // No new run since: continue the numbering without a gap.
      if (this.#run === undefined && this.#nextSegment === reserved) {
        this.#nextSegment = run.segmenter.nextIndex;
        this.#position = run.segmenter.position;
      }
      return;
    }
    const last = run.segmenter.close();
    if (last) this.#emit(run, last);
    this.#lastStats = run.jitter.stats;
    this.#nextSegment = run.segmenter.nextIndex;
    this.#position = run.segmenter.position;
  }

  /** Resolves when every segment handed to the store has been stored or spooled. */
  async settled(): Promise<void> {
    while (this.#pendingPuts.size > 0) await Promise.allSettled([...this.#pendingPuts]);
  }

  async close(nowMs: number): Promise<void> {
    if (this.#closed) return;
    this.flushMetrics();
    await this.endRun(nowMs);
    this.#closed = true;
    await this.settled();
  }

  /** Discards the open run without writing it (consent withdrawn with erase). */
  discardRun(): void {
    const run = this.#run;
    this.#run = undefined;
    run?.segmenter.discard();
    if (run?.framer) this.#o.encoder?.closeStream(this.#streamId(run));
  }

  #streamId(run: Run): string {
    return `${run.recordingId}:${this.participantId}:${run.index}`;
  }

  #feed(run: Run, items: readonly TimelineItem[]): void {
    if (items.length === 0) return;
    const perMs = this.codec === 'opus' ? 48 : 8;
    for (const item of items) {
      this.counters.timelineMs += item.samples / perMs;
      if (item.kind === 'packet') this.counters.writtenBytes += item.payload.length;
    }
    if (this.codec === 'opus') {
      for (const item of items) {
        if (item.kind === 'packet') {
          run.packetsWritten++;
          this.counters.written++;
          this.#o.metrics?.packetsWritten.inc(CODEC_LABELS.opus);
        }
        for (const seg of run.segmenter.push(item)) this.#emit(run, seg);
      }
      return;
    }
    // G.711: the framer decodes to 8 kHz PCM (gaps become PCM silence) in 60 ms frames.
    const framer = run.framer!;
    for (const item of items) {
      if (item.kind === 'packet') {
        run.packetsWritten++;
        this.counters.written++;
        this.#o.metrics?.packetsWritten.inc(CODEC_LABELS[this.codec]);
      }
      this.#encodeAll(run, framer.processInput(item));
    }
  }

  #encodeAll(run: Run, frames: readonly PcmFrame[]): void {
    for (const f of frames) this.#encode(run, f.pcm);
  }

  #encode(run: Run, frame: Int16Array): void {
    const encoder = this.#o.encoder;
    if (!encoder) throw new OptinError('CONFIG_INVALID', 'a G.711 track needs an Opus encoder pool: give the Recorder an `encoder` (a TranscoderPool)');
    let encoded: Promise<Buffer>;
    try {
      encoded = encoder.encode(this.#streamId(run), frame);
    } catch (err) {
      encoded = Promise.reject(err as Error);
    }
    // Encodes finish in order per stream; chaining keeps the segmenter's input in order too. A
    // frame the pool refused (overload) becomes silence of the same length: time never shrinks.
    run.pendingSamples += frame.length * 6;
    run.chain = run.chain.then(async () => {
      run.pendingSamples -= frame.length * 6;
      let packet: { payload: Uint8Array; samples: number; kind: 'packet' } | { kind: 'gap'; samples: number };
      try {
        packet = { kind: 'packet', payload: await encoded, samples: frame.length * 6 };
      } catch (err) {
        this.#o.metrics?.packetsDropped.inc({ reason: 'transcoder' });
        this.#log.warn({ err: (err as Error).message }, 'frame not transcoded; written as silence');
        packet = { kind: 'gap', samples: frame.length * 6 };
      }
      for (const seg of run.segmenter.push(packet)) this.#emit(run, seg);
    });
  }

  #emit(run: Run, seg: Segment): void {
    const stats = run.jitter.takeSegmentStats();
    const clockPer48k = this.codec === 'opus' ? 1 : 1 / 6;
    const startWallClockMs = run.jitter.wallClockAt((seg.startSample - run.startSample) * clockPer48k);
    const quality = segmentQuality(stats, seg, this.codec, run.index);
    const m = this.#o.metrics;
    if (m) observeSegmentQuality(m, quality);
    this.counters.segments++;
    const started = performance.now();
    const put = this.#o.sink
      .putSegment(
        {
          recordingId: run.recordingId,
          participantId: this.participantId,
          segment: seg.index,
          run: run.index,
          startWallClockMs: Number.isFinite(startWallClockMs) ? Math.round(startWallClockMs) : Date.now(),
          durationMs: Math.round((seg.samples - seg.preSkip) / 48),
          opusPayloadBytes: seg.opusPayloadBytes,
          quality,
        },
        seg.ogg,
      )
      .then(
        (res) => {
          const stored = (res as { stored?: string } | undefined)?.stored ?? 'uploaded';
          m?.segments.inc({ result: stored });
          this.#log.debug({ segment: seg.index, run: run.index, stored, bytes: seg.ogg.length, lost: stats.lost }, 'segment stored');
          if (stored === 'uploaded') m?.uploadSeconds.observe((performance.now() - started) / 1000);
        },
        (err: Error) => {
          m?.segments.inc({ result: 'failed' });
          this.#log.error({ segment: seg.index, err: err.message, code: (err as { code?: string }).code }, 'segment not stored');
          this.#o.onStoreError(err);
        },
      );
    this.#pendingPuts.add(put);
    void put.finally(() => this.#pendingPuts.delete(put));
  }
}
