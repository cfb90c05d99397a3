/**
 * Turns what a SIP/PSTN gateway sends on one plain leg into the one RTP stream the SFU's producer
 * was created for: one SSRC, one payload type, sequence numbers and timestamps without a break
 * (issue 19 item 1). Pure: no I/O, no timers; time comes in as arguments.
 *
 * Gateways change SSRC on a re-INVITE, a transfer or a media-server switch (RFC 3550 §8.2 lets a
 * source pick a new SSRC at any time), and the new source starts at random sequence numbers and
 * timestamps (§5.1). mediasoup looks producers up by SSRC (no payload-type fallback for plain
 * RTP) and would drop every packet of the new source. Here each source is mapped onto the
 * producer's SSRC with its own offsets, chosen at the change so that the output continues:
 *
 * - sequence: the new source's first packet follows the last one forwarded (+1), so the jitter
 *   buffer sees no loss and no restart;
 * - timestamp: the new source's first packet lies after the last one by the arrival-clock gap,
 *   rounded to whole packet durations (at least one): a switch without a pause stays seamless,
 *   and a source that was silent for 3 s before the switch leaves 3 s of silence on the track
 *   (time is never compressed).
 *
 * Packets of the source before the current one that arrive shortly after the switch, behind the
 * output, keep their own offsets (stragglers reordered across it land where they belong); any
 * other SSRC, and the previous one coming back later, is a new change.
 *
 * Payload types: the leg's declared type is the producer's. A renumbering of the same codec (a
 * re-INVITE answered with Opus on 111 instead of 100) is accepted when `sameCodec` says the type
 * can carry the leg's codec and `confirmPackets` such packets arrived in a row: they are held
 * until then (a stray packet of another type, RFC 4733 telephone-events, comfort noise, is
 * dropped, never fed to the decoder) and then forwarded under the producer's type.
 */
import { parseRtp } from './RtpPacket.ts';
import { seqAdd, seqDiff, tsAdd, tsDiff } from './sequence.ts';

export interface RtpLegRewriterOptions {
  /** The producer's SSRC (what every forwarded packet carries). */
  ssrc: number;
  /** The producer's payload type. */
  payloadType: number;
  /** RTP clock rate of the leg's codec (48000 Opus, 8000 G.711). */
  clockRate: number;
  /** Could a packet of this type be the leg's codec under another number? (payload: the RTP payload) */
  sameCodec: (payloadType: number, payload: Uint8Array) => boolean;
  /** Packets of a new payload type in a row before it is taken as a renumbering (default 3). */
  confirmPackets?: number;
  /** Held packets of an unconfirmed type older than this are dropped (default 200 ms). */
  holdMs?: number;
}

export type RewriteDropReason = 'malformed' | 'payload-type';

/** Told as it happens (the leg's metrics), so nobody has to compare counters per packet. */
export interface RtpLegRewriterObserver {
  onDrop?: (reason: RewriteDropReason, count: number) => void;
  onSsrcChange?: () => void;
}

export interface RtpLegRewriterCounters {
  forwarded: number;
  /** SSRC changes after the first packet (the first source is not a change). */
  ssrcChanges: number;
  /** Renumberings of the payload type accepted. */
  payloadTypeChanges: number;
  dropped: Record<RewriteDropReason, number>;
}

/** One source's mapping onto the output stream. */
interface SourceMap {
  ssrc: number;
  seqOffset: number;
  tsOffset: number;
}

interface Held {
  buf: Buffer;
  arrivalMs: number;
}

const RTP_HEADER = 12;
/** Media payload types accepted at most at once (the declared one and renumberings). */
const MAX_MEDIA_TYPES = 4;
/** How long after a switch a packet of the previous source counts as reordered across it. */
const STRAGGLER_MS = 500;

export class RtpLegRewriter {
  readonly counters: RtpLegRewriterCounters = { forwarded: 0, ssrcChanges: 0, payloadTypeChanges: 0, dropped: { malformed: 0, 'payload-type': 0 } };
  readonly #o: Required<RtpLegRewriterOptions>;
  /** Payload types forwarded as the producer's, most recent last. */
  readonly #mediaTypes: number[];
  #current: SourceMap | undefined;
  #previous: SourceMap | undefined;
  /** The newest packet forwarded (output numbering) and when it arrived. */
  #lastSeq = 0;
  #lastTs = 0;
  #lastArrivalMs = 0;
  /** Timestamp step of one packet on the current source (learnt; 20 ms until known). */
  #step: number;
  #switchedAtMs = 0;
  #candidate: { payloadType: number; held: Held[] } | undefined;
  #observer: RtpLegRewriterObserver = {};

  constructor(options: RtpLegRewriterOptions) {
    this.#o = { confirmPackets: 3, holdMs: 200, ...options };
    this.#mediaTypes = [options.payloadType];
    this.#step = Math.round(options.clockRate / 50);
  }

  /** Where drops and SSRC changes are told (one observer; a later call replaces it). */
  observe(observer: RtpLegRewriterObserver): void {
    this.#observer = observer;
  }

