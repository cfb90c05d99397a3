/**
 * RtpLegRewriter (issue 19 item 1): a gateway's SSRC changes and payload-type renumberings mapped
 * onto the one stream the SFU's producer takes, without breaking sequence or time.
 */
import { describe, expect, it } from 'vitest';
import { RtpLegRewriter } from '../../../src/rtp/RtpLegRewriter.ts';
import { buildRtp, parseRtp, type RtpPacket } from '../../../src/rtp/RtpPacket.ts';
import { OPUS_SILENCE_20MS, opusPacketSamples } from '../../../src/media/opusToc.ts';

const OUT_SSRC = 0x1111;
const opusFrame = Buffer.concat([Buffer.from(OPUS_SILENCE_20MS), Buffer.alloc(20, 7)]);

function opusLeg(): RtpLegRewriter {
  return new RtpLegRewriter({
    ssrc: OUT_SSRC,
    payloadType: 100,
    clockRate: 48_000,
    sameCodec: (pt, payload) => pt >= 96 && pt <= 127 && payload.length > 4 && opusPacketSamples(payload) > 0,
  });
}

function pkt(o: { ssrc: number; seq: number; ts: number; pt?: number; payload?: Uint8Array; marker?: boolean }): Buffer {
  return buildRtp({ payloadType: o.pt ?? 100, sequenceNumber: o.seq, timestamp: o.ts, ssrc: o.ssrc, payload: o.payload ?? opusFrame, marker: o.marker ?? false });
}

function parsed(bufs: Buffer[]): RtpPacket[] {
  return bufs.map((b) => {
    const r = parseRtp(b);
    if (!r.ok) throw new Error('rewriter produced a malformed packet');
    return r.packet;
  });
}

/** Sends `n` packets of one source paced 20 ms apart from `atMs`; returns what came out. */
function stream(rw: RtpLegRewriter, o: { ssrc: number; seq0: number; ts0: number; n: number; atMs: number; pt?: number }): RtpPacket[] {
  const out: Buffer[] = [];
  for (let i = 0; i < o.n; i++) out.push(...rw.push(pkt({ ssrc: o.ssrc, seq: o.seq0 + i, ts: o.ts0 + i * 960, pt: o.pt ?? 100 }), o.atMs + i * 20));
  return parsed(out);
}

