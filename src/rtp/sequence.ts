/**
 * Wrap-around arithmetic for RTP's 16-bit sequence numbers and 32-bit
 * timestamps (RFC 3550 §5.1, Appendix A.1).
 *
 * RTP counters wrap: seq after 65535 is 0, ts after 2^32-1 is 0. Comparing
 * them with `<` breaks at the wrap, so everything here works on signed
 * differences ("which is closer going forward or backward") and on
 * *extended* values: plain JS numbers that keep counting past the wrap
 * (cycles * 2^16 + seq), exact up to 2^53.
 */

export const SEQ_MOD = 0x1_0000;
export const TS_MOD = 0x1_0000_0000;

/** Signed distance from `a` to `b` in 16-bit sequence space, in [-32768, 32767]. */
export function seqDiff(b: number, a: number): number {
  return (((b - a) & 0xffff) << 16) >> 16;
}

/** True when `b` comes after `a` (modulo 2^16, RFC 1982 serial-number style). */
export function seqNewer(b: number, a: number): boolean {
  return seqDiff(b, a) > 0;
}

/** `seq + n` modulo 2^16. */
export function seqAdd(seq: number, n: number): number {
  return (seq + n) & 0xffff;
}

/**
 * Extends a 16-bit sequence number to the extended value nearest to
 * `referenceExt` (an extended sequence number seen before, typically the
 * highest). This is the "cycles" bookkeeping of RFC 3550 A.1 written as a
 * pure function: a packet a little behind the reference stays in the
 * current cycle, a packet just past 65535 -> 0 moves into the next one.
 */
export function extendSeq(seq: number, referenceExt: number): number {
  return referenceExt + seqDiff(seq & 0xffff, referenceExt & 0xffff);
}

/** Signed distance from `a` to `b` in 32-bit timestamp space, in [-2^31, 2^31). */
export function tsDiff(b: number, a: number): number {
  return (b - a) | 0;
}

/** `ts + n` modulo 2^32, as an unsigned number. */
export function tsAdd(ts: number, n: number): number {
  return (ts + n) >>> 0;
}

/** Extends a 32-bit RTP timestamp to the extended value nearest to `referenceExt`. */
export function extendTs(ts: number, referenceExt: number): number {
  return referenceExt + tsDiff(ts >>> 0, referenceExt >>> 0);
}

/**
 * Stateful unwrapper for a stream of 16-bit sequence numbers (or 32-bit
 * timestamps with `bits = 32`): returns monotonic-ish extended values. The
 * reference only moves forward, so a late packet from before a wrap is
 * placed in the previous cycle, as RFC 3550 A.1 does with `cycles`.
 */
export class Unwrapper {
  readonly #bits: 16 | 32;
  #highest: number | undefined;

  constructor(bits: 16 | 32 = 16) {
    this.#bits = bits;
  }

  /** Extended value of the highest input so far, undefined before the first. */
  get highest(): number | undefined {
    return this.#highest;
  }

  unwrap(value: number): number {
    if (this.#highest === undefined) {
      this.#highest = this.#bits === 16 ? value & 0xffff : value >>> 0;
      return this.#highest;
    }
    const ext = this.#bits === 16 ? extendSeq(value, this.#highest) : extendTs(value, this.#highest);
    if (ext > this.#highest) this.#highest = ext;
    return ext;
  }

  reset(): void {
    this.#highest = undefined;
  }
}
