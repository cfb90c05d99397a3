/**
 * G.711 µ-law (PCMU) and A-law (PCMA) companding (ITU-T G.711; RTP payload
 * types 0 and 8, RFC 3551 §4.5.14). One byte per sample at 8 kHz.
 *
 * Decoding is on the hot path for SIP legs, so it is a 256-entry table
 * lookup per byte into a caller-provided output when given (no allocation).
 * Encoding is only needed for test fixtures and load generators; it follows
 * the classic segment search of the reference implementation (Sun g711.c).
 */

import { OptinError } from '../errors/OptinError.ts';

const ULAW_BIAS = 0x84; // 132: shifts the µ-law segments so segment 0 starts at 0
const ULAW_CLIP = 32635; // largest magnitude that still fits after adding the bias

function ulawToLinear(u: number): number {
  // µ-law bytes are transmitted inverted (G.711 §A: "all bits inverted").
  const v = ~u & 0xff;
  const exponent = (v >> 4) & 0x07;
  const mantissa = v & 0x0f;
  const magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
  return v & 0x80 ? -magnitude : magnitude;
}

function alawToLinear(a: number): number {
  // A-law bytes have their even bits inverted (XOR 0x55) on the wire.
  const v = a ^ 0x55;
  const exponent = (v >> 4) & 0x07;
  const mantissa = v & 0x0f;
  let magnitude = (mantissa << 4) + 8; // +8: reconstruct at the middle of the step
  if (exponent !== 0) magnitude = (magnitude + 0x100) << (exponent - 1);
  // A-law's sign bit is 1 for positive values (the opposite of µ-law).
  return v & 0x80 ? magnitude : -magnitude;
}

const ULAW_TABLE = new Int16Array(256);
const ALAW_TABLE = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  ULAW_TABLE[i] = ulawToLinear(i);
  ALAW_TABLE[i] = alawToLinear(i);
}

function decodeWith(table: Int16Array, src: Uint8Array, out?: Int16Array): Int16Array {
  const dst = out ?? new Int16Array(src.length);
  if (dst.length < src.length) throw new OptinError('G711_OUTPUT_TOO_SHORT', 'G.711 decode: the output buffer must be at least as long as the input');
  for (let i = 0; i < src.length; i++) dst[i] = table[src[i]!]!;
  return dst;
}

/** Decodes µ-law bytes to 16-bit linear PCM; writes into `out` when given (must be long enough). */
export function decodeUlaw(src: Uint8Array, out?: Int16Array): Int16Array {
  return decodeWith(ULAW_TABLE, src, out);
}

/** Decodes A-law bytes to 16-bit linear PCM; writes into `out` when given (must be long enough). */
export function decodeAlaw(src: Uint8Array, out?: Int16Array): Int16Array {
  return decodeWith(ALAW_TABLE, src, out);
}

/** Segment (exponent): how many of the doubling boundaries first, 2*first+1, ... `value` exceeds. */
function segmentOf(value: number, firstBoundary: number): number {
  let seg = 0;
  for (let bound = firstBoundary; seg < 8 && value > bound; bound = (bound << 1) | 1) seg++;
  return seg;
}

export function linearToUlaw(sample: number): number {
  let s = Math.max(-32768, Math.min(32767, Math.round(sample)));
  const sign = s < 0 ? 0x80 : 0;
  if (s < 0) s = -s;
  if (s > ULAW_CLIP) s = ULAW_CLIP;
  s += ULAW_BIAS;
  const exponent = segmentOf(s, 0xff);
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | ((exponent & 7) << 4) | mantissa) & 0xff;
}

export function linearToAlaw(sample: number): number {
  // A-law quantises 13-bit values: drop the 3 low bits first (arithmetic shift keeps the sign).
  let v = Math.max(-32768, Math.min(32767, Math.round(sample))) >> 3;
  let mask: number;
  if (v >= 0) mask = 0xd5; // sign bit set for positive values, then the 0x55 inversion
  else {
    mask = 0x55;
    v = -v - 1; // one's-complement magnitude, as in the reference code
  }
  const exponent = segmentOf(v, 0x1f);
  if (exponent >= 8) return 0x7f ^ mask; // clip to the largest code
  const mantissa = exponent < 2 ? (v >> 1) & 0x0f : (v >> exponent) & 0x0f;
  return ((exponent << 4) | mantissa) ^ mask;
}

/** Encodes 16-bit PCM to µ-law (for fixtures and load generation, not the hot path). */
export function encodeUlaw(pcm: Int16Array | readonly number[]): Uint8Array {
  const out = new Uint8Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = linearToUlaw(pcm[i]!);
  return out;
}

/** Encodes 16-bit PCM to A-law (for fixtures and load generation, not the hot path). */
export function encodeAlaw(pcm: Int16Array | readonly number[]): Uint8Array {
  const out = new Uint8Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = linearToAlaw(pcm[i]!);
  return out;
}
