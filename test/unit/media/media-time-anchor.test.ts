/**
 * MediaTimeAnchor (issue 19 item 5): RTP time -> the recorder's clock, for judging a packet by
 * when its audio was spoken rather than when it arrived.
 */
import { describe, expect, it } from 'vitest';
import { MediaTimeAnchor } from '../../../src/media/MediaTimeAnchor.ts';

/** An Opus source: packet k sent at t0 + 20·k with ts0 + 960·k. */
const ts = (ts0: number, k: number): number => (ts0 + k * 960) >>> 0;

describe('MediaTimeAnchor', () => {
  it('maps a delayed packet to when it was sent (plus the delay floor), not to when it came', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    const t0 = 1_000_000;
    // Delays between 5 and 25 ms: the floor is 5 ms.
    for (let k = 0; k < 50; k++) a.observe(7, ts(0xffff_0000, k), t0 + 20 * k + 5 + ((k * 7) % 21));
    // Packet 60, sent at t0 + 1200, arrives 80 ms late: its media time is still t0 + 1205.
    expect(a.observe(7, ts(0xffff_0000, 60), t0 + 1200 + 80)).toBeCloseTo(t0 + 1205, 6);
    // Across the 32-bit timestamp wrap too.
    expect(a.observe(7, ts(0xffff_0000, 100), t0 + 2005)).toBeCloseTo(t0 + 2005, 6);
  });

  it('keeps one floor per source: a new SSRC starts at its own first arrival, the old one keeps its own', () => {
    const a = new MediaTimeAnchor({ clockRate: 8000 });
    for (let k = 0; k < 10; k++) a.observe(1, k * 160, 500 + 20 * k);
    expect(a.observe(2, 123_456, 900)).toBe(900);
    expect(a.observe(2, 123_456 + 160, 920)).toBe(920);
    expect(a.observe(1, 3 * 160, 930)).toBe(560); // a straggler of source 1: from 560 ms
  });

  it('follows timestamps frozen over a hold once packets agree for 200 ms; until then judges by the old floor', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    for (let k = 0; k < 50; k++) a.observe(9, ts(0, k), 10_000 + 20 * k);
    // Hold of 3 s, then the source resumes where its timestamps stopped (k = 50 onwards).
    const at = (k: number): number => 10_000 + 3000 + 20 * k;
    expect(a.observe(9, ts(0, 50), at(50))).toBe(11_000); // judged early: the old timeline
    for (let k = 51; k < 60; k++) a.observe(9, ts(0, k), at(k));
    expect(a.observe(9, ts(0, 60), at(60))).toBe(at(60)); // 200 ms later: the new timeline
    expect(a.reanchors).toBe(1);
  });

  it('a burst of delayed packets arriving together cannot move the floor', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    for (let k = 0; k < 50; k++) a.observe(9, ts(0, k), 10_000 + 20 * k);
    // A 1.5 s stall: packets 50..124 all arrive within 10 ms.
    for (let k = 50; k < 125; k++) expect(a.observe(9, ts(0, k), 12_500 + (k - 50) / 10)).toBe(10_000 + 20 * k);
    expect(a.reanchors).toBe(0);
  });

  it('one packet with a wild timestamp does not drag the floor with it', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    for (let k = 0; k < 50; k++) a.observe(9, ts(0, k), 10_000 + 20 * k);
    a.observe(9, ts(0, 50 + 48_000), 11_000);
    expect(a.observe(9, ts(0, 51), 11_020)).toBe(11_020);
  });
});
