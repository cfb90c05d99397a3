import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Segmenter, type Segment, type SegmenterItem } from '../../../src/media/Segmenter.ts';
import { readOggOpus } from '../../../src/media/OggOpusReader.ts';
import { decodedSamples, ffmpegDecodeErrors } from '../../support/ogg.ts';

const SEC = 48_000;
let tone: Uint8Array[] = [];

beforeAll(() => {
  execFileSync('bash', [new URL('../../../media-fixtures/generate.sh', import.meta.url).pathname], { stdio: 'inherit' });
  tone = readOggOpus(readFileSync(new URL('../../../media-fixtures/generated/agent-tone.opus', import.meta.url))).packets.map((p) => p.data);
}, 120_000);

const pkt = (i: number): SegmenterItem => ({ kind: 'packet', payload: tone[i % tone.length]!, samples: 960 });

function feed(seg: Segmenter, items: readonly SegmenterItem[]): Segment[] {
  const out: Segment[] = [];
  for (const it of items) out.push(...seg.push(it));
  const last = seg.close();
  if (last) out.push(last);
  return out;
}

describe('Segmenter', () => {
  it('cuts 10 s segments on packet boundaries, each a standalone file', () => {
    const seg = new Segmenter({ serial: 100 });
    const out: Segment[] = [];
    for (let i = 0; i < 1500; i++) out.push(...seg.push(pkt(i)));
    expect(out.map((s) => [s.index, s.startSample, s.samples, s.packets, s.preSkip])).toEqual([
      [0, 0, 10 * SEC, 500, 0],
      [1, 10 * SEC, 10 * SEC, 500, 0],
      [2, 20 * SEC, 10 * SEC, 500, 0],
    ]);
    expect(seg.close()).toBeUndefined(); // nothing open: no empty file
    expect(seg.close()).toBeUndefined();
    expect(() => seg.push(pkt(0))).toThrow(/after close/);
    for (const s of out) {
      const f = readOggOpus(s.ogg);
      expect(f.serial).toBe(100 + s.index);
      expect(f.packets).toHaveLength(500);
      expect(f.complete).toBe(true);
      expect(s.opusPayloadBytes).toBe(f.packets.reduce((n, p) => n + p.data.length, 0));
    }
  });

  it('turns gaps into silence packets of the same length, carrying the sub-2.5 ms remainder', () => {
    const seg = new Segmenter({ serial: 1, segmentSamples: 60 * SEC });
    const items: SegmenterItem[] = [pkt(0), { kind: 'gap', samples: 1900 }, pkt(1), { kind: 'gap', samples: 1900 }, pkt(2), { kind: 'gap', samples: 0 }];
    const [s] = feed(seg, items);
    // 1900 = 15 x 120 + 100: 1800 as 20 + 10 + 5 + 2.5 ms; the 100 left over joins the
    // next gap: 2000 = 16 x 120 + 80, i.e. one 40 ms packet (two 20 ms frames).
    expect(s!.silenceSamples).toBe(1800 + 1920);
    expect(s!.samples).toBe(3 * 960 + 1800 + 1920);
    const f = readOggOpus(s!.ogg);
    expect(f.packets.map((p) => p.samples)).toEqual([960, 960, 480, 240, 120, 960, 1920, 960]);
    expect(seg.position).toBe(s!.samples);
  });

  it('splits filler silence at the segment boundary, so segments stay exactly on target', () => {
    const seg = new Segmenter({ serial: 1 });
    const items: SegmenterItem[] = [];
    for (let i = 0; i < 495; i++) items.push(pkt(i)); // 9.9 s
    items.push({ kind: 'gap', samples: 65 * SEC }); // a long DTX / loss stretch
    for (let i = 0; i < 10; i++) items.push(pkt(i));
    const out: Segment[] = [];
    for (const it of items) out.push(...seg.push(it));
    // 9.9 s + 65 s = 74.9 s -> 7 full segments completed by the gap itself.
    expect(out.map((s) => s.samples)).toEqual(Array(7).fill(10 * SEC));
    expect(out[0]!.silenceSamples).toBe(4800);
    expect(out[1]!.silenceSamples).toBe(10 * SEC);
    const last = seg.close()!;
    expect(last.startSample).toBe(70 * SEC);
    expect(last.samples).toBe(235_200 + 10 * 960); // 4.9 s of silence, then the 10 packets
    // A silent segment is tiny: 60 ms packets of 8 bytes.
    expect(out[2]!.ogg.length).toBeLessThan(2000);
  });

  it('puts the pre-skip on the first segment only and continues index/position across runs', () => {
    const a = feed(new Segmenter({ serial: 1, preSkip: 312, inputSampleRate: 8000, segmentSamples: 2 * SEC }), Array.from({ length: 250 }, (_, i) => pkt(i)));
    expect(a.map((s) => [s.index, s.preSkip])).toEqual([[0, 312], [1, 0], [2, 0]]);
    expect(readOggOpus(a[0]!.ogg).head).toMatchObject({ preSkip: 312, inputSampleRate: 8000 });
    expect(readOggOpus(a[1]!.ogg).head.preSkip).toBe(0);
    const next = new Segmenter({ serial: 9, preSkip: 312, startIndex: 3, startSample: 5 * SEC, segmentSamples: 2 * SEC });
    const b = feed(next, [pkt(0), pkt(1)]);
    expect(b.map((s) => [s.index, s.startSample, s.preSkip])).toEqual([[3, 5 * SEC, 312]]);
    expect(next.nextIndex).toBe(4);
  });

  it('every segment decodes with ffmpeg with nothing on stderr, to its length minus pre-skip', () => {
    const items: SegmenterItem[] = [];
    for (let i = 0; i < 600; i++) items.push(i % 50 === 7 ? { kind: 'gap', samples: 2345 } : pkt(i));
    const out = feed(new Segmenter({ serial: 5, preSkip: 312, segmentSamples: 5 * SEC }), items);
    expect(out.length).toBeGreaterThan(2);
    for (const s of out) {
      expect(ffmpegDecodeErrors(s.ogg)).toBe('');
      expect(decodedSamples(s.ogg)).toBe(s.samples - s.preSkip);
    }
  });

  it('rejects a nonsense segment length', () => {
    expect(() => new Segmenter({ serial: 1, segmentSamples: 10 })).toThrow(/segmentSamples/);
  });
});
