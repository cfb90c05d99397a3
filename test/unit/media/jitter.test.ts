import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { JitterBuffer, codecTiming, type JitterBufferOptions, type PushResult, type TimelineItem } from '../../../src/media/JitterBuffer.ts';
import { OPUS_SILENCE_20MS } from '../../../src/media/opusToc.ts';
import { parseRtp } from '../../../src/rtp/RtpPacket.ts';
import { readRtpCapture } from '../../../src/rtp/RtpCapture.ts';

const FRAME = 960; // 20 ms at 48 kHz

interface Ev {
  seq: number;
  ts: number;
  at: number;
  ssrc?: number;
  marker?: boolean;
  payload?: Uint8Array;
}

function opusJb(extra: Partial<JitterBufferOptions> = {}): JitterBuffer {
  return new JitterBuffer({ ...codecTiming('opus'), ...extra });
}

/** Pushes events in order, pulling at each arrival time; flushes at the end. */
function drive(jb: JitterBuffer, events: readonly Ev[]): { items: TimelineItem[]; results: PushResult[]; total: number } {
  const items: TimelineItem[] = [];
  const results: PushResult[] = [];
  for (const e of events) {
    items.push(...jb.pull(e.at));
    results.push(jb.push({ seq: e.seq & 0xffff, ts: e.ts >>> 0, ssrc: e.ssrc ?? 1, marker: e.marker ?? false, payload: e.payload ?? OPUS_SILENCE_20MS }, e.at));
    items.push(...jb.pull(e.at));
  }
  items.push(...jb.pull(1e12, { flush: true }));
  return { items, results, total: items.reduce((n, i) => n + i.samples, 0) };
}

/** A regular stream: packet k has seq s0+k, ts t0+k*960, sent at k*20 ms, arriving 40 ms later. */
function stream(n: number, s0 = 100, t0 = 1000, at0 = 0, ssrc = 1): Ev[] {
  return Array.from({ length: n }, (_, k) => ({ seq: s0 + k, ts: t0 + k * FRAME, at: at0 + 40 + k * 20, ssrc }));
}

const shape = (items: readonly TimelineItem[]): string[] => items.map((i) => (i.kind === 'gap' ? `gap:${i.samples}` : `pkt:${i.seq}`));

