import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { extendSeq, extendTs, seqAdd, seqDiff, seqNewer, tsAdd, tsDiff, Unwrapper } from '../../../src/rtp/sequence.ts';
import { seeded } from '../../support/property.ts';

describe('16-bit sequence arithmetic', () => {
  it('measures signed distance across the wrap', () => {
    expect(seqDiff(0, 65535)).toBe(1);
    expect(seqDiff(65535, 0)).toBe(-1);
    expect(seqDiff(5, 65530)).toBe(11);
    expect(seqDiff(100, 100)).toBe(0);
    expect(seqDiff(32767, 0)).toBe(32767);
    expect(seqDiff(32768, 0)).toBe(-32768);
    expect(seqNewer(2, 65534)).toBe(true);
    expect(seqNewer(65534, 2)).toBe(false);
    expect(seqAdd(65535, 2)).toBe(1);
  });

  it('extends to the value nearest the reference', () => {
    expect(extendSeq(0, 65535)).toBe(65536);
    expect(extendSeq(65535, 65536)).toBe(65535);
    expect(extendSeq(10, 3 * 65536 + 65530)).toBe(4 * 65536 + 10);
    expect(extendSeq(65530, 4 * 65536 + 10)).toBe(3 * 65536 + 65530);
  });

  it('extendSeq inverts the wrap for any distance within half the space (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: -32768, max: 32767 }), (ref, d) => {
        fc.pre(ref + d >= 0);
        expect(extendSeq((ref + d) % 65536, ref)).toBe(ref + d);
      }),
      seeded(),
    );
  });

  it('Unwrapper follows a reordered stream through several wraps', () => {
    const u = new Unwrapper(16);
    let truth = 65000;
    let mismatches = 0;
    for (let i = 0; i < 200_000; i += 1) {
      // Swap every 7th pair to reorder.
      const v = i % 7 === 3 ? truth + 1 : i % 7 === 4 ? truth - 1 : truth;
      if (u.unwrap(v % 65536) !== v) mismatches++;
      truth++;
    }
    expect(mismatches).toBe(0);
    expect(u.highest).toBe(65000 + 200_000 - 1);
  });
});

describe('32-bit timestamp arithmetic', () => {
  it('measures signed distance and adds modulo 2^32', () => {
    expect(tsDiff(0, 0xffffffff)).toBe(1);
    expect(tsDiff(0xffffffff, 0)).toBe(-1);
    expect(tsDiff(960, 0xfffffc40)).toBe(1920);
    expect(tsAdd(0xffffffff, 961)).toBe(960);
  });

  it('extends timestamps across the wrap (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 45 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (ref, d) => {
        fc.pre(ref + d >= 0);
        expect(extendTs((ref + d) % 2 ** 32, ref)).toBe(ref + d);
      }),
      seeded(),
    );
  });
});