describe('RtpLegRewriter', () => {
  it('keeps the first source as it is, under the producer SSRC', () => {
    const rw = opusLeg();
    const out = stream(rw, { ssrc: 0xaaaa, seq0: 500, ts0: 123_456, n: 5, atMs: 0 });
    expect(out.map((p) => p.sequenceNumber)).toEqual([500, 501, 502, 503, 504]);
    expect(out.map((p) => p.timestamp)).toEqual([0, 1, 2, 3, 4].map((i) => 123_456 + i * 960));
    expect(out.every((p) => p.ssrc === OUT_SSRC && p.payloadType === 100)).toBe(true);
    expect(rw.counters.ssrcChanges).toBe(0);
  });

  it('continues sequence and time seamlessly across an SSRC change without a pause', () => {
    const rw = opusLeg();
    const a = stream(rw, { ssrc: 0xaaaa, seq0: 65_530, ts0: 0xffff_f000, n: 10, atMs: 0 });
    const b = stream(rw, { ssrc: 0xbbbb, seq0: 7, ts0: 42, n: 10, atMs: 200 });
    const all = [...a, ...b];
    for (let i = 1; i < all.length; i++) {
      expect((all[i]!.sequenceNumber - all[i - 1]!.sequenceNumber) & 0xffff).toBe(1);
      expect((all[i]!.timestamp - all[i - 1]!.timestamp) >>> 0).toBe(960);
    }
    expect(all.every((p) => p.ssrc === OUT_SSRC)).toBe(true);
    expect(rw.counters.ssrcChanges).toBe(1);
  });

  it('keeps a pause before the new source as time (arrival gap, whole packets), never compressing it', () => {
    const rw = opusLeg();
    const a = stream(rw, { ssrc: 0xaaaa, seq0: 1, ts0: 0, n: 5, atMs: 0 });
    // The last packet of A arrived at 80 ms; B starts 3 s + 7 ms later (jitter rounds away).
    const b = stream(rw, { ssrc: 0xbbbb, seq0: 9000, ts0: 77, n: 3, atMs: 3087 });
    expect(b[0]!.sequenceNumber).toBe(a[4]!.sequenceNumber + 1);
    expect(b[0]!.timestamp - a[4]!.timestamp).toBe(150 * 960); // 3000 ms at 48 kHz
  });

  it('places stragglers of the previous source behind the switch, and counts a later return as a change', () => {
    const rw = opusLeg();
    stream(rw, { ssrc: 0xaaaa, seq0: 100, ts0: 0, n: 4, atMs: 0 }); // 100..103 out
    const late = parsed(rw.push(pkt({ ssrc: 0xaaaa, seq: 99, ts: 0 - 960 }), 65));
    expect(late[0]!.sequenceNumber).toBe(99);
    const b = stream(rw, { ssrc: 0xbbbb, seq0: 5000, ts0: 0, n: 3, atMs: 80 });
    expect(b.map((p) => p.sequenceNumber)).toEqual([104, 105, 106]);
    // A packet of A reordered across the switch keeps A's numbering (a duplicate of 103 here).
    const straggler = parsed(rw.push(pkt({ ssrc: 0xaaaa, seq: 103, ts: 3 * 960 }), 95));
    expect(straggler[0]!.sequenceNumber).toBe(103);
    expect(rw.counters.ssrcChanges).toBe(1);
    // A comes back a second later (a transfer back): a new change, numbered after B.
    const back = stream(rw, { ssrc: 0xaaaa, seq0: 104, ts0: 4 * 960, n: 2, atMs: 1200 });
    expect(back[0]!.sequenceNumber).toBe(107);
    expect(rw.counters.ssrcChanges).toBe(2);
  });

  it('maps a confirmed renumbering of the codec (Opus 100 -> 111) onto the producer type, holding the first packets', () => {
    const rw = opusLeg();
    stream(rw, { ssrc: 0xaaaa, seq0: 1, ts0: 0, n: 3, atMs: 0 });
    const outs: Buffer[][] = [];
    for (let i = 0; i < 4; i++) outs.push(rw.push(pkt({ ssrc: 0xaaaa, seq: 4 + i, ts: (3 + i) * 960, pt: 111 }), 60 + i * 20));
    expect(outs.map((o) => o.length)).toEqual([0, 0, 3, 1]);
    const out = parsed(outs.flat());
    expect(out.map((p) => p.sequenceNumber)).toEqual([4, 5, 6, 7]);
    expect(out.every((p) => p.payloadType === 100)).toBe(true);
    expect(rw.counters.payloadTypeChanges).toBe(1);
    // The declared type still passes (a straggler).
    expect(rw.push(pkt({ ssrc: 0xaaaa, seq: 3, ts: 2 * 960, pt: 100 }), 140)).toHaveLength(1);
  });

  it('drops other payloads: telephone-events, comfort noise, a lone packet of another type, and malformed data', () => {
    const rw = opusLeg();
    stream(rw, { ssrc: 0xaaaa, seq0: 1, ts0: 0, n: 2, atMs: 0 });
    for (let i = 0; i < 6; i++) expect(rw.push(pkt({ ssrc: 0xaaaa, seq: 3 + i, ts: 960, pt: 101, payload: Buffer.from([1, 0x8a, 0, 160]) }), 40 + i * 20)).toEqual([]);
    expect(rw.push(pkt({ ssrc: 0xaaaa, seq: 9, ts: 960, pt: 13, payload: Buffer.from([40]) }), 200)).toEqual([]);
    expect(rw.push(pkt({ ssrc: 0xaaaa, seq: 10, ts: 960, pt: 112 }), 220)).toEqual([]); // held, never confirmed
    expect(rw.push(Buffer.from([0x40, 0, 0, 0]), 230)).toEqual([]);
    stream(rw, { ssrc: 0xaaaa, seq0: 11, ts0: 10 * 960, n: 2, atMs: 500 });
    expect(rw.push(pkt({ ssrc: 0xaaaa, seq: 13, ts: 12 * 960, pt: 113 }), 540)).toEqual([]); // drops the stale 112 hold
    expect(rw.counters.dropped).toEqual({ 'payload-type': 8, malformed: 1 });
    expect(rw.counters.payloadTypeChanges).toBe(0);
  });

  it('G.711 never takes another type for its codec', () => {
    const rw = new RtpLegRewriter({ ssrc: OUT_SSRC, payloadType: 0, clockRate: 8000, sameCodec: () => false });
    expect(rw.push(pkt({ ssrc: 5, seq: 1, ts: 0, pt: 0, payload: Buffer.alloc(160) }), 0)).toHaveLength(1);
    expect(rw.push(pkt({ ssrc: 5, seq: 2, ts: 160, pt: 8, payload: Buffer.alloc(160) }), 20)).toEqual([]);
    // A switch 40 ms after the last packet forwarded (the PCMA one was dropped): 2 packets of 8 kHz time.
    const out = parsed(rw.push(pkt({ ssrc: 6, seq: 77, ts: 9, pt: 0, payload: Buffer.alloc(160) }), 40));
    expect(out[0]!.timestamp).toBe(320);
    expect(out[0]!.sequenceNumber).toBe(2);
  });
});