describe('JitterBuffer: ordering', () => {
  it('passes an in-order stream straight through, without holding it', () => {
    const jb = opusJb();
    expect(jb.push({ seq: 1, ts: 0, ssrc: 9, marker: true, payload: OPUS_SILENCE_20MS }, 0)).toBe('probation');
    expect(jb.push({ seq: 2, ts: 960, ssrc: 9, marker: false, payload: OPUS_SILENCE_20MS }, 20)).toBe('buffered');
    expect(shape(jb.pull(20))).toEqual(['pkt:1', 'pkt:2']);
    jb.push({ seq: 3, ts: 1920, ssrc: 9, marker: false, payload: OPUS_SILENCE_20MS }, 40);
    const [item] = jb.pull(40);
    expect(item).toMatchObject({ kind: 'packet', seq: 3, rtpTs: 1920, samples: 960, ssrc: 9, arrivalMs: 40, marker: false });
    expect(jb.stats).toMatchObject({ received: 3, emitted: 3, expected: 3, lost: 0, reordered: 0 });
  });

  it('puts reordered packets back in order within the hold time', () => {
    const ev = stream(6);
    [ev[2], ev[3]] = [{ ...ev[3]!, at: ev[2]!.at }, { ...ev[2]!, at: ev[2]!.at + 15 }];
    const { items, total } = drive(opusJb(), ev);
    expect(shape(items)).toEqual(['pkt:100', 'pkt:101', 'pkt:102', 'pkt:103', 'pkt:104', 'pkt:105']);
    expect(total).toBe(6 * FRAME);
  });

  it('holds a hole for maxHoldMs, then declares it lost and fills the time with a gap', () => {
    const jb = opusJb({ maxHoldMs: 100 });
    const ev = stream(5).filter((e) => e.seq !== 102);
    for (const e of ev.slice(0, 3)) jb.push({ seq: e.seq, ts: e.ts, ssrc: 1, marker: false, payload: OPUS_SILENCE_20MS }, e.at);
    // 103 arrived at t=100; the hole before it waits until t=200.
    expect(shape(jb.pull(199))).toEqual(['pkt:100', 'pkt:101']);
    expect(jb.depth).toBe(1);
    expect(shape(jb.pull(200))).toEqual([`gap:${FRAME}`, 'pkt:103']);
    expect(jb.stats).toMatchObject({ lost: 1, expected: 4, concealedSamples: FRAME, dtxSamples: 0 });
    // The missing packet finally shows up: too late, counted, timeline untouched.
    expect(jb.push({ seq: 102, ts: 1000 + 2 * FRAME, ssrc: 1, marker: false, payload: OPUS_SILENCE_20MS }, 210)).toBe('late');
    expect(jb.pull(210)).toHaveLength(0);
    expect(jb.stats.late).toBe(1);
  });

  it('drops duplicates, whether still buffered or already emitted', () => {
    const ev = stream(4);
    const { items, results } = drive(opusJb(), [...ev.slice(0, 3), { ...ev[2]!, at: 95 }, ev[3]!, { ...ev[0]!, at: 130 }]);
    expect(results).toEqual(['probation', 'buffered', 'buffered', 'duplicate', 'buffered', 'duplicate']);
    expect(shape(items)).toEqual(['pkt:100', 'pkt:101', 'pkt:102', 'pkt:103']);
  });

  it('follows the sequence number through the 16-bit wrap', () => {
    const { items, total } = drive(opusJb(), stream(40, 65_520, 0xffffffff - 10 * FRAME));
    expect(items.every((i) => i.kind === 'packet')).toBe(true);
    expect(items.map((i) => (i.kind === 'packet' ? i.seq : -1)).slice(14, 18)).toEqual([65_534, 65_535, 0, 1]);
    expect(total).toBe(40 * FRAME);
  });
});

