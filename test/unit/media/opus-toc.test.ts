import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import OpusScript from 'opusscript';
import {
  OPUS_SILENCE_20MS,
  opusFrameSamples,
  opusPacketSamples,
  opusSilence,
  pushOpusSilence,
} from '../../../src/media/opusToc.ts';
import { OggOpusWriter } from '../../../src/media/OggOpusWriter.ts';
import { decodeToFloat32, rmsDb } from '../../support/audio.ts';
import { ffmpegDecodeErrors } from '../../support/ogg.ts';
import { seeded } from '../../support/property.ts';

const toc = (config: number, stereo: boolean, code: number): number => (config << 3) | (stereo ? 4 : 0) | code;

describe('Opus TOC durations (RFC 6716 §3.1)', () => {
  it('maps every configuration to its frame size', () => {
    const ms = (config: number): number => opusFrameSamples(toc(config, false, 0)) / 48;
    expect([0, 1, 2, 3].map(ms)).toEqual([10, 20, 40, 60]); // SILK NB
    expect([8, 9, 10, 11].map(ms)).toEqual([10, 20, 40, 60]); // SILK WB
    expect([12, 13, 14, 15].map(ms)).toEqual([10, 20, 10, 20]); // Hybrid SWB/FB
    expect([16, 17, 18, 19].map(ms)).toEqual([2.5, 5, 10, 20]); // CELT NB
    expect([28, 29, 30, 31].map(ms)).toEqual([2.5, 5, 10, 20]); // CELT FB
  });

  it('counts frames for codes 0-3', () => {
    // code 0: one frame
    expect(opusPacketSamples(Uint8Array.of(toc(1, false, 0), 1, 2, 3))).toBe(960);
    // code 1: two equal frames (even body)
    expect(opusPacketSamples(Uint8Array.of(toc(1, true, 1), 1, 2, 3, 4))).toBe(1920);
    // code 2: two frames, first length coded in one byte
    expect(opusPacketSamples(Uint8Array.of(toc(31, false, 2), 2, 9, 9, 8))).toBe(1920);
    // code 2 with a two-byte length: 252 + 4 * 1 = 256 bytes first frame
    expect(opusPacketSamples(Uint8Array.of(toc(31, false, 2), 252, 1, ...new Uint8Array(256 + 10)))).toBe(1920);
    // code 3 CBR: 3 frames of 2 bytes
    expect(opusPacketSamples(Uint8Array.of(toc(31, false, 3), 3, 1, 1, 2, 2, 3, 3))).toBe(2880);
    // code 3 VBR: 2 frames, first 1 byte, second takes the rest
    expect(opusPacketSamples(Uint8Array.of(toc(16, false, 3), 0x80 | 2, 1, 7, 8, 8))).toBe(240);
    // code 3 with padding: 255 = 254 bytes + next length byte (1) => 255 padding bytes
    const padded = Uint8Array.of(toc(16, false, 3), 0x40 | 2, 255, 1, 5, 5, ...new Uint8Array(255));
    expect(opusPacketSamples(padded)).toBe(240);
    // 120 ms is the limit: 6 x 20 ms ok, 48 x 2.5 ms ok
    expect(opusPacketSamples(Uint8Array.of(toc(31, false, 3), 6))).toBe(5760);
    expect(opusPacketSamples(Uint8Array.of(toc(16, false, 3), 48))).toBe(5760);
  });

  it.each<[string, number[]]>([
    ['empty packet (R1)', []],
    ['code 1 with an odd body (R3)', [toc(1, false, 1), 1, 2, 3]],
    ['code 2 without its length byte', [toc(1, false, 2)]],
    ['code 2 first frame longer than the packet (R4)', [toc(1, false, 2), 10, 1]],
    ['code 2 two-byte length truncated', [toc(1, false, 2), 253]],
    ['code 3 without the count byte', [toc(1, false, 3)]],
    ['code 3 with zero frames', [toc(1, false, 3), 0]],
    ['code 3 longer than 120 ms (R5)', [toc(31, false, 3), 7]],
    ['code 3 CBR body not divisible (R6)', [toc(31, false, 3), 2, 1, 2, 3]],
    ['code 3 padding past the end', [toc(31, false, 3), 0x40 | 1, 200, 1]],
    ['code 3 VBR lengths past the end (R7)', [toc(31, false, 3), 0x80 | 2, 50, 1]],
  ])('rejects %s', (_name, bytes) => {
    expect(opusPacketSamples(Uint8Array.from(bytes))).toBe(-1);
  });

  it('rejects a frame longer than 1275 bytes (R2)', () => {
    expect(opusPacketSamples(new Uint8Array(1277).fill(toc(31, false, 0), 0, 1))).toBe(-1);
    expect(opusPacketSamples(new Uint8Array(1276).fill(toc(31, false, 0), 0, 1))).toBe(960);
  });

  it('never throws and returns a multiple of 2.5 ms up to 120 ms, or -1 (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (p) => {
        const n = opusPacketSamples(p);
        expect(n === -1 || (n > 0 && n % 120 === 0 && n <= 5760)).toBe(true);
      }),
      seeded({ numRuns: 3000 }),
    );
  });
});

describe('Opus silence packets', () => {
  it('OPUS_SILENCE_20MS is the classic CELT silence frame', () => {
    expect([...OPUS_SILENCE_20MS]).toEqual([0xf8, 0xff, 0xfe]);
    expect(opusPacketSamples(OPUS_SILENCE_20MS)).toBe(960);
  });

  it('covers any multiple of 2.5 ms exactly, with few packets', () => {
    for (let samples = 0; samples <= 20 * 960; samples += 120) {
      const packets = opusSilence(samples);
      expect(packets.reduce((n, p) => n + opusPacketSamples(p), 0)).toBe(samples);
      // 60 ms packets, then at most a 20/40 ms one and one each of 10/5/2.5 ms.
      expect(packets.length).toBeLessThanOrEqual(Math.ceil(samples / 2880) + 4);
    }
    expect(() => opusSilence(100)).toThrow(/multiple of 120/);
    const out: Buffer[] = [];
    expect(pushOpusSilence(out, 1000)).toBe(40); // 960 covered, 40 left over
  });

  it('decodes to digital silence with libopus (opusscript)', () => {
    const dec = new OpusScript(48_000, 1, OpusScript.Application.AUDIO);
    try {
      for (const samples of [120, 240, 480, 960, 1920, 2880, 4200]) {
        let decoded = 0;
        for (const p of opusSilence(samples)) {
          const pcm = dec.decode(p);
          const s16 = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
          decoded += s16.length;
          expect(s16.every((v) => v === 0)).toBe(true);
        }
        expect(decoded).toBe(samples);
      }
    } finally {
      dec.delete();
    }
  });

  it('decodes cleanly and silently with ffmpeg inside an Ogg file', () => {
    const w = new OggOpusWriter({ serial: 7, preSkip: 0, inputSampleRate: 48_000 });
    for (const samples of [120, 240, 480, 960, 1920, 2880, 5760, 12_360]) {
      for (const p of opusSilence(samples)) w.addPacket(p, opusPacketSamples(p));
    }
    const file = Buffer.concat([w.header(), w.finish()]);
    expect(ffmpegDecodeErrors(file)).toBe('');
    const pcm = decodeToFloat32(file);
    expect(pcm.length).toBe(120 + 240 + 480 + 960 + 1920 + 2880 + 5760 + 12_360);
    expect(rmsDb(pcm)).toBeLessThan(-120);
  });
});
