/**
 * Per-track reorder buffer that turns RTP packets into a gap-free media
 * timeline (one instance per participant track; pure: no I/O, no timers,
 * time comes in as arguments).
 *
 * The invariant everything else relies on: the samples of the emitted items
 * (packets plus gaps) add up to the media time that elapsed at the sender
 * between the first and the last emitted packet. A track never shrinks or
 * stretches in time: lost packets, DTX pauses, timestamp jumps and source
 * changes all become `gap` items of the right length, so both sides of a
 * call stay aligned for coaching playback (docs/architecture.md §3).
 *
 * Units: `samples` are in the RTP clock of the payload format, i.e. 48 kHz
 * for Opus (RFC 7587 §4.1: always 48000, whatever the coded bandwidth) and
 * 8 kHz for G.711 (RFC 3551 §4.5.14). A packet's duration comes from the
 * payload (Opus TOC, G.711 byte count), not from timestamp deltas, so the
 * last packet of a stream has a duration too.
 *
 * How gaps get their length: from the RTP timestamps while they are
 * trustworthy (loss: the missing packets' time; DTX / silence suppression:
 * timestamp advanced with no sequence number missing). A marker bit (start
 * of a talkspurt, RFC 3551 §4.1) is passed through on the item but changes
 * nothing, so a lost marker packet cannot break the timeline. When the
 * timestamps are not trustworthy (a backward step with the sequence in
 * order, a forward step above `maxJumpMs` that the arrival clock does not
 * confirm, a new SSRC, a sequence restart) the gap is taken from the
 * arrival clock instead: the track is re-anchored.
 *
 * Bounded memory: at most `maxDepth` packets wait for reordering (a ring of
 * slots), at most `maxHoldMs` each; released items wait in a ready queue
 * that is bounded too (if nobody pulls, the oldest audio is turned into gap
 * time rather than kept). Sequence numbers are handled as in RFC 3550 A.1
 * (extended sequence, MAX_DROPOUT / MAX_MISORDER, probation of new sources).
 */
import { extendSeq, tsDiff } from '../rtp/sequence.ts';
import { OptinError } from '../errors/OptinError.ts';
import { opusPacketSamples } from './opusToc.ts';

/** What the buffer needs from an RTP packet (fields of `RtpPacket` under short names). */
export interface JitterPacket {
  seq: number;
  ts: number;
  ssrc: number;
  marker: boolean;
  payload: Uint8Array;
}

export interface TimelinePacket {
  kind: 'packet';
  /** The RTP payload, unchanged (the reference given to `push`). */
  payload: Uint8Array;
  /** Duration in clock units (48 kHz for Opus, 8 kHz for G.711). */
  samples: number;
  rtpTs: number;
  seq: number;
  ssrc: number;
  /** RTP marker: first packet of a talkspurt after DTX / silence suppression (RFC 3551 §4.1). */
  marker: boolean;
  arrivalMs: number;
}

export interface TimelineGap {
  kind: 'gap';
  /** Missing media time in clock units: loss, DTX, or a re-anchored jump. */
  samples: number;
}

export type TimelineItem = TimelinePacket | TimelineGap;

export type PushResult = 'buffered' | 'duplicate' | 'late' | 'probation' | 'stale-ssrc' | 'invalid';

export type DropReason = 'duplicate' | 'late' | 'probation' | 'stale-ssrc' | 'invalid' | 'overflow';

