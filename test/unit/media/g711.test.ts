import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { decodeAlaw, decodeUlaw, encodeAlaw, encodeUlaw, linearToAlaw, linearToUlaw } from '../../../src/media/g711.ts';

const ALL_CODES = Uint8Array.from({ length: 256 }, (_, i) => i);

function ffmpegDecode(format: 'mulaw' | 'alaw', bytes: Uint8Array): Int16Array {
  const out = execFileSync('ffmpeg', ['-v', 'error', '-f', format, '-ar', '8000', '-ac', '1', '-i', 'pipe:0', '-f', 's16le', 'pipe:1'], {
    input: bytes,
  });
  return new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
}

describe('G.711 (ITU-T G.711)', () => {
  it('µ-law decodes the reference values', () => {
    const d = decodeUlaw(Uint8Array.of(0xff, 0x7f, 0x00, 0x80, 0xfe));
    expect([...d]).toEqual([0, 0, -32124, 32124, 8]);
  });

  it('A-law decodes the reference values', () => {
    const d = decodeAlaw(Uint8Array.of(0xd5, 0x55, 0x2a, 0xaa));
    expect([...d]).toEqual([8, -8, -32256, 32256]);
  });

  it('decodes all 256 codes exactly as ffmpeg does', () => {
    expect([...decodeUlaw(ALL_CODES)]).toEqual([...ffmpegDecode('mulaw', ALL_CODES)]);
    expect([...decodeAlaw(ALL_CODES)]).toEqual([...ffmpegDecode('alaw', ALL_CODES)]);
  });

  it('writes into a caller buffer without allocating', () => {
    const out = new Int16Array(4);
    expect(decodeUlaw(Uint8Array.of(0xff, 0x00), out)).toBe(out);
    expect(() => decodeUlaw(new Uint8Array(5), out)).toThrow(/at least as long/);
  });

  it('encode then decode keeps the companding error within one quantisation step', () => {
    for (let s = -32768; s <= 32767; s += 7) {
      const u = decodeUlaw(Uint8Array.of(linearToUlaw(s)))[0]!;
      const a = decodeAlaw(Uint8Array.of(linearToAlaw(s)))[0]!;
      // Step size grows with the segment: about 1/16 of the magnitude, at least 2-4 LSB near 0.
      expect(Math.abs(u - s)).toBeLessThanOrEqual(Math.max(8, Math.abs(s) / 14));
      expect(Math.abs(a - s)).toBeLessThanOrEqual(Math.max(16, Math.abs(s) / 14));
    }
  });

  it('encoders are the inverse of the decoders on every code point', () => {
    const u = decodeUlaw(ALL_CODES);
    const a = decodeAlaw(ALL_CODES);
    const reU = decodeUlaw(encodeUlaw(u));
    const reA = decodeAlaw(encodeAlaw(a));
    expect([...reU]).toEqual([...u]);
    expect([...reA]).toEqual([...a]);
  });
});
