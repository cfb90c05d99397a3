/**
 * Cuts one track's Opus timeline into standalone Ogg Opus segment files.
 *
 * Pure: timeline items in, finished segments out. It knows nothing about
 * the gate, encryption or storage (the recorder hands each segment on).
 * Input is the jitter buffer's timeline for Opus tracks (or the transcoder's
 * output for G.711 tracks): packets with their 48 kHz duration, and gaps,
 * which become Opus silence packets here so that the file keeps exact time
 * (docs/architecture.md §3: loss and DTX become silence of the right length). Opus can
 * only express multiples of 2.5 ms; the sub-2.5 ms remainder of a gap is
 * carried into the next gap, so the error never accumulates.
 *
 * Segments are cut on packet boundaries once they reach `segmentSamples`,
 * and filler silence is split at the boundary, so segments are exactly the
 * target length whenever the packets allow it.
 */
import { OptinError } from '../errors/OptinError.ts';
import { OggOpusWriter } from './OggOpusWriter.ts';
import type { PageStore } from './OpenSegmentFiles.ts';
import { OPUS_MIN_FRAME_SAMPLES, opusPacketSamples, pushOpusSilence } from './opusToc.ts';

export type SegmenterItem =
  | { kind: 'packet'; payload: Uint8Array; samples: number }
  | { kind: 'gap'; samples: number };

export interface Segment {
  /** 0-based, monotonic over the track (see `startIndex`). */
  index: number;
  /** Position of the segment's first sample on the track, 48 kHz samples. */
  startSample: number;
  /** Duration in 48 kHz samples (packets including filler silence, before pre-skip). */
  samples: number;
  /** Pre-skip written in this segment's header (only the track's first segment has one). */
  preSkip: number;
  /** A complete standalone Ogg Opus file. */
  ogg: Buffer;
  /** Sum of Opus packet bytes in the file (ogg.length - this = container overhead). */
  opusPayloadBytes: number;
  packets: number;
  /** Of `samples`: filler silence for gaps. */
  silenceSamples: number;
}

export interface SegmenterOptions {
  /** Ogg serial of segment 0; segment i uses serial + i (mod 2^32) so files never share one. */
  serial: number;
  /** Target segment length in 48 kHz samples (default 480000 = 10 s). */
  segmentSamples?: number;
  /**
   * Pre-skip of the first segment (the encoder lookahead of a transcoded
   * track, 0 for WebRTC passthrough); later segments continue the same
   * encoder state and have none.
   */
  preSkip?: number;
  /** Original input rate recorded in OpusHead (default 48000). */
  inputSampleRate?: number;
  /** First segment index and track position (to continue a track across gate runs). */
  startIndex?: number;
  startSample?: number;
  vendor?: string;
  tags?: Record<string, string>;
  /**
   * Ogg page size limit in 48 kHz samples. Default: the segment length, so
   * pages close only when their 255 lacing values are used up (5.1 s of
   * 20 ms packets). A segment is written and read as one whole buffer, so
   * 1 s pages would buy nothing but 27 bytes of page header per second:
   * that is 0.9% at 24 kbit/s, a third of the docs/architecture.md §7 budget of 3% for
   * Ogg plus encryption (see test/unit/media/ogg.test.ts for the numbers).
   */
  maxPageSamples?: number;
  /** A page store for each segment's closed pages (default: pool blocks in memory). */
  pageStore?: () => PageStore;
}

const NO_SEGMENTS: readonly Segment[] = Object.freeze([]);

export class Segmenter {
  readonly #o: Required<Omit<SegmenterOptions, 'tags' | 'vendor' | 'maxPageSamples' | 'pageStore'>> &
    Pick<SegmenterOptions, 'tags' | 'vendor' | 'maxPageSamples' | 'pageStore'>;
  #index: number;
  #position: number;
  #writer: OggOpusWriter | undefined;
  #segStart = 0;
  #segSamples = 0;
  #segSilence = 0;
  #segPreSkip = 0;
  #gapCarry = 0;
  #closed = false;
  #discarded = false;
  #out: Segment[] = [];
  readonly #silence: Buffer[] = [];

