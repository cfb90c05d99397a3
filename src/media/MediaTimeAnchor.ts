/**
 * When was the audio of a packet spoken, on the recorder's clock? The gate judges a packet by
 * that media time rather than by when the recorder read it (R4, issue 19 item 5): at an opening, a
 * packet can be read after the opening instant and still carry audio from before it. Two ways:
 *
 * - it arrived behind a later packet of its own source (reordered, or delayed past it);
 * - it arrived in order, but the reader was held up (a media thread's or the main loop's stall,
 *   CPU taken by another process): packets queued in the socket meanwhile are read together, each
 *   stamped with the read, later than it came. On a loaded host that was up to ~100 ms
 *   (`MediaThreadPool.worstLoopStallMs` in the e2e runs), enough to keep audio from before consent.
 *
 * One per track, fed with every packet whatever the gate says (the clock must be known at an
 * opening). Pure: no I/O.
 *
 * Per source (SSRC), like the jitter buffer's anchor: arrival - timestamp / clock is the sender's
 * timeline start plus the one-way delay (and the reader's delay), and its minimum (the delay floor)
 * over a short rolling window of `windowMs` to 2 × `windowMs` is what the least delayed packets of
 * the last moments show. A packet's media time is that floor plus its timestamp: when it would have
 * arrived as the timeliest of its neighbours did. It is never later than the packet's arrival (the
 * floor includes the packet itself).
 *
 * A packet in order is moved back by at most `readDelayBoundMs` (default 500 ms): the longest a
 * read can plausibly have waited. That bounds what a sender whose timestamps do not follow the
 * wall clock (bursts, a slow clock, a timestamp jump back, a hold with frozen timestamps) can cost:
 * its packets look older than they are, so within that bound after an opening some of them are
 * dropped, never kept early (fail closed). A packet that arrived behind a later one of its source
 * has no bound: a reordered packet can be any age. The short window bounds how long an old floor
 * can outlive a timeline change (at most 2 × `windowMs`).
 */
import { Unwrapper, extendSeq } from '../rtp/sequence.ts';

export interface MediaTimeAnchorOptions {
  /** RTP clock rate (48000 Opus, 8000 G.711). */
  clockRate: number;
  /** Rolling window of the delay-floor search (default 1000 ms). */
  windowMs?: number;
  /** How far back a packet in order can be judged from its arrival (default 500 ms). */
  readDelayBoundMs?: number;
}

interface Source {
  ssrc: number;
  ts: Unwrapper;
  /** Highest extended sequence number seen (RFC 3550 A.1). */
  highestSeq: number;
  floorPrev: number;
  floorCur: number;
  windowStart: number;
}

/** Sources remembered per track (a reconnect or SSRC change brings a new one; stragglers keep theirs). */
const MAX_SOURCES = 4;
/** RFC 3550 A.1 MAX_MISORDER: further behind is a restarted sequence, not a late packet. */
const MAX_MISORDER = 100;

export class MediaTimeAnchor {
  readonly #windowMs: number;
  readonly #readDelayBoundMs: number;
  readonly #perMs: number;
  readonly #sources: Source[] = [];

  constructor(options: MediaTimeAnchorOptions) {
    this.#windowMs = options.windowMs ?? 1000;
    this.#readDelayBoundMs = options.readDelayBoundMs ?? 500;
    this.#perMs = options.clockRate / 1000;
  }

  /**
   * Offers one received packet (every packet, kept or not) and returns the wall-clock time of its
   * first sample: the delay floor plus its timestamp, never later than `arrivalMs`, and for a
   * packet in order never earlier than `arrivalMs - readDelayBoundMs`.
   */
  mediaTime(ssrc: number, seq: number, timestamp: number, arrivalMs: number): number {
    const s = this.#source(ssrc);
    const media = s.ts.unwrap(timestamp) / this.#perMs;
    const offset = arrivalMs - media;
    if (Number.isNaN(s.windowStart) || arrivalMs - s.windowStart >= this.#windowMs) {
      s.floorPrev = s.floorCur;
      s.floorCur = Number.POSITIVE_INFINITY;
      s.windowStart = arrivalMs;
    }
    if (offset < s.floorCur) s.floorCur = offset;
    // Equal to the arrival when this packet is the floor; min() keeps it so through the rounding.
    const spoken = Math.min(Math.min(s.floorPrev, s.floorCur) + media, arrivalMs);
    if (Number.isNaN(s.highestSeq)) {
      s.highestSeq = seq & 0xffff;
      return arrivalMs; // the first packet of a source is its own floor
    }
    const ext = extendSeq(seq, s.highestSeq);
    const behind = s.highestSeq - ext;
    if (behind > 0 && behind <= MAX_MISORDER) return spoken; // late: behind a later packet of its source
    s.highestSeq = ext; // in order (or a restarted sequence, which starts a new count)
    return Math.max(spoken, arrivalMs - this.#readDelayBoundMs);
  }

  #source(ssrc: number): Source {
    const list = this.#sources;
    const last = list[list.length - 1];
    if (last?.ssrc === ssrc) return last;
    const i = list.findIndex((x) => x.ssrc === ssrc);
    if (i >= 0) {
      const found = list[i]!;
      list.splice(i, 1);
      list.push(found);
      return found;
    }
    const s: Source = { ssrc, ts: new Unwrapper(32), highestSeq: Number.NaN, floorPrev: Number.POSITIVE_INFINITY, floorCur: Number.POSITIVE_INFINITY, windowStart: Number.NaN };
    list.push(s);
    if (list.length > MAX_SOURCES) list.shift();
    return s;
  }
}