describe('JitterBuffer: time', () => {
  it('DTX: timestamp advancing with no sequence gap becomes a gap of the timestamp difference', () => {
    const ev = stream(10);
    for (let k = 5; k < 10; k++) ev[k] = { ...ev[k]!, ts: ev[k]!.ts + 48_000, at: ev[k]!.at + 1000, marker: k === 5 };
    const jb = opusJb();
    const { items, total } = drive(jb, ev);
    expect(shape(items)).toEqual(['pkt:100', 'pkt:101', 'pkt:102', 'pkt:103', 'pkt:104', 'gap:48000', 'pkt:105', 'pkt:106', 'pkt:107', 'pkt:108', 'pkt:109']);
    expect(items[6]).toMatchObject({ marker: true });
    expect(total).toBe(10 * FRAME + 48_000);
    expect(jb.stats).toMatchObject({ dtxSamples: 48_000, lost: 0, reanchors: 0 });
  });

  it('trusts a long silence (> maxJumpMs) when the arrival clock agrees with it', () => {
    const ev = stream(4);
    ev[3] = { ...ev[3]!, ts: ev[3]!.ts + 7 * 48_000, at: ev[3]!.at + 7000 + 30 };
    const jb = opusJb();
    const { total } = drive(jb, ev);
    expect(total).toBe(4 * FRAME + 7 * 48_000);
    expect(jb.stats.reanchors).toBe(0);
  });

  it('a forward timestamp jump the wall clock does not confirm re-anchors on arrival time', () => {
    const ev = stream(20);
    for (let k = 10; k < 20; k++) ev[k] = { ...ev[k]!, ts: ev[k]!.ts + 1_234_567_890 };
    ev[10] = { ...ev[10]!, at: ev[10]!.at + 7 }; // a little network jitter on the first packet after the jump
    const jb = opusJb();
    const { total } = drive(jb, ev);
    expect(Math.abs(total - 20 * FRAME)).toBeLessThanOrEqual(7 * 48);
    expect(jb.stats.reanchors).toBe(1);
  });

  it('a backward timestamp step with the sequence in order re-anchors too (never shrinks time)', () => {
    const ev = stream(20);
    for (let k = 10; k < 20; k++) ev[k] = { ...ev[k]!, ts: ev[k]!.ts - 3 * 48_000 };
    const jb = opusJb();
    const { total, items } = drive(jb, ev);
    expect(total).toBe(20 * FRAME);
    expect(items.filter((i) => i.kind === 'packet')).toHaveLength(20);
    expect(jb.stats.reanchors).toBe(1);
  });

  it('a signalled hold: media that resumes with the timestamps where they stopped is placed by the arrival clock', () => {
    // 10 packets, 3 s of nothing (a SIP hold), then the sender continues seq and ts as if no time had passed.
    const before = stream(10);
    const after = stream(10, 110, 1000 + 10 * FRAME, 3000 + 10 * 20);
    const trusting = drive(opusJb(), [...before, ...after]);
    expect(trusting.total).toBe(20 * FRAME); // what the timestamps alone say: the hold compressed out
    const jb = opusJb();
    const first = drive(jb, before).items;
    jb.resumedAt(after[0]!.at - 1);
    const { items } = drive(jb, after);
    const total = [...first, ...items].reduce((n, i) => n + i.samples, 0);
    expect(total).toBe(20 * FRAME + 3000 * 48);
    expect(jb.stats.reanchors).toBe(1);
  });

  it('an unusable payload is dropped as invalid and its time becomes a gap', () => {
    const ev = stream(5);
    ev[2] = { ...ev[2]!, payload: Uint8Array.of(0xfb, 0x00) }; // code 3 with zero frames
    const jb = opusJb();
    const { results, total } = drive(jb, ev);
    expect(results[2]).toBe('invalid');
    expect(total).toBe(5 * FRAME);
    expect(jb.stats.dropped.invalid).toBe(1);
  });

  it('G.711 timing: 8 kHz clock, one sample per byte', () => {
    const jb = new JitterBuffer(codecTiming('pcmu'));
    const pay = new Uint8Array(160).fill(0xff);
    const ev: Ev[] = Array.from({ length: 10 }, (_, k) => ({ seq: k, ts: k * 160, at: k * 20, payload: pay })).filter((e) => e.seq !== 4);
    const { total, items } = drive(jb, ev);
    expect(total).toBe(1600);
    expect(shape(items)[4]).toBe('gap:160');
  });
});

describe('JitterBuffer: sources', () => {
  it('SSRC change: flushes the old source, places the new one by the arrival clock, ignores stragglers', () => {
    const a = stream(10, 100, 5000, 0, 0xaaaa);
    const b = stream(10, 40_000, 3_000_000_000, 200 + 300, 0xbbbb); // starts 300 ms after A's last packet was sent
    const straggler: Ev = { ...a[9]!, seq: 110, ts: 5000 + 10 * FRAME, at: b[1]!.at + 5 };
    const jb = opusJb();
    const { items, results, total } = drive(jb, [...a, b[0]!, b[1]!, straggler, ...b.slice(2)]);
    expect(results[10]).toBe('probation');
    expect(results[11]).toBe('buffered');
    expect(results[12]).toBe('stale-ssrc');
    // A's 10 packets, then the 300 ms pause (by the arrival clock), then B's 10 packets.
    expect(items.filter((i) => i.kind === 'packet')).toHaveLength(20);
    expect(total).toBe(20 * FRAME + 300 * 48);
    expect(jb.stats).toMatchObject({ ssrcChanges: 1, reanchors: 1 });
  });

  it('a single stray packet from an unknown SSRC never reaches the timeline', () => {
    const ev = stream(10);
    ev.splice(5, 0, { seq: 777, ts: 123, at: ev[4]!.at + 1, ssrc: 0xdead });
    const jb = opusJb();
    const { total, results } = drive(jb, ev);
    expect(results[5]).toBe('probation');
    expect(total).toBe(10 * FRAME);
    expect(jb.stats.ssrcChanges).toBe(0);
  });

  it('a sequence restart on the same SSRC is accepted after two packets (RFC 3550 A.1 bad_seq)', () => {
    const a = stream(10);
    const b = stream(10, 30_000, 1000 + 10 * FRAME, 200);
    const jb = opusJb();
    const { results, total } = drive(jb, [...a, ...b]);
    expect(results.slice(10, 12)).toEqual(['probation', 'buffered']);
    expect(total).toBe(20 * FRAME);
    expect(jb.stats.reanchors).toBe(1);
  });
});