  /**
   * One datagram received on the leg: `send` gets the packets to forward now, rewritten in place
   * (usually the packet itself; none while it is held or dropped; several when a held
   * renumbering is confirmed). The buffers are the caller's own, modified.
   */
  forward(buf: Buffer, arrivalMs: number, send: (packet: Buffer) => void): void {
    // RFC 3550 §5.1: version 2, and at least the fixed header.
    if (buf.length < RTP_HEADER || buf[0]! >> 6 !== 2) return this.#drop('malformed');
    const pt = buf[1]! & 0x7f;
    if (this.#mediaTypes.includes(pt)) return send(this.#rewrite(buf, arrivalMs));
    const parsed = parseRtp(buf);
    if (!parsed.ok) return this.#drop('malformed');
    if (!this.#o.sameCodec(pt, parsed.packet.payload)) return this.#drop('payload-type');
    let cand = this.#candidate;
    if (cand !== undefined && (cand.payloadType !== pt || arrivalMs - cand.held[0]!.arrivalMs > this.#o.holdMs)) {
      this.#drop('payload-type', cand.held.length);
      cand = undefined;
    }
    cand ??= { payloadType: pt, held: [] };
    this.#candidate = cand;
    cand.held.push({ buf, arrivalMs });
    if (cand.held.length < this.#o.confirmPackets) return;
    // Confirmed: the gateway renumbered its codec. Older types stay accepted for stragglers.
    this.#candidate = undefined;
    this.#mediaTypes.push(pt);
    if (this.#mediaTypes.length > MAX_MEDIA_TYPES) this.#mediaTypes.splice(1, 1); // the declared type stays
    this.counters.payloadTypeChanges++;
    for (const h of cand.held) send(this.#rewrite(h.buf, h.arrivalMs));
  }

  /** `forward`, collecting what it sends. */
  push(buf: Buffer, arrivalMs: number): Buffer[] {
    const out: Buffer[] = [];
    this.forward(buf, arrivalMs, (packet) => out.push(packet));
    return out;
  }

  #drop(reason: RewriteDropReason, count = 1): void {
    this.counters.dropped[reason] += count;
    this.#observer.onDrop?.(reason, count);
  }

  #rewrite(buf: Buffer, arrivalMs: number): Buffer {
    const ssrc = buf.readUInt32BE(8);
    const seq = buf.readUInt16BE(2);
    const ts = buf.readUInt32BE(4);
    let map: SourceMap;
    const first = this.#current === undefined;
    if (this.#current === undefined) {
      // The first source keeps its numbering (only its SSRC is set to the producer's).
      map = this.#current = { ssrc, seqOffset: 0, tsOffset: 0 };
    } else if (ssrc === this.#current.ssrc) {
      map = this.#current;
    } else if (this.#isStraggler(ssrc, seq, arrivalMs)) {
      map = this.#previous!;
    } else {
      map = this.#switchTo(ssrc, seq, ts, arrivalMs);
    }
    const outSeq = seqAdd(seq, map.seqOffset);
    const outTs = tsAdd(ts, map.tsOffset);
    if (first || seqDiff(outSeq, this.#lastSeq) > 0) {
      if (!first && map === this.#current && outSeq === seqAdd(this.#lastSeq, 1)) {
        // Learn the packet duration from consecutive packets (20 ms usually; 10-120 ms allowed).
        const step = tsDiff(outTs, this.#lastTs);
        if (step > 0 && step <= (this.#o.clockRate * 120) / 1000) this.#step = step;
      }
      this.#lastSeq = outSeq;
      this.#lastTs = outTs;
      this.#lastArrivalMs = arrivalMs;
    }
    buf[1] = (buf[1]! & 0x80) | (this.#o.payloadType & 0x7f);
    buf.writeUInt16BE(outSeq, 2);
    buf.writeUInt32BE(outTs, 4);
    buf.writeUInt32BE(this.#o.ssrc >>> 0, 8);
    this.counters.forwarded++;
    return buf;
  }

  /**
   * A late packet of the source before the switch (reordered across it): it keeps that source's
   * offsets. Only shortly after the switch and only behind the output: a gateway that goes back
   * to its earlier SSRC later (a transfer back) is a new change, numbered after the current.
   */
  #isStraggler(ssrc: number, seq: number, arrivalMs: number): boolean {
    const prev = this.#previous;
    if (prev === undefined || prev.ssrc !== ssrc || arrivalMs - this.#switchedAtMs > STRAGGLER_MS) return false;
    return seqDiff(seqAdd(seq, prev.seqOffset), this.#lastSeq) <= 0;
  }

  /** A new source: offsets that continue the output after the last packet forwarded. */
  #switchTo(ssrc: number, seq: number, ts: number, arrivalMs: number): SourceMap {
    const gapMs = Math.max(0, arrivalMs - this.#lastArrivalMs);
    const packets = Math.max(1, Math.round((gapMs * this.#o.clockRate) / 1000 / this.#step));
    const outSeq = seqAdd(this.#lastSeq, 1);
    const outTs = tsAdd(this.#lastTs, packets * this.#step);
    const map: SourceMap = { ssrc, seqOffset: seqAdd(outSeq, -seq), tsOffset: tsAdd(outTs, -ts) };
    this.#previous = this.#current;
    this.#current = map;
    this.#switchedAtMs = arrivalMs;
    this.counters.ssrcChanges++;
    this.#observer.onSsrcChange?.();
    return map;
  }
}