export interface JitterBufferOptions {
  /** RTP clock rate of the payload format: 48000 for Opus, 8000 for G.711. */
  clockRate: number;
  /** Duration of a payload in clock units; <= 0 marks an unusable payload (dropped as 'invalid'). */
  packetSamples: (payload: Uint8Array) => number;
  /** Packets held for reordering at most (default 50, i.e. 1 s of 20 ms packets). */
  maxDepth?: number;
  /** How long a packet may wait for a missing predecessor before the hole is declared lost (default 100 ms). */
  maxHoldMs?: number;
  /** A forward timestamp step above this is a jump unless the wall clock agrees with it (default 5000 ms). */
  maxJumpMs?: number;
  /** How far a large timestamp step and the arrival clock may disagree for the step to be trusted (default 1000 ms). */
  jumpToleranceMs?: number;
  /**
   * Packets in sequence needed before a new source is accepted (RFC 3550 A.1
   * MIN_SEQUENTIAL): 2 (default) = a second packet within 16 sequence
   * numbers confirms it; 1 = accept any new source at once.
   */
  minSequential?: number;
  /** RFC 3550 A.1 MAX_DROPOUT (default 3000) and MAX_MISORDER (default 100), in packets. */
  maxDropout?: number;
  maxMisorder?: number;
  /** After a source change, packets of the previous SSRC are dropped for this long (default 2000 ms). */
  ssrcRetireMs?: number;
  /** Window of the least-delay search behind `wallClockAt` (default 20000 ms; bounds clock-drift error). */
  anchorWindowMs?: number;
}

/** Clock rate and duration function for the codecs optin records. */
export function codecTiming(codec: 'opus' | 'pcmu' | 'pcma'): Pick<JitterBufferOptions, 'clockRate' | 'packetSamples'> {
  if (codec === 'opus') return { clockRate: 48_000, packetSamples: opusPacketSamples };
  // G.711: one byte per sample at 8 kHz.
  return { clockRate: 8_000, packetSamples: (p) => (p.length > 0 ? p.length : -1) };
}

export interface JitterStats {
  /** Packets offered to `push`. */
  received: number;
  /** Sequence positions the timeline moved past: emitted + lost. */
  expected: number;
  emitted: number;
  /** Sequence positions released without a packet (a later arrival does not undo it: it counts as late). */
  lost: number;
  /** Packets that arrived after a higher sequence number but in time to be put back in order. */
  reordered: number;
  duplicated: number;
  late: number;
  /** Drops by reason (duplicate and late included). */
  dropped: Record<DropReason, number>;
  /** Gap samples emitted (loss + DTX + re-anchoring), clock units. */
  concealedSamples: number;
  /** Of which: timestamp advanced with no sequence number missing (DTX / silence suppression). */
  dtxSamples: number;
  /** Timeline re-anchored on the arrival clock (timestamp jump, source change, sequence restart). */
  reanchors: number;
  ssrcChanges: number;
  /** RFC 3550 A.8 interarrival jitter, clock units (current estimate, not reset per segment). */
  jitter: number;
  /** Same, in milliseconds. */
  jitterMs: number;
}

type Counters = Omit<JitterStats, 'jitter' | 'jitterMs' | 'dropped'> & { dropped: Record<DropReason, number> };

function zeroCounters(): Counters {
  return {
    received: 0, expected: 0, emitted: 0, lost: 0, reordered: 0, duplicated: 0, late: 0,
    dropped: { duplicate: 0, late: 0, probation: 0, 'stale-ssrc': 0, invalid: 0, overflow: 0 },
    concealedSamples: 0, dtxSamples: 0, reanchors: 0, ssrcChanges: 0,
  };
}

const NO_ITEMS: readonly TimelineItem[] = Object.freeze([]);
/** How close (in sequence numbers) a second packet must be to confirm a probationary source. */
const PROBATION_SPAN = 16;

interface Candidate {
  pkt: JitterPacket;
  arrivalMs: number;
  samples: number;
}

export class JitterBuffer {
  readonly clockRate: number;
  readonly maxDepth: number;
  readonly #o: Required<Omit<JitterBufferOptions, 'clockRate' | 'packetSamples' | 'maxDepth'>>;
  readonly #packetSamples: (payload: Uint8Array) => number;
  readonly #msToSamples: number;

  // --- reorder ring, indexed by extended seq & mask (parallel arrays: no per-packet slot objects)
  readonly #mask: number;
  readonly #slotExt: Float64Array;
  readonly #slotTs: Float64Array;
  readonly #slotArrival: Float64Array;
  readonly #slotSamples: Int32Array;
  readonly #slotMarker: Uint8Array;
  readonly #slotPayload: (Uint8Array | undefined)[];
  #buffered = 0;
  /** Extended seqs recently emitted, to tell duplicates from late packets. */
  readonly #history: Float64Array;
  readonly #historyMask: number;

