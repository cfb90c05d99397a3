/**
 * Open segment files (src/media/OpenSegmentFiles.ts): closed Ogg pages kept on disk encrypted,
 * read back whole, removed when taken or dropped, and in memory when the disk refuses them.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { BlockPool } from '../../../src/media/BlockPool.ts';
import { OpenSegmentFiles } from '../../../src/media/OpenSegmentFiles.ts';
import { OggOpusWriter } from '../../../src/media/OggOpusWriter.ts';
import { Segmenter } from '../../../src/media/Segmenter.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

const roots: string[] = [];
function dir(): string {
  const root = mkdtempSync(join(tmpdir(), 'optin-open-seg-'));
  roots.push(root);
  return join(root, 't0');
}
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

/** A page-sized run of bytes with a recognisable plaintext. */
function page(i: number, n = 12_000): Buffer {
  const b = Buffer.alloc(n, 0x41 + (i % 26));
  b.write(`voice-of-page-${i}`, 0, 'ascii');
  return b;
}

describe('open segment files', () => {
  it('keep pages encrypted on disk and give them back whole, after a prefix, then remove the file', () => {
    const d = dir();
    const files = new OpenSegmentFiles({ dir: d, pool: new BlockPool() });
    expect(statSync(d).mode & 0o777).toBe(0o700);
    const store = files.create();
    const pages = [page(0), page(1, 9_000), page(2, 1)];
    for (const p of pages) store.append(p);
    expect(store.length).toBe(21_001);
    const [name] = readdirSync(d);
    expect(statSync(join(d, name!)).mode & 0o777).toBe(0o600);
    const onDisk = readFileSync(join(d, name!));
    expect(onDisk.length).toBe(21_001 + 3 * 16); // one GCM tag per page
    expect(onDisk.includes(Buffer.from('voice-of-page'))).toBe(false); // never plaintext at rest
    expect(files.stats.open).toBe(1);

    const out = store.take(Buffer.from('HEAD'));
    expect(out.equals(Buffer.concat([Buffer.from('HEAD'), ...pages]))).toBe(true);
    expect(readdirSync(d)).toEqual([]);
    expect(files.stats).toEqual({ open: 0, fallbacks: 0 });
    expect(store.length).toBe(0);
  });

  it('a dropped store (an erased run) removes its file at once', () => {
    const d = dir();
    const files = new OpenSegmentFiles({ dir: d, pool: new BlockPool() });
    const store = files.create();
    store.append(page(0));
    expect(readdirSync(d).length).toBe(1);
    store.discard();
    expect(readdirSync(d)).toEqual([]);
    expect(files.stats.open).toBe(0);
  });

  it('a store that was never written creates no file', () => {
    const d = dir();
    const files = new OpenSegmentFiles({ dir: d, pool: new BlockPool() });
    expect(files.create().take(Buffer.from('H')).toString()).toBe('H');
    expect(readdirSync(d)).toEqual([]);
  });

  it('refuses a file changed, cut short or with records swapped on disk', () => {
    for (const harm of ['flip', 'truncate', 'swap'] as const) {
      const d = dir();
      const files = new OpenSegmentFiles({ dir: d, pool: new BlockPool() });
      const store = files.create();
      store.append(page(0, 100));
      store.append(page(1, 100));
      const file = join(d, readdirSync(d)[0]!);
      const bytes = readFileSync(file);
      if (harm === 'flip') bytes[5]! ^= 1;
      const changed =
        harm === 'truncate' ? bytes.subarray(0, bytes.length - 1) : harm === 'swap' ? Buffer.concat([bytes.subarray(116), bytes.subarray(0, 116)]) : bytes;
      writeFileSync(file, changed);
      let caught: unknown;
      try {
        store.take();
      } catch (err) {
        caught = err;
      }
      expect(isOptinError(caught) && caught.code === 'OPEN_SEGMENT_CORRUPT', `${harm}: ${String(caught)}`).toBe(true);
      expect(existsSync(file), `${harm}: the file is removed even so`).toBe(false);
    }
  });

  it('keeps the pages in memory when the disk refuses a file; a file lost behind its back fails loudly', () => {
    const d = dir();
    const told: Error[] = [];
    const files = new OpenSegmentFiles({ dir: d, pool: new BlockPool(), onFallback: (e) => told.push(e) });
    const a = files.create();
    const b = files.create();
    a.append(page(0));
    // The directory disappears with a's first page (as a failed disk would refuse every write).
    rmSync(d, { recursive: true, force: true });
    b.append(page(2));
    b.append(page(3));
    expect(told.length).toBe(1);
    expect(b.length).toBe(24_000);
    expect(b.take().equals(Buffer.concat([page(2), page(3)]))).toBe(true);
    // a's page 0 went with the directory: an error, not a segment silently missing its start.
    let caught: unknown;
    try {
      a.append(page(1));
    } catch (err) {
      caught = err;
    }
    expect(isOptinError(caught) && caught.code === 'OPEN_SEGMENT_CORRUPT', String(caught)).toBe(true);
    expect(told.length).toBe(1); // told once per directory, not per file
    expect(files.stats.fallbacks).toBe(2);
  });

  it('clears files left by an earlier process when a thread opens its directory', () => {
    const d = dir();
    new OpenSegmentFiles({ dir: d, pool: new BlockPool() }).create().append(page(0));
    expect(readdirSync(d).length).toBe(1);
    new OpenSegmentFiles({ dir: d, pool: new BlockPool() });
    expect(readdirSync(d)).toEqual([]);
  });

  it('a segment written through files is byte for byte the segment written in memory', () => {
    const files = new OpenSegmentFiles({ dir: dir(), pool: new BlockPool() });
    const packets = Array.from({ length: 1500 }, (_, i) => Buffer.from([0x78, i & 0xff, (i * 7) & 0xff, 1, 2, 3, 4, 5]));
    const write = (withFiles: boolean): Buffer[] => {
      const seg = new Segmenter({ serial: 7, segmentSamples: 48_000 * 12, ...(withFiles ? { pageStore: () => files.create() } : {}) });
      const out: Buffer[] = [];
      for (const p of packets) for (const s of seg.push({ kind: 'packet', payload: p, samples: 960 })) out.push(s.ogg);
      const last = seg.close();
      if (last) out.push(last.ogg);
      return out;
    };
    const inMemory = write(false);
    const onDisk = write(true);
    expect(onDisk.length).toBe(inMemory.length);
    onDisk.forEach((ogg, i) => expect(ogg.equals(inMemory[i]!)).toBe(true));
    expect(readdirSync(files.dir)).toEqual([]);
  });

  it('an OggOpusWriter discarded mid-segment leaves no file', () => {
    const files = new OpenSegmentFiles({ dir: dir(), pool: new BlockPool() });
    const w = new OggOpusWriter({ serial: 1, preSkip: 0, inputSampleRate: 48_000, maxPageSamples: 960 * 10, pageStore: files.create() });
    for (let i = 0; i < 100; i++) w.addPacket(Buffer.from([0x78, i]), 960);
    expect(readdirSync(files.dir).length).toBe(1);
    w.discard();
    expect(readdirSync(files.dir)).toEqual([]);
  });
});
