/**
 * MediaTimeAnchor (issue 19 item 5): when was a late packet's audio spoken, on the recorder's
 * clock? Packets in order are judged by their arrival (NaN here).
 */
import { describe, expect, it } from 'vitest';
import { MediaTimeAnchor } from '../../../src/media/MediaTimeAnchor.ts';

/** An Opus source: packet k is spoken at t0 + 20·k, with sequence seq0 + k and ts0 + 960·k. */
const seq = (k: number): number => (65_500 + k) & 0xffff;
const ts = (k: number): number => (0xffff_0000 + k * 960) >>> 0;

describe('MediaTimeAnchor', () => {
  it('maps a late packet to when it was spoken (plus the delay floor), not to when it came', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    const t0 = 1_000_000;
    // Delays between 5 and 25 ms: the floor is 5 ms. In order: NaN.
    for (let k = 0; k < 50; k++) expect(a.lateMediaTime(7, seq(k), ts(k), t0 + 20 * k + 5 + ((k * 7) % 21))).toBeNaN();
    // Packet 51 before 50 (which comes 80 ms late), across the sequence and timestamp wraps.
    expect(a.lateMediaTime(7, seq(51), ts(51), t0 + 1020 + 5)).toBeNaN();
    expect(a.lateMediaTime(7, seq(50), ts(50), t0 + 1000 + 80)).toBeCloseTo(t0 + 1005, 6);
    // A duplicate of the newest is not late; a packet 101 behind is a restarted sequence, not late.
    expect(a.lateMediaTime(7, seq(51), ts(51), t0 + 1030)).toBeNaN();
    expect(a.lateMediaTime(7, seq(51 - 101), ts(52), t0 + 1045)).toBeNaN();
  });

  it('keeps one clock per source: a straggler of the old SSRC is judged by its own', () => {
    const a = new MediaTimeAnchor({ clockRate: 8000 });
    for (let k = 0; k < 10; k++) a.lateMediaTime(1, 100 + k, k * 160, 500 + 20 * k);
    for (let k = 0; k < 3; k++) expect(a.lateMediaTime(2, 9000 + k, 123_456 + k * 160, 700 + 20 * k)).toBeNaN();
    expect(a.lateMediaTime(1, 103, 3 * 160, 760)).toBe(560);
  });

  it('forgets an old floor within two windows (a timestamp jump cannot pin it)', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000, windowMs: 1000 });
    for (let k = 0; k < 50; k++) a.lateMediaTime(9, k, ts(k), 10_000 + 20 * k);
    // The sender froze its timestamps over a 3 s hold: offsets 3 s later from packet 50 on.
    for (let k = 50; k < 200; k++) a.lateMediaTime(9, k, ts(k), 13_000 + 20 * k);
    expect(a.lateMediaTime(9, 198, ts(198), 13_000 + 20 * 200)).toBe(13_000 + 20 * 198);
  });

  it('a sender whose timestamps run behind the clock (bursts, drift) is never judged while in order', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    // Bursts of 5 packets every 300 ms: timestamps advance 100 ms per 300 ms.
    for (let b = 0; b < 20; b++) for (let i = 0; i < 5; i++) expect(a.lateMediaTime(3, b * 5 + i, ts(b * 5 + i), 50_000 + 300 * b + i / 10)).toBeNaN();
  });
});
