import { mkdtemp, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/log/logger.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import {
  bucketNames,
  dataKeyObjectKey,
  isoSeconds,
  lifecycleDays,
  manifestObjectKey,
  mediaObjectKey,
  mediaTags,
  parseMediaObjectKey,
  retentionClass,
} from '../../../src/storage/layout.ts';
import { upsertSegment, type ManifestSegment, type RecordingManifest } from '../../../src/storage/manifest.ts';
import { Spool, type SpoolItemMeta } from '../../../src/storage/Spool.ts';
import { Sweeper } from '../../../src/storage/Sweeper.ts';
import { codeOf } from '../../support/optinErrors.ts';

const logger = createLogger('silent');
const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'optin-spool-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('layout', () => {
  it('builds pseudonymous keys and parses them back', () => {
    expect(mediaObjectKey('r_0123456789abcdef', 'p-1', 7)).toBe('rec/r_0123456789abcdef/p-1/000007.ogg.sealed');
    expect(parseMediaObjectKey('rec/r_1/p-1/000007.ogg.sealed')).toEqual({ recordingId: 'r_1', participantId: 'p-1', segment: 7 });
    expect(parseMediaObjectKey('rec/r_1/p-1/7.ogg.sealed')).toBeNull();
    expect(dataKeyObjectKey('r_1', 'p1')).toBe('keys/r_1/p1.json');
    expect(manifestObjectKey('r_1')).toBe('manifests/r_1.json');
    expect(codeOf(() => mediaObjectKey('r.1', 'p', 0))).toBe('INVALID_ID');
    expect(codeOf(() => mediaObjectKey('r_1', 'p/../x', 0))).toBe('INVALID_ID');
    expect(codeOf(() => mediaObjectKey('r_1', 'p', 1_000_000))).toBe('INVALID_SEGMENT');
    expect(codeOf(() => mediaObjectKey('r_1', 'p', 1.5))).toBe('INVALID_SEGMENT');
  });

  it('bucket names: defaults, prefix, validation', () => {
    expect(bucketNames()).toEqual({ media: 'optin-media', keys: 'optin-keys', audit: 'optin-audit' });
    expect(bucketNames({ prefix: 't1-' }).media).toBe('t1-optin-media');
    expect(codeOf(() => bucketNames({ prefix: 'UPPER-' }))).toBe('CONFIG_INVALID');
    expect(codeOf(() => bucketNames({ media: 'same', keys: 'same' }))).toBe('CONFIG_INVALID');
  });

  it('tags and lifecycle days', () => {
    const tags = mediaTags({ recordingId: 'r_1', expiresAtMs: Date.UTC(2030, 0, 2, 3, 4, 5, 1), retentionSeconds: 30 * 86400 });
    expect(tags).toEqual({ 'expires-at': '2030-01-02T03:04:06Z', 'retention-class': 'training-30d', recording: 'r_1' });
    expect(retentionClass(5)).toBe('training-5s');
    expect(lifecycleDays(5)).toBe(1);
    expect(lifecycleDays(86400)).toBe(1);
    expect(lifecycleDays(86401)).toBe(2);
    expect(lifecycleDays(30 * 86400)).toBe(30);
    expect(isoSeconds(Date.UTC(2030, 0, 1))).toBe('2030-01-01T00:00:00Z');
  });
});

describe('manifest', () => {
  it('upsertSegment keeps order and never duplicates', () => {
    const m = { segments: [] as ManifestSegment[] } as RecordingManifest;
    const seg = (participantId: string, segment: number, sha = 'a'): ManifestSegment =>
      ({ participantId, segment, sha256: sha }) as ManifestSegment;
    for (const s of [seg('b', 0), seg('a', 1), seg('a', 0), seg('b', 2), seg('a', 1, 'z')]) upsertSegment(m, s);
    expect(m.segments.map((s) => `${s.participantId}${s.segment}${s.sha256}`)).toEqual(['a0a', 'a1z', 'b0a', 'b2a']);
  });
});

const meta = (i: number, recordingId = 'r_1', participantId = 'p1'): SpoolItemMeta => ({
  kind: 'media',
  bucketRole: 'media',
  objectKey: mediaObjectKey(recordingId, participantId, i),
  recordingId,
  participantId,
  segment: i,
  expiresAtMs: Date.now() + 60_000,
});