  constructor(options: SegmenterOptions) {
    const segmentSamples = options.segmentSamples ?? 480_000;
    if (!Number.isInteger(segmentSamples) || segmentSamples < OPUS_MIN_FRAME_SAMPLES) {
      throw new OptinError('SEGMENTER_INVALID_OPTIONS', `segmentSamples must be an integer >= 120, got ${segmentSamples}`);
    }
    this.#o = {
      serial: options.serial >>> 0,
      segmentSamples,
      preSkip: options.preSkip ?? 0,
      inputSampleRate: options.inputSampleRate ?? 48_000,
      startIndex: options.startIndex ?? 0,
      startSample: options.startSample ?? 0,
      vendor: options.vendor,
      tags: options.tags,
      maxPageSamples: options.maxPageSamples ?? segmentSamples,
      pageStore: options.pageStore,
    };
    this.#index = this.#o.startIndex;
    this.#position = this.#o.startSample;
  }

  /** Track position after everything pushed so far (48 kHz samples, gaps' sub-2.5 ms carry excluded). */
  get position(): number {
    return this.#position;
  }

  /** Index the next segment will get. */
  get nextIndex(): number {
    return this.#index;
  }

  /**
   * Adds one timeline item; returns the segments it completed (usually
   * none; a long gap can complete several). The returned array is the
   * caller's (or a shared empty one).
   */
  push(item: SegmenterItem): readonly Segment[] {
    if (this.#discarded) return NO_SEGMENTS;
    if (this.#closed) throw new OptinError('SEGMENTER_CLOSED', 'Segmenter.push after close(): create a new Segmenter for a new run');
    if (item.kind === 'packet') {
      if (!(item.samples > 0)) throw new OptinError('SEGMENTER_BAD_ITEM', `timeline packet without a duration (${item.samples}): use opusPacketSamples`);
      this.#add(item.payload, item.samples, false);
    }
    else this.#addGap(item.samples);
    if (this.#out.length === 0) return NO_SEGMENTS;
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /** Finishes the open segment (if it has any audio). Idempotent. */
  close(): Segment | undefined {
    if (this.#closed) return undefined;
    this.#closed = true;
    return this.#finishSegment();
  }

  /**
   * Drops the open segment unwritten (its bytes zeroed and given back now). Later pushes are
   * ignored: a transcoder may still deliver frames of a discarded run.
   */
  discard(): void {
    this.#discarded = true;
    this.#writer?.discard();
    this.#writer = undefined;
  }

  #addGap(samples: number): void {
    if (!(samples > 0)) return;
    let left = samples + this.#gapCarry;
    while (left >= OPUS_MIN_FRAME_SAMPLES) {
      // Fill up to the segment boundary at most, so the cut lands on it.
      const room = this.#o.segmentSamples - this.#segSamples;
      const chunk = Math.min(left, Math.max(room, OPUS_MIN_FRAME_SAMPLES));
      const covered = chunk - (chunk % OPUS_MIN_FRAME_SAMPLES);
      this.#silence.length = 0;
      pushOpusSilence(this.#silence, covered);
      for (const p of this.#silence) this.#add(p, opusPacketSamples(p), true);
      left -= covered;
    }
    this.#gapCarry = left;
  }

  #add(payload: Uint8Array, samples: number, silence: boolean): void {
    if (!this.#writer) {
      this.#segPreSkip = this.#index === this.#o.startIndex ? this.#o.preSkip : 0;
      this.#writer = new OggOpusWriter({
        serial: (this.#o.serial + this.#index) >>> 0,
        preSkip: this.#segPreSkip,
        inputSampleRate: this.#o.inputSampleRate,
        vendor: this.#o.vendor,
        tags: this.#o.tags,
        maxPageSamples: this.#o.maxPageSamples,
        ...(this.#o.pageStore ? { pageStore: this.#o.pageStore() } : {}),
      });
      this.#segStart = this.#position;
      this.#segSamples = 0;
      this.#segSilence = 0;
    }
    this.#writer.addPacket(payload, samples);
    this.#segSamples += samples;
    this.#position += samples;
    if (silence) this.#segSilence += samples;
    if (this.#segSamples >= this.#o.segmentSamples) {
      const seg = this.#finishSegment();
      if (seg) this.#out.push(seg);
    }
  }

  #finishSegment(): Segment | undefined {
    const w = this.#writer;
    if (!w) return undefined;
    this.#writer = undefined;
    const ogg = w.finishFile();
    return {
      index: this.#index++,
      startSample: this.#segStart,
      samples: this.#segSamples,
      preSkip: this.#segPreSkip,
      ogg,
      opusPayloadBytes: w.payloadBytes,
      packets: w.packets,
      silenceSamples: this.#segSilence,
    };
  }
}

