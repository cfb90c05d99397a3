/**
 * MediaTimeAnchor (issue 19 item 5): when was a packet's audio spoken, on the recorder's clock?
 * The delay floor plus its timestamp: never later than its arrival, and for a packet in order never
 * earlier than its arrival minus the read-delay bound.
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
    // Delays between 5 and 25 ms: the floor is 5 ms. A packet in order is its arrival at most,
    // and the floor plus its timestamp once the floor is known.
    expect(a.mediaTime(7, seq(0), ts(0), t0 + 5)).toBe(t0 + 5);
    for (let k = 1; k < 50; k++) {
      const arrival = t0 + 20 * k + 5 + ((k * 7) % 21);
      expect(a.mediaTime(7, seq(k), ts(k), arrival)).toBeCloseTo(t0 + 20 * k + 5, 6);
    }
    // Packet 51 before 50 (which comes 80 ms late), across the sequence and timestamp wraps.
    expect(a.mediaTime(7, seq(51), ts(51), t0 + 1020 + 5)).toBeCloseTo(t0 + 1025, 6);
    expect(a.mediaTime(7, seq(50), ts(50), t0 + 1000 + 80)).toBeCloseTo(t0 + 1005, 6);
    // A packet 101 behind is a restarted sequence, not late: its timestamp jumped back 1 s, so it is
    // judged as early as the read-delay bound allows (500 ms), no earlier.
    expect(a.mediaTime(7, seq(51 - 101), ts(1), t0 + 1045)).toBe(t0 + 1045 - 500);
  });

  it('a packet read late after a stall of the reader is judged by when it came, not when it was read', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000 });
    const t0 = 2_000_000;
    for (let k = 0; k < 50; k++) a.mediaTime(5, seq(k), ts(k), t0 + 20 * k + 3);
    // The reader is held up for 120 ms: packets 50..55 wait in the socket and are read at once.
    const readAt = t0 + 20 * 55 + 3 + 1;
    for (let k = 50; k <= 55; k++) expect(a.mediaTime(5, seq(k), ts(k), readAt)).toBeCloseTo(t0 + 20 * k + 3, 6);
  });

  it('keeps one clock per source: a straggler of the old SSRC is judged by its own', () => {
    const a = new MediaTimeAnchor({ clockRate: 8000 });
    for (let k = 0; k < 10; k++) a.mediaTime(1, 100 + k, k * 160, 500 + 20 * k);
    for (let k = 0; k < 3; k++) expect(a.mediaTime(2, 9000 + k, 123_456 + k * 160, 700 + 20 * k)).toBe(700 + 20 * k);
    expect(a.mediaTime(1, 103, 3 * 160, 760)).toBe(560);
  });

  it('forgets an old floor within two windows (a timestamp jump cannot pin it)', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000, windowMs: 1000 });
    for (let k = 0; k < 50; k++) a.mediaTime(9, k, ts(k), 10_000 + 20 * k);
    // The sender froze its timestamps over a 3 s hold: offsets 3 s later from packet 50 on. Right
    // after, packets in order are judged as early as the bound allows (their floor is 3 s old) ...
    expect(a.mediaTime(9, 50, ts(50), 13_000 + 20 * 50)).toBe(13_000 + 20 * 50 - 500);
    for (let k = 51; k < 200; k++) a.mediaTime(9, k, ts(k), 13_000 + 20 * k);
    // ... and two windows on, by the new floor.
    expect(a.mediaTime(9, 198, ts(198), 13_000 + 20 * 200)).toBe(13_000 + 20 * 198);
    expect(a.mediaTime(9, 200, ts(200), 13_000 + 20 * 200)).toBe(13_000 + 20 * 200);
  });

  it('a sender whose timestamps run behind the clock (bursts, drift) is judged at most the bound early', () => {
    const a = new MediaTimeAnchor({ clockRate: 48_000, readDelayBoundMs: 300 });
    // Bursts of 5 packets every 300 ms: timestamps advance 100 ms per 300 ms.
    for (let b = 0; b < 20; b++) {
      for (let i = 0; i < 5; i++) {
        const arrival = 50_000 + 300 * b + i / 10;
        const t = a.mediaTime(3, b * 5 + i, ts(b * 5 + i), arrival);
        expect(t).toBeLessThanOrEqual(arrival);
        expect(t).toBeGreaterThanOrEqual(arrival - 300);
      }
    }
  });
});