describe('Spool', () => {
  it('keeps order, survives reopen, discards incomplete items', async () => {
    const dir = await tempDir();
    const spool = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    for (let i = 0; i < 5; i++) await spool.append(meta(i), Buffer.alloc(1000, i));
    expect(spool.size()).toBe(5);
    // A torn write: a body without sidecar and a tmp file, as kill -9 could leave.
    await writeFile(join(dir, 'items', '000000000099.bin'), Buffer.alloc(10));
    await writeFile(join(dir, 'items', '000000000100.json.tmp'), '{');
    const again = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    expect(again.list().map((i) => i.segment)).toEqual([0, 1, 2, 3, 4]);
    expect((await readdir(join(dir, 'items'))).sort()).toHaveLength(10);
    expect((await again.read(again.peek()!)).equals(Buffer.alloc(1000, 0))).toBe(true);
    // New items continue after the highest sequence seen, even a discarded one.
    const next = await again.append(meta(5), Buffer.alloc(10));
    expect(next.seq).toBeGreaterThan(99);
    await again.remove(again.peek()!);
    expect(again.peek()!.segment).toBe(1);
  });

  it('detects a damaged body at open and at read', async () => {
    const dir = await tempDir();
    const spool = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    const a = await spool.append(meta(0), Buffer.alloc(100, 1));
    await spool.append(meta(1), Buffer.alloc(100, 2));
    const path = join(dir, 'items', `${String(a.seq).padStart(12, '0')}.bin`);
    const body = await readFile(path);
    body[3]! ^= 1;
    await writeFile(path, body);
    await expect(spool.read(a)).rejects.toMatchObject({ code: 'SPOOL_CORRUPT' });
    const again = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    expect(again.list().map((i) => i.segment)).toEqual([1]);
  });

  it('is bounded, reports full with hysteresis and emits changes', async () => {
    const dir = await tempDir();
    const spool = await Spool.open({ dir, maxBytes: 1024 * 1024, logger });
    const states: boolean[] = [];
    spool.on('change', (s) => states.push(s.full));
    let refused = 0;
    for (let i = 0; i < 30; i++) {
      try {
        await spool.append(meta(i), Buffer.alloc(50_000));
      } catch (err) {
        expect(isOptinError(err, 'STORAGE_UNAVAILABLE')).toBe(true);
        expect((err as { retryable: boolean }).retryable).toBe(true);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
    expect(spool.isFull()).toBe(true);
    expect(spool.bytes()).toBeLessThanOrEqual(1024 * 1024);
    await spool.remove(spool.peek()!);
    expect(spool.isFull()).toBe(true); // still above 90 %
    for (let i = 0; i < 3; i++) await spool.remove(spool.peek()!);
    expect(spool.isFull()).toBe(false);
    expect(states).toContain(true);
    expect(states.at(-1)).toBe(false);
  });

  it('removeWhere and tombstones', async () => {
    const dir = await tempDir();
    const spool = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    for (let i = 0; i < 3; i++) await spool.append(meta(i, 'r_1', 'p1'), Buffer.alloc(10));
    for (let i = 0; i < 3; i++) await spool.append(meta(i, 'r_1', 'p2'), Buffer.alloc(10));
    const gone = await spool.removeWhere((it) => it.participantId === 'p1');
    expect(gone).toHaveLength(3);
    await spool.addTombstone({ recordingId: 'r_1', participantId: 'p2', reason: 'x', actor: 'a', requestedAtMs: 1, kind: 'deletion', receiptId: 'del_1' });
    await spool.addTombstone({ recordingId: 'r_2', reason: 'x', actor: 'a', requestedAtMs: 1, kind: 'expiry', receiptId: 'del_2' });
    const again = await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger });
    expect(again.list().map((i) => i.participantId)).toEqual(['p2', 'p2', 'p2']);
    expect(again.tombstones().map((t) => t.receiptId).sort()).toEqual(['del_1', 'del_2']);
    await again.removeTombstone('r_1', 'p2');
    expect((await Spool.open({ dir, maxBytes: 2 * 1024 * 1024, logger })).tombstones()).toHaveLength(1);
  });
});

describe('Sweeper', () => {
  it('expires at the instant with one timer, from schedule and from scans', async () => {
    const expired: Array<[string, number]> = [];
    const t0 = Date.now();
    let inStore = true; // the scanned recording's manifest exists until it is expired
    const sweeper = new Sweeper({
      logger,
      scanIntervalMs: 50,
      target: {
        async *scan(isKnown) {
          if (inStore && !isKnown('scanned')) yield { recordingId: 'scanned', expiresAtMs: t0 + 150 };
        },
        async expire(id) {
          expired.push([id, Date.now()]);
          if (id === 'scanned') inStore = false;
        },
      },
    });
    sweeper.schedule('b', t0 + 250);
    sweeper.schedule('a', t0 + 100);
    sweeper.schedule('c', t0 + 10_000);
    sweeper.schedule('c', t0 + 200); // moved earlier
    sweeper.start();
    await new Promise((r) => setTimeout(r, 400));
    sweeper.close();
    expect(expired.map(([id]) => id)).toEqual(['a', 'scanned', 'c', 'b']);
    for (const [id, at] of expired) {
      const due = { a: 100, scanned: 150, c: 200, b: 250 }[id]!;
      expect(at - t0).toBeGreaterThanOrEqual(due);
      expect(at - t0).toBeLessThan(due + 60);
    }
  });

  it('retries a failed expiry', async () => {
    let calls = 0;
    const sweeper = new Sweeper({
      logger,
      retryMs: 30,
      target: {
        async *scan() {},
        async expire() {
          calls++;
          if (calls === 1) throw new Error('store down');
        },
      },
    });
    sweeper.on('error', () => undefined);
    sweeper.schedule('x', Date.now());
    sweeper.start();
    await new Promise((r) => setTimeout(r, 150));
    sweeper.close();
    expect(calls).toBe(2);
  });
});