  // --- current source
  #ssrc: number | undefined;
  #nextSeq = 0;
  #highestSeq = 0;
  #candidate: Candidate | undefined;
  readonly #retired: { ssrc: number; untilMs: number }[] = [];
  #jitterPrevArrival = Number.NaN;
  #jitterPrevTs = 0;
  #jitter = 0;

  // --- timeline
  #started = false;
  /** Next emission must be placed by the arrival clock (new source or restart). */
  #reanchor = false;
  /** The sender's media resumed at this arrival time after a pause signalled out of band (`resumedAt`). */
  #resumeMark = Number.NEGATIVE_INFINITY;
  #expectedTs = 0;
  #prevTs = 0;
  #prevArrival = 0;
  #prevSamples = 0;
  #prevEmittedSeq = 0;
  #position = 0;
  #ready: TimelineItem[] = [];
  #readyPackets = 0;
  readonly #readyLimit: number;

  // --- wall-clock anchor: min(arrival - position/clock) over two rolling windows
  #anchorPrev = Number.POSITIVE_INFINITY;
  #anchorCur = Number.POSITIVE_INFINITY;
  #anchorWindowStart = Number.NaN;

  #counters: Counters = zeroCounters();
  #segmentBase: Counters = zeroCounters();

  constructor(options: JitterBufferOptions) {
    const maxDepth = options.maxDepth ?? 50;
    if (!Number.isInteger(maxDepth) || maxDepth < 1 || maxDepth > 1024) {
      throw new OptinError('JITTER_INVALID_OPTIONS', `jitter buffer maxDepth must be 1..1024 packets, got ${maxDepth}`);
    }
    if (!(options.clockRate > 0)) throw new OptinError('JITTER_INVALID_OPTIONS', 'jitter buffer clockRate must be positive');
    this.clockRate = options.clockRate;
    this.maxDepth = maxDepth;
    this.#packetSamples = options.packetSamples;
    this.#msToSamples = options.clockRate / 1000;
    this.#o = {
      maxHoldMs: options.maxHoldMs ?? 100,
      maxJumpMs: options.maxJumpMs ?? 5000,
      jumpToleranceMs: options.jumpToleranceMs ?? 1000,
      minSequential: options.minSequential ?? 2,
      maxDropout: options.maxDropout ?? 3000,
      maxMisorder: options.maxMisorder ?? 100,
      ssrcRetireMs: options.ssrcRetireMs ?? 2000,
      anchorWindowMs: options.anchorWindowMs ?? 20_000,
    };
    let capacity = 1;
    while (capacity < maxDepth) capacity <<= 1;
    this.#mask = capacity - 1;
    this.#slotExt = new Float64Array(capacity).fill(Number.NaN);
    this.#slotTs = new Float64Array(capacity);
    this.#slotArrival = new Float64Array(capacity);
    this.#slotSamples = new Int32Array(capacity);
    this.#slotMarker = new Uint8Array(capacity);
    this.#slotPayload = new Array<Uint8Array | undefined>(capacity).fill(undefined);
    this.#history = new Float64Array(capacity * 2).fill(Number.NaN);
    this.#historyMask = capacity * 2 - 1;
    this.#readyLimit = capacity * 2;
  }

  /** Packets currently waiting in the reorder ring (never more than `maxDepth`). */
  get depth(): number {
    return this.#buffered;
  }

  /** Packets released but not yet pulled (bounded: see class comment). */
  get readyPackets(): number {
    return this.#readyPackets;
  }

  /** Samples emitted so far on the timeline (clock units). */
  get position(): number {
    return this.#position;
  }

  /**
   * Offers one received packet. `arrivalMs` is the local receive time (any
   * monotonic millisecond clock, the same one `pull` gets). Never throws on
   * packet contents; the result says what happened, for tests and counters.
   */
  push(pkt: JitterPacket, arrivalMs: number): PushResult {
    this.#counters.received++;
    const samples = this.#packetSamples(pkt.payload);
    if (!(samples > 0)) return this.#drop('invalid');

    if (pkt.ssrc === this.#ssrc) {
      const ext = extendSeq(pkt.seq, this.#highestSeq);
      const ahead = ext - this.#highestSeq;
      const behind = this.#nextSeq - ext;
      if (ahead < this.#o.maxDropout && (behind <= 0 || this.#highestSeq - ext <= this.#o.maxMisorder)) {
        return this.#accept(pkt, ext, arrivalMs, samples);
      }
      // A jump beyond MAX_DROPOUT or far behind: maybe the sender restarted
      // its sequence; it must prove it with a second packet (RFC 3550 A.1 bad_seq).
    } else if (this.#isRetired(pkt.ssrc, arrivalMs)) {
      return this.#drop('stale-ssrc');
    }
    return this.#probation(pkt, arrivalMs, samples);
  }

  /**
   * The sender paused and resumes, as signalling says (a SIP hold: RFC 3264 §8.4 `inactive`, then
   * `sendonly` again): the first packet that arrives at or after `atMs`, following one that arrived
   * before it, is placed by the arrival clock. Many senders resume with the sequence number and
   * RTP timestamp right after the last packet before the hold, as if no time had passed; trusted,
   * those timestamps would compress the hold out of the track.
   */
  resumedAt(atMs: number): void {
    this.#resumeMark = atMs;
  }

  /**
   * Releases the timeline items that are ready at `nowMs`: packets in
   * sequence, and holes whose successors have waited `maxHoldMs`. With
   * `flush`, everything buffered is released (end of stream or of a run).
   * The returned array belongs to the caller (or is a shared empty array).
   */
  pull(nowMs: number, options: { flush?: boolean } = {}): readonly TimelineItem[] {
    const flush = options.flush === true;
    if (flush && this.#candidate) {
      // A lone new source at the very end: better one real packet than none
      // if there is no current source; otherwise it was a stray packet.
      if (this.#ssrc === undefined || this.#o.minSequential <= 1) this.#promoteCandidate(undefined);
      else {
        this.#candidate = undefined;
        this.#dropCount('probation');
      }
    }
    this.#release(nowMs, flush);
    if (this.#ready.length === 0) return NO_ITEMS;
    const out = this.#ready;
    this.#ready = [];
    this.#readyPackets = 0;
    return out;
  }

  /**
   * Wall-clock time (same clock as `arrivalMs`) of a timeline sample
   * position, from the least-delayed packet seen in the last one or two
   * anchor windows: arrival - position / clock is the sender's timeline
   * start plus the one-way delay, and its minimum is the delay floor. Both
   * tracks of a call anchored this way line up within a few ms. NaN before
   * the first packet.
   */
  wallClockAt(timelineSample: number): number {
    const anchor = Math.min(this.#anchorPrev, this.#anchorCur);
    if (anchor === Number.POSITIVE_INFINITY) return Number.NaN;
    return anchor + timelineSample / this.#msToSamples;
  }

  /** Cumulative statistics. */
  get stats(): JitterStats {
    return this.#withJitter(this.#counters);
  }

  toJSON(): JitterStats {
    return this.stats;
  }

  /** Statistics since the previous call (for one segment), then starts a new period. */
  takeSegmentStats(): JitterStats {
    const c = this.#counters;
    const b = this.#segmentBase;
    const delta = zeroCounters();
    for (const k of Object.keys(delta) as (keyof Counters)[]) {
      if (k === 'dropped') continue;
      delta[k] = c[k] - b[k];
    }
    for (const r of Object.keys(delta.dropped) as DropReason[]) delta.dropped[r] = c.dropped[r] - b.dropped[r];
    this.#segmentBase = { ...c, dropped: { ...c.dropped } };
    return this.#withJitter(delta);
  }

  #withJitter(c: Counters): JitterStats {
    return {
      ...c,
      dropped: { ...c.dropped },
      jitter: this.#jitter,
      jitterMs: this.#jitter / this.#msToSamples,
    };
  }

  #drop(reason: Exclude<DropReason, 'overflow'>): PushResult {
    this.#dropCount(reason);
    return reason;
  }

  #dropCount(reason: DropReason): void {
    this.#counters.dropped[reason]++;
    if (reason === 'duplicate') this.#counters.duplicated++;
    else if (reason === 'late') this.#counters.late++;
  }

  #isRetired(ssrc: number, nowMs: number): boolean {
    for (let i = this.#retired.length - 1; i >= 0; i--) {
      const r = this.#retired[i]!;
      if (r.untilMs <= nowMs) this.#retired.splice(i, 1);
      else if (r.ssrc === ssrc) return true;
    }
    return false;
  }

  /** RFC 3550 A.1 probation: a new source (or a restarted sequence) needs `minSequential` packets in a row. */
  #probation(pkt: JitterPacket, arrivalMs: number, samples: number): PushResult {
    const cand = this.#candidate;
    if (this.#o.minSequential <= 1) {
      this.#candidate = { pkt, arrivalMs, samples };
      return this.#promoteCandidate(undefined);
    }
    if (cand && cand.pkt.ssrc === pkt.ssrc) {
      const d = extendSeq(pkt.seq, cand.pkt.seq) - cand.pkt.seq;
      if (d !== 0 && Math.abs(d) <= PROBATION_SPAN) return this.#promoteCandidate({ pkt, arrivalMs, samples });
    }
    if (cand) this.#dropCount('probation');
    this.#candidate = { pkt, arrivalMs, samples };
    return 'probation';
  }

  /**
   * Starts a new source from the candidate (plus its confirming packet):
   * flushes the old one first. Returns what became of the confirming packet.
   */
  #promoteCandidate(confirm: Candidate | undefined): PushResult {
    const cand = this.#candidate!;
    this.#candidate = undefined;
    if (this.#ssrc !== undefined) {
      // The old source is over: release all it has, then retire its SSRC so
      // its stragglers cannot flip the track back.
      this.#release(Number.POSITIVE_INFINITY, true);
      if (cand.pkt.ssrc !== this.#ssrc) {
        this.#retired.push({ ssrc: this.#ssrc, untilMs: cand.arrivalMs + this.#o.ssrcRetireMs });
        if (this.#retired.length > 4) this.#retired.shift();
        this.#counters.ssrcChanges++;
      }
      this.#reanchor = true;
    }
    this.#ssrc = cand.pkt.ssrc;
    const base = cand.pkt.seq & 0xffff;
    const extConfirm = confirm ? extendSeq(confirm.pkt.seq, base) : base;
    // Accepted in arrival order below, so a confirming packet with a lower
    // sequence number counts as reordered, as it would have without probation.
    this.#nextSeq = Math.min(base, extConfirm);
    this.#highestSeq = base;
    this.#jitterPrevArrival = Number.NaN;
    this.#history.fill(Number.NaN);
    if (!confirm) return this.#accept(cand.pkt, base, cand.arrivalMs, cand.samples);
    // Lower sequence number first, so a small ring cannot push it out before it is stored.
    if (extConfirm < base) {
      const r = this.#accept(confirm.pkt, extConfirm, confirm.arrivalMs, confirm.samples);
      this.#accept(cand.pkt, base, cand.arrivalMs, cand.samples);
      return r;
    }
    this.#accept(cand.pkt, base, cand.arrivalMs, cand.samples);
    return this.#accept(confirm.pkt, extConfirm, confirm.arrivalMs, confirm.samples);
  }

  /** Stores an in-window packet of the current source, or classifies it as duplicate / late. */
  #accept(pkt: JitterPacket, ext: number, arrivalMs: number, samples: number): PushResult {
    if (ext < this.#nextSeq) {
      // Its position is already released: emitted before (duplicate) or given up as lost (late).
      return this.#drop(this.#history[ext & this.#historyMask] === ext ? 'duplicate' : 'late');
    }
    const idx = ext & this.#mask;
    if (this.#slotExt[idx] === ext && this.#slotPayload[idx] !== undefined) return this.#drop('duplicate');

    if (ext < this.#highestSeq) this.#counters.reordered++;
    else this.#highestSeq = ext;
    this.#updateJitter(pkt.ts, arrivalMs);

    // Keep the ring bounded: a packet beyond the window pushes the oldest
    // positions out (emitting what is there, declaring the holes lost).
    if (ext - this.#nextSeq >= this.maxDepth) this.#slide(ext - this.maxDepth + 1);

    this.#slotExt[idx] = ext;
    this.#slotTs[idx] = pkt.ts >>> 0;
    this.#slotArrival[idx] = arrivalMs;
    this.#slotSamples[idx] = samples;
    this.#slotMarker[idx] = pkt.marker ? 1 : 0;
    this.#slotPayload[idx] = pkt.payload;
    this.#buffered++;
    return 'buffered';
  }

  /** RFC 3550 A.8: J += (|D| - J) / 16 with D the change in transit time, in clock units. */
  #updateJitter(ts: number, arrivalMs: number): void {
    if (!Number.isNaN(this.#jitterPrevArrival)) {
      const d = (arrivalMs - this.#jitterPrevArrival) * this.#msToSamples - tsDiff(ts >>> 0, this.#jitterPrevTs);
      // A timestamp jump is not jitter: skip the sample rather than poison the estimate.
      if (Math.abs(d) < this.#o.maxJumpMs * this.#msToSamples) this.#jitter += (Math.abs(d) - this.#jitter) / 16;
    }
    this.#jitterPrevArrival = arrivalMs;
    this.#jitterPrevTs = ts >>> 0;
  }

  /** Advances the release point to `target`, emitting buffered packets and counting holes as lost. */
  #slide(target: number): void {
    while (this.#nextSeq < target) {
      if (this.#buffered === 0) {
        this.#loseUpTo(target);
        return;
      }
      const idx = this.#nextSeq & this.#mask;
      if (this.#slotExt[idx] === this.#nextSeq && this.#slotPayload[idx] !== undefined) this.#emit(idx);
      else this.#loseUpTo(this.#nextSeq + 1);
    }
  }

  #loseUpTo(ext: number): void {
    const n = ext - this.#nextSeq;
    this.#counters.lost += n;
    this.#counters.expected += n;
    this.#nextSeq = ext;
  }

  #release(nowMs: number, flush: boolean): void {
    while (this.#buffered > 0) {
      const idx = this.#nextSeq & this.#mask;
      if (this.#slotExt[idx] === this.#nextSeq && this.#slotPayload[idx] !== undefined) {
        this.#emit(idx);
        continue;
      }
      // A hole. Find the next buffered packet and the longest-waiting one.
      let next = -1;
      let oldest = Number.POSITIVE_INFINITY;
      for (let e = this.#nextSeq + 1; e < this.#nextSeq + this.maxDepth; e++) {
        const i = e & this.#mask;
        if (this.#slotExt[i] === e && this.#slotPayload[i] !== undefined) {
          if (next < 0) next = e;
          if (this.#slotArrival[i]! < oldest) oldest = this.#slotArrival[i]!;
        }
      }
      if (next < 0) {
        // Cannot happen while #buffered > 0; repair the count rather than spin.
        this.#buffered = 0;
        return;
      }
      if (!flush && oldest + this.#o.maxHoldMs > nowMs) return;
      this.#loseUpTo(next);
    }
  }

  /** Emits the packet in slot `idx` (which holds #nextSeq) onto the timeline, preceded by any gap. */
  #emit(idx: number): void {
    const ts = this.#slotTs[idx]!;
    const arrival = this.#slotArrival[idx]!;
    const samples = this.#slotSamples[idx]!;
    const seqExt = this.#nextSeq;

    if (this.#started) {
      let gap = 0;
      if (this.#reanchor || (this.#prevArrival < this.#resumeMark && arrival >= this.#resumeMark)) {
        gap = this.#wallGap(arrival);
        this.#counters.reanchors++;
      } else {
        const delta = tsDiff(ts, this.#expectedTs);
        if (delta > 0 && (delta <= this.#o.maxJumpMs * this.#msToSamples || this.#wallAgrees(ts, arrival))) {
          gap = delta;
          // No sequence number skipped but time advanced: DTX / silence suppression.
          if (seqExt === this.#prevEmittedSeq + 1) this.#counters.dtxSamples += delta;
        } else if (delta !== 0) {
          // Backward step with the sequence in order, or a forward jump the
          // arrival clock does not confirm: the sender's timestamps are not
          // usable across this point, so the arrival clock places the packet.
          gap = this.#wallGap(arrival);
          this.#counters.reanchors++;
        }
      }
      if (gap > 0) this.#pushGap(gap);
    }
    this.#started = true;
    this.#reanchor = false;

    const item: TimelinePacket = {
      kind: 'packet',
      payload: this.#slotPayload[idx]!,
      samples,
      rtpTs: ts,
      seq: seqExt & 0xffff,
      ssrc: this.#ssrc!,
      marker: this.#slotMarker[idx] === 1,
      arrivalMs: arrival,
    };
    this.#updateAnchor(arrival);
    this.#ready.push(item);
    this.#readyPackets++;
    if (this.#readyPackets > this.#readyLimit) this.#shedOldest();

    this.#position += samples;
    this.#expectedTs = (ts + samples) >>> 0;
    this.#prevTs = ts;
    this.#prevArrival = arrival;
    this.#prevSamples = samples;
    this.#prevEmittedSeq = seqExt;
    this.#history[seqExt & this.#historyMask] = seqExt;

    this.#slotPayload[idx] = undefined;
    this.#slotExt[idx] = Number.NaN;
    this.#buffered--;
    this.#nextSeq = seqExt + 1;
    this.#counters.emitted++;
    this.#counters.expected++;
  }

  /** Does the arrival clock confirm a large forward timestamp step (a long silence, not a jump)? */
  #wallAgrees(ts: number, arrival: number): boolean {
    const tsStepMs = tsDiff(ts, this.#prevTs) / this.#msToSamples;
    return Math.abs(tsStepMs - (arrival - this.#prevArrival)) <= this.#o.jumpToleranceMs;
  }

  /** Media time between the end of the previous packet and this one, by the arrival clock. */
  #wallGap(arrival: number): number {
    return Math.max(0, Math.round((arrival - this.#prevArrival) * this.#msToSamples) - this.#prevSamples);
  }

  #pushGap(samples: number): void {
    this.#counters.concealedSamples += samples;
    this.#position += samples;
    const last = this.#ready[this.#ready.length - 1];
    if (last?.kind === 'gap') last.samples += samples;
    else this.#ready.push({ kind: 'gap', samples });
  }

  /** Nobody is pulling: turn the oldest released packet into gap time (keeps time, frees the payload). */
  #shedOldest(): void {
    const i = this.#ready.findIndex((it) => it.kind === 'packet');
    if (i < 0) return;
    const samples = this.#ready[i]!.samples;
    const prev = i > 0 ? this.#ready[i - 1] : undefined;
    const next = this.#ready[i + 1];
    if (prev?.kind === 'gap') {
      prev.samples += samples;
      if (next?.kind === 'gap') {
        prev.samples += next.samples;
        this.#ready.splice(i, 2);
      } else this.#ready.splice(i, 1);
    } else if (next?.kind === 'gap') {
      next.samples += samples;
      this.#ready.splice(i, 1);
    } else this.#ready[i] = { kind: 'gap', samples };
    this.#readyPackets--;
    this.#counters.concealedSamples += samples;
    this.#dropCount('overflow');
  }

  #updateAnchor(arrival: number): void {
    const offset = arrival - this.#position / this.#msToSamples;
    if (Number.isNaN(this.#anchorWindowStart)) this.#anchorWindowStart = arrival;
    else if (arrival - this.#anchorWindowStart >= this.#o.anchorWindowMs) {
      // Roll the window so a slow drift between the sender's and our clock
      // cannot pin the anchor to an old minimum forever.
      this.#anchorPrev = this.#anchorCur;
      this.#anchorCur = Number.POSITIVE_INFINITY;
      this.#anchorWindowStart = arrival;
    }
    if (offset < this.#anchorCur) this.#anchorCur = offset;
  }
}