describe('JitterBuffer: bounds and statistics', () => {
  it('never holds more than maxDepth packets, and keeps time when nobody pulls', () => {
    const jb = opusJb({ maxDepth: 16 });
    const ev = stream(2000).filter((e) => e.seq !== 101); // a hole that never fills
    let maxDepth = 0;
    let maxReady = 0;
    for (const e of ev) {
      jb.push({ seq: e.seq, ts: e.ts, ssrc: 1, marker: false, payload: OPUS_SILENCE_20MS }, e.at);
      maxDepth = Math.max(maxDepth, jb.depth);
      maxReady = Math.max(maxReady, jb.readyPackets);
    }
    expect(maxDepth).toBeLessThanOrEqual(16);
    expect(maxReady).toBeLessThanOrEqual(64);
    const items = jb.pull(1e9, { flush: true });
    expect(items.length).toBeLessThanOrEqual(2 * 64 + 2);
    expect(items.reduce((n, i) => n + i.samples, 0)).toBe(2000 * FRAME);
    expect(jb.stats.dropped.overflow).toBeGreaterThan(1000);
    expect(jb.stats.lost).toBe(1);
  });

  it('takeSegmentStats reports per period and starts over', () => {
    const jb = opusJb();
    drive(jb, stream(50).filter((e) => e.seq % 10 !== 5));
    const first = jb.takeSegmentStats();
    expect(first).toMatchObject({ received: 45, emitted: 45, lost: 5, expected: 50, concealedSamples: 5 * FRAME });
    const second = jb.takeSegmentStats();
    expect(second).toMatchObject({ received: 0, emitted: 0, lost: 0, expected: 0 });
    expect(jb.stats.received).toBe(45);
    expect(JSON.parse(JSON.stringify(jb))).toMatchObject({ received: 45, lost: 5 });
  });

  it('interarrival jitter follows RFC 3550 A.8 (alternating 0/10 ms extra delay -> 10 ms)', () => {
    const ev = stream(400).map((e, k) => ({ ...e, at: e.at + (k % 2) * 10 }));
    const jb = opusJb();
    drive(jb, ev);
    expect(jb.stats.jitterMs).toBeCloseTo(10, 1);
    expect(jb.stats.jitter).toBeCloseTo(480, -1);
  });

  it('wallClockAt finds the least-delayed packet: the first sample within 1 ms', () => {
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const ev = stream(500).map((e) => ({ ...e, at: e.at + 10 + rand() * 40 })); // 50 ms base delay, 10-50 ms jitter
    ev.sort((x, y) => x.at - y.at);
    const jb = opusJb();
    drive(jb, ev);
    // Sender's first sample at t=0, minimum one-way delay 50 ms.
    expect(Math.abs(jb.wallClockAt(0) - 50)).toBeLessThan(1);
    expect(Math.abs(jb.wallClockAt(48_000 * 5) - 5050)).toBeLessThan(1);
    expect(opusJb().wallClockAt(0)).toBeNaN();
  });

  it('rejects nonsense options', () => {
    expect(() => opusJb({ maxDepth: 0 })).toThrow(/maxDepth/);
    expect(() => opusJb({ maxDepth: 5000 })).toThrow(/maxDepth/);
  });
});

