/**
 * When was this audio spoken, on the recorder's clock? Maps one track's RTP timestamps to
 * wall-clock time across the track's whole life (every run, whatever the gate), so the gate can
 * judge a packet by its media time rather than its arrival (R4, issue 19 item 5): at an opening,
 * a packet reordered or delayed past the opening instant still carries audio from before it.
 * Pure: no I/O, no timers.
 *
 * Per source (SSRC), like the jitter buffer's anchor: arrival - timestamp / clock is the sender's
 * timeline start plus the one-way delay, and its minimum over a rolling window is the delay floor
 * (a packet is never early, only late). A packet's media time is that floor plus its timestamp:
 * the earliest it could have arrived, so a delayed packet maps to when it was sent, not to when
 * it came.
 *
 * The sender's timeline can change under one SSRC (timestamps frozen over a hold, a restart, a
 * jump): a packet whose offset lies far from the floor (`lateToleranceMs` behind it or
 * `aheadToleranceMs` ahead) is judged by the old floor (a late packet thus keeps its true, early
 * media time), and only packets that agree on a new floor (within `agreeMs`) for
 * `confirmSpanMs` of arrival time move it. A burst of delayed packets arriving together cannot:
 * it spans no time. The cost: after a timestamp freeze right at an opening, up to the freeze's
 * length (at most `lateToleranceMs`), or `confirmSpanMs` for a longer one, is judged early.
 */
import { Unwrapper } from '../rtp/sequence.ts';

export interface MediaTimeAnchorOptions {
  /** RTP clock rate (48000 Opus, 8000 G.711). */
  clockRate: number;
  /** Rolling window of the delay-floor search (default 20 s; bounds clock-drift error). */
  windowMs?: number;
  /** Delay above the floor still taken as jitter (default 1000 ms). */
  lateToleranceMs?: number;
  /** How far below the floor a packet may lie before it is a timeline change (default 80 ms). */
  aheadToleranceMs?: number;
  /** Packets off the floor must agree with each other within this to form a new one (default 60 ms). */
  agreeMs?: number;
  /** ... for at least this much arrival time (default 200 ms). */
  confirmSpanMs?: number;
}

interface Source {
  ssrc: number;
  ts: Unwrapper;
  floorPrev: number;
  floorCur: number;
  windowStart: number;
  /** Packets off the floor that agree with each other, since the last packet on it. */
  candidate: { first: number; min: number; since: number } | undefined;
}

/** Sources remembered per track (a reconnect or SSRC change brings a new one; stragglers keep theirs). */
const MAX_SOURCES = 4;

export class MediaTimeAnchor {
  readonly #o: Required<MediaTimeAnchorOptions>;
  readonly #perMs: number;
  readonly #sources: Source[] = [];
  /** Timeline changes confirmed (for tests and counters). */
  reanchors = 0;

  constructor(options: MediaTimeAnchorOptions) {
    this.#o = { windowMs: 20_000, lateToleranceMs: 1000, aheadToleranceMs: 80, agreeMs: 60, confirmSpanMs: 200, ...options };
    this.#perMs = options.clockRate / 1000;
  }

  /**
   * Offers one received packet (every packet, whether the gate keeps it or not: the floor must
   * be known before an opening) and returns the wall-clock time of its first sample.
   */
  observe(ssrc: number, timestamp: number, arrivalMs: number): number {
    const s = this.#source(ssrc);
    const media = s.ts.unwrap(timestamp) / this.#perMs;
    const offset = arrivalMs - media;
    if (Number.isNaN(s.windowStart)) {
      // First packet of the source: it fixes the floor (nothing earlier is known).
      s.floorCur = offset;
      s.windowStart = arrivalMs;
      return arrivalMs;
    }
    const floor = Math.min(s.floorPrev, s.floorCur);
    const off = offset - floor;
    if (off > this.#o.lateToleranceMs || off < -this.#o.aheadToleranceMs) {
      const c = s.candidate;
      if (c !== undefined && Math.abs(offset - c.first) <= this.#o.agreeMs) {
        c.min = Math.min(c.min, offset);
        if (arrivalMs - c.since >= this.#o.confirmSpanMs) {
          // The sender's timeline moved: a new floor from the packets that agree on it.
          s.floorPrev = Number.POSITIVE_INFINITY;
          s.floorCur = c.min;
          s.windowStart = arrivalMs;
          s.candidate = undefined;
          this.reanchors++;
          return c.min + media;
        }
      } else {
        s.candidate = { first: offset, min: offset, since: arrivalMs };
      }
      return floor + media;
    }
    s.candidate = undefined;
    if (arrivalMs - s.windowStart >= this.#o.windowMs) {
      // Roll the window so a slow drift between the clocks cannot pin an old minimum forever.
      s.floorPrev = s.floorCur;
      s.floorCur = Number.POSITIVE_INFINITY;
      s.windowStart = arrivalMs;
    }
    if (offset < s.floorCur) s.floorCur = offset;
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
    const s: Source = { ssrc, ts: new Unwrapper(32), floorPrev: Number.POSITIVE_INFINITY, floorCur: Number.POSITIVE_INFINITY, windowStart: Number.NaN, candidate: undefined };
    list.push(s);
    if (list.length > MAX_SOURCES) list.shift();
    return s;
  }
}
