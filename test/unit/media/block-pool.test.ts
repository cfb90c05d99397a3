/**
 * The pool blocks an open segment lives in (src/media/BlockPool.ts): bytes come out as appended,
 * blocks go back zeroed, and an Ogg writer gives back every block it took whether its segment is
 * finished or discarded.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { BlockBytes, BlockPool } from '../../../src/media/BlockPool.ts';
import { OGG_BLOCKS, OggOpusWriter } from '../../../src/media/OggOpusWriter.ts';
import { Segmenter } from '../../../src/media/Segmenter.ts';
import { readOggPages } from '../../../src/media/OggOpusReader.ts';

describe('BlockBytes', () => {
  it('gives back exactly what was appended, across block boundaries, and returns its blocks', () => {
    const pool = new BlockPool(256, 1024);
    const bytes = new BlockBytes(pool);
    const parts = [randomBytes(10), randomBytes(300), randomBytes(0), randomBytes(700), randomBytes(1)];
    for (const p of parts) bytes.append(p);
    expect(bytes.length).toBe(1011);
    expect(pool.stats.blocksInUse).toBe(4);
    expect(bytes.take().equals(Buffer.concat(parts))).toBe(true);
    expect(pool.stats.blocksInUse).toBe(0);
    // One 1 KB slab of four 256-byte blocks held it all.
    expect(pool.stats.slabs).toBe(1);
    expect(bytes.take().length).toBe(0);
  });

  it('zeroes a block given back: a free block holds no audio', () => {
    const pool = new BlockPool(256, 256);
    const bytes = new BlockBytes(pool);
    bytes.append(Buffer.alloc(200, 0xab));
    bytes.discard();
    const again = pool.take();
    expect(again.every((b) => b === 0)).toBe(true);
  });

  it('refuses a block size too small to be useful', () => {
    expect(() => new BlockPool(16)).toThrow(RangeError);
  });
});

describe('OggOpusWriter in pool blocks', () => {
  // TOC 0x78: configuration 15 (hybrid, fullband, 20 ms), mono, one frame: 960 samples.
  const packet = Buffer.from([0x78, ...randomBytes(60)]);

  it('writes valid pages (CRCs, granules) and gives back every block on finish', () => {
    const before = OGG_BLOCKS.stats.blocksInUse;
    const w = new OggOpusWriter({ serial: 7, preSkip: 0, inputSampleRate: 48_000, maxPageSamples: 48_000 * 60 });
    for (let i = 0; i < 1000; i++) w.addPacket(packet, 960);
    expect(OGG_BLOCKS.stats.blocksInUse).toBeGreaterThan(before + 1); // 20 s of pages held in blocks
    const file = Buffer.concat([w.header(), w.finish()]);
    expect(OGG_BLOCKS.stats.blocksInUse).toBe(before);
    const pages = readOggPages(file); // checks every page's CRC
    expect(pages.at(-1)!.granule).toBe(1000 * 960);
    expect(pages.length).toBe(2 + Math.ceil(1000 / 255));
  });

  it('gives back every block when a segmenter discards its open segment, and ignores later pushes', () => {
    const before = OGG_BLOCKS.stats.blocksInUse;
    const seg = new Segmenter({ serial: 1, segmentSamples: 48_000 * 60 });
    for (let i = 0; i < 500; i++) seg.push({ kind: 'packet', payload: packet, samples: 960 });
    expect(OGG_BLOCKS.stats.blocksInUse).toBeGreaterThan(before);
    seg.discard();
    expect(OGG_BLOCKS.stats.blocksInUse).toBe(before);
    expect(seg.push({ kind: 'packet', payload: packet, samples: 960 })).toHaveLength(0);
    expect(seg.close()).toBeUndefined();
    expect(OGG_BLOCKS.stats.blocksInUse).toBe(before);
  });
});