describe('JitterBuffer on RTP captures', () => {
  interface Meta { scenario: string; mediaSamples: number; firstSampleSendMs: number; clockRate: number }

  function replay(file: string | URL, tickMs = 20): { total: number; jb: JitterBuffer; meta: Meta } {
    const cap = readRtpCapture<Meta>(readFileSync(file));
    const jb = opusJb();
    let total = 0;
    let tick = 0;
    const eat = (items: readonly TimelineItem[]): void => {
      for (const i of items) total += i.samples;
    };
    for (const r of cap.records) {
      // One shared tick drives pulls, as in the recorder.
      for (; tick <= r.arrivalMs; tick += tickMs) eat(jb.pull(tick));
      const p = parseRtp(r.packet);
      if (!p.ok) throw new Error('capture holds malformed RTP');
      jb.push({ seq: p.packet.sequenceNumber, ts: p.packet.timestamp, ssrc: p.packet.ssrc, marker: p.packet.marker, payload: p.packet.payload }, r.arrivalMs);
    }
    eat(jb.pull(tick + 1000, { flush: true }));
    return { total, jb, meta: cap.meta };
  }

  it('committed fixture: lossy, reordered, duplicated, wrapping -> exact media time', () => {
    const { total, jb, meta } = replay(new URL('../../../media-fixtures/rtp/opus-lossy-wrap.rtpcap', import.meta.url));
    expect(total).toBe(meta.mediaSamples);
    expect(jb.stats.lost).toBeGreaterThan(0);
    expect(jb.stats.duplicated).toBeGreaterThan(0);
    expect(jb.stats.reordered).toBeGreaterThan(0);
    expect(jb.stats.late).toBe(0);
    expect(Math.abs(jb.wallClockAt(0) - (meta.firstSampleSendMs + 30))).toBeLessThan(5);
  });

  describe('generated captures', () => {
    const dir = new URL('../../../media-fixtures/generated/rtp/', import.meta.url);
    beforeAll(() => {
      execFileSync('bash', [new URL('../../../media-fixtures/generate.sh', import.meta.url).pathname], { stdio: 'inherit' });
    }, 120_000);

    it('every scenario: emitted samples == sent media time within 20 ms per minute; wall clock of sample 0 within 5 ms', () => {
      const files = readdirSync(dir).filter((f) => f.endsWith('.rtpcap'));
      expect(files.length).toBeGreaterThanOrEqual(12);
      const rows: string[] = [];
      for (const f of files) {
        const { total, jb, meta } = replay(new URL(f, dir));
        const errMs = (total - meta.mediaSamples) / 48;
        const budgetMs = (20 * meta.mediaSamples) / 48_000 / 60;
        const wallErr = jb.wallClockAt(0) - (meta.firstSampleSendMs + 30);
        const s = jb.stats;
        rows.push(`${f.padEnd(24)} err ${errMs.toFixed(2).padStart(6)} ms (budget ${budgetMs.toFixed(1)})  wall ${wallErr.toFixed(2).padStart(5)} ms  lost ${s.lost} reord ${s.reordered} dup ${s.duplicated} late ${s.late} dtx ${(s.dtxSamples / 48).toFixed(0)} ms reanchor ${s.reanchors} jitter ${s.jitterMs.toFixed(1)} ms`);
        expect(Math.abs(errMs), f).toBeLessThanOrEqual(budgetMs);
        expect(Math.abs(wallErr), f).toBeLessThan(5);
      }
      console.log(`\n${rows.join('\n')}`);
    });

    it('two tracks of one call line up: wall clocks of their first samples agree', () => {
      const a = replay(new URL('agent-clean.rtpcap', dir));
      const c = replay(new URL('customer-lossy.rtpcap', dir));
      expect(Math.abs(a.jb.wallClockAt(0) - c.jb.wallClockAt(0))).toBeLessThan(3);
    });
  });
});
