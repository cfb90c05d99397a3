/**
 * When was the audio of a late packet spoken, on the recorder's clock? The gate judges a packet
 * that arrives after a later packet of its own source (reordered or delayed past it) by its
 * media time rather than its arrival (R4, issue 19 item 5): at an opening, such a packet can
 * arrive after the opening instant and still carry audio from before it. One per track, fed with
 * every packet whatever the gate says (the clock must be known at an opening). Pure: no I/O.
 *
 * Per source (SSRC), like the jitter buffer's anchor: arrival - timestamp / clock is the sender's
 * timeline start plus the one-way delay, and its minimum (the delay floor) over a short rolling
 * window of `windowMs` to 2 × `windowMs` is what the least delayed packets of the last moments
 * show. A late packet's media time is that floor plus its timestamp: when it would have arrived
 * as the timeliest of its neighbours did.
 *
 * Packets in order are not judged here (their arrival is their time: the receive-time fence of
 * issue 17 covers the queue between the SFU worker and Node). That keeps the rule safe for
 * senders whose timestamps do not follow the wall clock (bursts, a paced sender that drifts, a
 * timestamp jump): only a packet that arrives after a later one of its source, which such a
 * sender's in-order stream never produces, is mapped through the timestamps. The short window
 * bounds how long an old floor can outlive a timeline change (at most 2 × `windowMs`).
 */
import { Unwrapper, extendSeq } from '../rtp/sequence.ts';

export interface MediaTimeAnchorOptions {
  /** RTP clock rate (48000 Opus, 8000 G.711). */
  clockRate: number;
  /** Rolling window of the delay-floor search (default 1000 ms). */
  windowMs?: number;
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
  readonly #perMs: number;
  readonly #sources: Source[] = [];

  constructor(options: MediaTimeAnchorOptions) {
    this.#windowMs = options.windowMs ?? 1000;
    this.#perMs = options.clockRate / 1000;
  }

  /**
   * Offers one received packet (every packet, kept or not). Returns the wall-clock time of its
   * first sample if it is late (a later packet of its source arrived before it), else NaN: a
   * packet in order is judged by its arrival.
   */
  lateMediaTime(ssrc: number, seq: number, timestamp: number, arrivalMs: number): number {
    const s = this.#source(ssrc);
    const media = s.ts.unwrap(timestamp) / this.#perMs;
    const offset = arrivalMs - media;
    if (Number.isNaN(s.windowStart) || arrivalMs - s.windowStart >= this.#windowMs) {
      s.floorPrev = s.floorCur;
      s.floorCur = Number.POSITIVE_INFINITY;
      s.windowStart = arrivalMs;
    }
    if (offset < s.floorCur) s.floorCur = offset;
    if (Number.isNaN(s.highestSeq)) {
      s.highestSeq = seq & 0xffff;
      return Number.NaN;
    }
    const ext = extendSeq(seq, s.highestSeq);
    const behind = s.highestSeq - ext;
    if (behind <= 0 || behind > MAX_MISORDER) {
      s.highestSeq = ext; // in order (or a restarted sequence, which starts a new count)
      return Number.NaN;
    }
    return Math.min(s.floorPrev, s.floorCur) + media;
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
