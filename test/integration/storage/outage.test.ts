import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { createS3Client } from '../../../src/storage/s3Endpoint.ts';
import { manifestObjectKey, mediaObjectKey, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import type { DeletionReceipt, RecordingStoreOptions, SegmentInput } from '../../../src/storage/types.ts';
import { MemoryAudit, fakeOgg as fakeOggOfSize, readTrack, segMeta as baseSegMeta } from '../../support/storageFixtures.ts';
import type { SpoolState } from '../../../src/storage/types.ts';
import { useBuckets } from '../../support/buckets.ts';
import { s3Config } from '../../support/s3.ts';
import { TcpProxy } from '../../support/tcpProxy.ts';

/**
 * Durability against the real S3 server: outages (store refused or black-holed through a TCP
 * proxy we cut), a full spool, a deletion during an outage, and a kill -9 mid-recording.
 * OPTIN_OUTAGE_SECONDS (default 60) sets the long outage; everything else stays short.
 */

const OUTAGE_SECONDS = Number(process.env.OPTIN_OUTAGE_SECONDS ?? 60);
const logger = createLogger('silent');
const k1 = Keyring.generateKeyBase64();
const keyring = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });

// The outage tests move ~10 s segments of 32 kbit/s Opus (40 KB each).
const fakeOgg = (recordingId: string, participantId: string, segment: number): Buffer => fakeOggOfSize(recordingId, participantId, segment, 40_000);
const segMeta = (recordingId: string, participantId: string, segment: number): SegmentInput =>
  baseSegMeta(recordingId, participantId, segment, { opusPayloadBytes: 39_000, quality: { lostPackets: 0 } });

const s3Buckets = useBuckets();
let direct: Client;
const cleanup: Array<() => Promise<void>> = [];

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'optin-outage-'));
  cleanup.push(() => rm(d, { recursive: true, force: true }));
  return d;
}

/** Buckets with versioning on the media bucket: a second PUT of a key would show as a second version. */
async function versionedBuckets(): Promise<BucketNames> {
  const b = s3Buckets.layout();
  await direct.makeBucket(b.media, 'us-east-1');
  await direct.setBucketVersioning(b.media, { Status: 'Enabled' });
  return b;
}

async function startProxy(): Promise<{ proxy: TcpProxy; client: Client }> {
  const cfg = s3Config();
  const proxy = await TcpProxy.toEndpoint(cfg.endpoint);
  cleanup.push(() => proxy.close());
  return { proxy, client: createS3Client({ ...cfg, endpoint: proxy.endpointFor(cfg.endpoint) }) };
}

async function openStore(over: Partial<RecordingStoreOptions> & Pick<RecordingStoreOptions, 'client' | 'buckets'>): Promise<RecordingStore> {
  const store = await RecordingStore.open({
    keyring,
    spoolDir: await tempDir(),
    spoolMaxBytes: 256 * 1024 * 1024,
    logger,
    nodeId: `n${randomBytes(4).toString('hex')}`,
    uploadTimeoutMs: 1000,
    retryMinMs: 100,
    retryMaxMs: 1000,
    ...over,
  });
  cleanup.push(async () => void (await store.close()));
  return store;
}

async function begin(store: RecordingStore, recordingId: string): Promise<void> {
  await store.beginRecording({
    recordingId,
    callId: `c_${recordingId.slice(2)}`,
    startedAt: Date.now(),
    participants: [
      { participantId: 'pa', role: 'agent', subjectId: 's_agent' },
      { participantId: 'pc', role: 'customer', subjectId: 's_cust' },
    ],
    consentEvidence: [{ subjectId: 's_cust', method: 'dtmf', infoVersion: 'v3' }],
  });
}

/** Every version of every object under a prefix: key -> number of versions. */
async function versionsUnder(bucket: string, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of direct.listObjects(bucket, prefix, true, { IncludeVersion: true }) as AsyncIterable<{ name?: string }>) {
    if (o.name) out.set(o.name, (out.get(o.name) ?? 0) + 1);
  }
  return out;
}

/** No file in the spool holds a recognisable piece of plaintext. */
async function assertNoPlaintext(spoolDir: string, samples: Buffer[]): Promise<number> {
  const files = await readdir(join(spoolDir, 'items'));
  for (const f of files) {
    const body = await readFile(join(spoolDir, 'items', f));
    for (const s of samples) expect(body.includes(s.subarray(4, 68))).toBe(false);
  }
  return files.length;
}

beforeAll(() => {
  direct = s3Buckets.client;
});

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
});

describe('store outage', () => {
  it(
    `keeps recording through a ${OUTAGE_SECONDS} s outage: spooled, then drained exactly once; a deletion during it removes spooled copies`,
    async () => {
      const buckets = await versionedBuckets();
      const { proxy, client } = await startProxy();
      const audit = new MemoryAudit();
      const spoolEvents: SpoolState[] = [];
      const spoolDir = await tempDir();
      const store = await openStore({ client, buckets, audit, spoolDir });
      store.on('spoolchange', (s) => spoolEvents.push(s));
      const A = `r_${randomBytes(8).toString('hex')}`;
      const B = `r_${randomBytes(8).toString('hex')}`;
      await begin(store, A);
      await begin(store, B);
      const put = async (rid: string, p: string, seg: number): Promise<string> => (await store.putSegment(segMeta(rid, p, seg), fakeOgg(rid, p, seg))).stored;
      for (let seg = 0; seg < 2; seg++) {
        expect(await put(A, 'pa', seg)).toBe('uploaded');
        expect(await put(A, 'pc', seg)).toBe('uploaded');
        expect(await put(B, 'pa', seg)).toBe('uploaded');
      }

      await proxy.cut();
      const t0 = Date.now();
      // ~120 rounds of two 40 KB segments, whatever the outage length.
      const cadenceMs = Math.max(50, Math.floor((OUTAGE_SECONDS * 1000) / 120));
      let seg = 2;
      let deletion: Awaited<ReturnType<RecordingStore['deleteRecording']>> | undefined;
      let bSeg = 2;
      const stored: string[] = [];
      while (Date.now() - t0 < OUTAGE_SECONDS * 1000) {
        stored.push(await put(A, 'pa', seg), await put(A, 'pc', seg));
        seg++;
        if (deletion === undefined) {
          if (Date.now() - t0 < (OUTAGE_SECONDS * 1000) / 3) {
            stored.push(await put(B, 'pa', bSeg++));
          } else {
            expect(store.spoolState().items).toBeGreaterThan(0);
            deletion = await store.deleteRecording(B, { reason: 'agent-request', actor: 'tl_1' });
            // Spooled copies of B are gone at once, whatever the store's state.
            const sidecars = await readdir(join(spoolDir, 'items'));
            for (const f of sidecars.filter((n) => n.endsWith('.json'))) {
              expect(JSON.parse(await readFile(join(spoolDir, 'items', f), 'utf8')).recordingId).not.toBe(B);
            }
            await expect(store.putSegment(segMeta(B, 'pa', bSeg), fakeOgg(B, 'pa', bSeg))).rejects.toMatchObject({ code: 'RECORDING_DELETED' });
          }
        }
        await sleep(cadenceMs);
      }
      expect(stored.every((s) => s === 'spooled')).toBe(true);
      expect(deletion).toMatchObject({ complete: false, manifest: 'pending' });
      expect(deletion!.spool.itemsRemoved).toBe(bSeg - 2); // B's spooled segments (its key went up before the cut)
      expect(deletion!.dataKeys).toEqual([expect.objectContaining({ participantId: 'pa', destroyed: ['memory'] })]);
      const spooledFiles = await assertNoPlaintext(spoolDir, [fakeOgg(A, 'pa', 2), fakeOgg(A, 'pc', 3)]);
      expect(spooledFiles).toBe(2 * 2 * (seg - 2));
      const spooledCount = store.spoolState().items;
      console.log(`[storage] outage ${OUTAGE_SECONDS} s: ${stored.length} segments spooled (${store.spoolBytes()} B spool), B deleted during outage`);

      const tRestore = Date.now();
      await proxy.restore();
      await store.drained(120_000);
      console.log(`[storage] drained ${spooledCount} spooled items in ${Date.now() - tRestore} ms after the store returned`);

      // Exactly once: one version per key, every segment present.
      const versions = await versionsUnder(buckets.media, `rec/${A}/`);
      expect(versions.size).toBe(2 * seg);
      expect([...versions.values()].every((n) => n === 1)).toBe(true);
      expect(store.stats().drained).toBe(spooledCount);
      // B is gone everywhere, all versions, and the completion is audited.
      expect((await versionsUnder(buckets.media, `rec/${B}/`)).size).toBe(0);
      expect((await versionsUnder(buckets.keys, `keys/${B}/`)).size).toBe(0);
      expect((await versionsUnder(buckets.keys, manifestObjectKey(B))).size).toBe(0);
      expect(audit.entries.map((e) => `${e.type}:${e.subjects.recordingId === B ? 'B' : 'A'}`)).toEqual(['recording.deleted:B', 'recording.deletion-completed:B']);
      expect(audit.entries[1]!.details).toMatchObject({ receiptId: deletion!.receiptId, complete: true, manifest: 'deleted' });
      expect(audit.entries[1]!.details.mediaObjects.count).toBe(2);

      const manifest = await store.endRecording(A);
      expect(manifest.segments).toHaveLength(2 * seg);
      for (const p of ['pa', 'pc']) {
        const track = await readTrack(store, A, p);
        expect(track.map((t) => t.segment)).toEqual(Array.from({ length: seg }, (_, i) => i));
        for (const t of track) expect(t.ogg.equals(fakeOgg(A, p, t.segment))).toBe(true);
      }
      expect(spoolEvents.some((e) => e.items > 0)).toBe(true);
      expect(spoolEvents.at(-1)!.items).toBe(0);
      expect(await readdir(join(spoolDir, 'items'))).toEqual([]);
    },
    (OUTAGE_SECONDS + 120) * 1000,
  );

  it('a black-holed store is noticed by the upload timeout, and nothing is duplicated', async () => {
    const buckets = await versionedBuckets();
    const { proxy, client } = await startProxy();
    const store = await openStore({ client, buckets, uploadTimeoutMs: 500 });
    const R = `r_${randomBytes(8).toString('hex')}`;
    await begin(store, R);
    expect((await store.putSegment(segMeta(R, 'pa', 0), fakeOgg(R, 'pa', 0))).stored).toBe('uploaded');
    proxy.blackhole();
    const t0 = Date.now();
    expect((await store.putSegment(segMeta(R, 'pa', 1), fakeOgg(R, 'pa', 1))).stored).toBe('spooled');
    expect(Date.now() - t0).toBeLessThan(2000);
    // Behind a non-empty spool, later segments do not even try the store: no added latency.
    const t1 = Date.now();
    for (let s = 2; s < 6; s++) expect((await store.putSegment(segMeta(R, 'pa', s), fakeOgg(R, 'pa', s))).stored).toBe('spooled');
    expect(Date.now() - t1).toBeLessThan(1000);
    await sleep(1500);
    await proxy.restore();
    await store.drained(30_000);
    const versions = await versionsUnder(buckets.media, `rec/${R}/`);
    expect([...versions.keys()].sort()).toEqual(Array.from({ length: 6 }, (_, i) => mediaObjectKey(R, 'pa', i)));
    expect([...versions.values()].every((n) => n === 1)).toBe(true);
    await store.endRecording(R);
    expect(await readTrack(store, R, 'pa')).toHaveLength(6);
  });

  it('close during an outage says it is not clean: what is left stays spooled, and a clean close says so too', async () => {
    const buckets = await versionedBuckets();
    const { proxy, client } = await startProxy();
    const spoolDir = await tempDir();
    const store = await openStore({ client, buckets, spoolDir, uploadTimeoutMs: 300, closeDrainMs: 500 });
    const R = `r_${randomBytes(8).toString('hex')}`;
    await begin(store, R);
    expect((await store.putSegment(segMeta(R, 'pa', 0), fakeOgg(R, 'pa', 0))).stored).toBe('uploaded');
    proxy.down();
    expect((await store.putSegment(segMeta(R, 'pa', 1), fakeOgg(R, 'pa', 1))).stored).toBe('spooled');
    const result = await store.close();
    expect(result.clean).toBe(false);
    expect(result.drained).toBe(false);
    expect(result.spoolItemsLeft).toBeGreaterThan(0);
    proxy.up();
    // The next start (same spool) uploads the rest; its own close is clean.
    const again = await openStore({ client, buckets, spoolDir, uploadTimeoutMs: 300 });
    await again.drained(30_000);
    expect(await again.close()).toEqual({ clean: true, manifestsNotSaved: 0, drained: true, spoolItemsLeft: 0 });
  });

  it('a full spool refuses with STORAGE_UNAVAILABLE (retryable), and accepts again once drained', async () => {
    const buckets = await versionedBuckets();
    const { proxy, client } = await startProxy();
    const store = await openStore({ client, buckets, spoolMaxBytes: 1024 * 1024 });
    const fullEvents: boolean[] = [];
    store.on('spoolchange', (s) => fullEvents.push(s.full));
    const R = `r_${randomBytes(8).toString('hex')}`;
    await begin(store, R);
    await proxy.cut();
    let s = 0;
    let refused: unknown;
    for (; s < 100; s++) {
      try {
        await store.putSegment(segMeta(R, 'pa', s), fakeOgg(R, 'pa', s));
      } catch (err) {
        refused = err;
        break;
      }
    }
    expect(isOptinError(refused, 'STORAGE_UNAVAILABLE')).toBe(true);
    expect((refused as { retryable: boolean }).retryable).toBe(true);
    expect(store.isSpoolFull()).toBe(true);
    expect(store.spoolBytes()).toBeLessThanOrEqual(1024 * 1024);
    expect(fullEvents).toContain(true);
    // Nothing was recorded for the refused segment.
    expect((await store.getManifest(R)).segments.map((x) => x.segment)).toEqual(Array.from({ length: s }, (_, i) => i));
    await proxy.restore();
    await store.drained(30_000);
    expect(store.isSpoolFull()).toBe(false);
    expect(fullEvents.at(-1)).toBe(false);
    // The recorder retries the same segment number once the gate reopens.
    expect((await store.putSegment(segMeta(R, 'pa', s), fakeOgg(R, 'pa', s))).stored).toBe('uploaded');
    expect((await versionsUnder(buckets.media, `rec/${R}/`)).size).toBe(s + 1);
  });

  it('expiry during an outage purges spool copies at the instant, store copies once it returns', async () => {
    const buckets = await versionedBuckets();
    const { proxy, client } = await startProxy();
    const audit = new MemoryAudit();
    const spoolDir = await tempDir();
    const store = await openStore({ client, buckets, audit, spoolDir, retentionSeconds: 3 });
    const R = `r_${randomBytes(8).toString('hex')}`;
    await begin(store, R);
    const startedAt = (await store.getManifest(R)).startedAtMs;
    expect((await store.putSegment(segMeta(R, 'pa', 0), fakeOgg(R, 'pa', 0))).stored).toBe('uploaded');
    await proxy.cut();
    for (let s = 1; s < 4; s++) expect((await store.putSegment(segMeta(R, 'pa', s), fakeOgg(R, 'pa', s))).stored).toBe('spooled');
    expect(store.spoolState().items).toBe(3);
    const receipt = await new Promise<DeletionReceipt>((r) => store.on('deleted', r));
    expect(Date.now() - (startedAt + 3000)).toBeLessThan(1500);
    expect(receipt).toMatchObject({ kind: 'expiry', complete: false, spool: { itemsRemoved: 3 } });
    expect(store.spoolState().items).toBe(0);
    expect(await readdir(join(spoolDir, 'items'))).toEqual([]);
    await proxy.restore();
    await store.drained(30_000);
    expect((await versionsUnder(buckets.media, `rec/${R}/`)).size).toBe(0);
    expect((await versionsUnder(buckets.keys, `keys/${R}/`)).size).toBe(0);
    expect((await versionsUnder(buckets.keys, manifestObjectKey(R))).size).toBe(0);
    expect(audit.entries.map((e) => e.type)).toEqual(['recording.expired', 'recording.deletion-completed']);
    expect(audit.entries[1]!.details).toMatchObject({ kind: 'expiry', receiptId: receipt.receiptId, complete: true });
  });

  it('drains many tracks in parallel, order kept within each track', async () => {
    const buckets = await versionedBuckets();
    const { proxy, client } = await startProxy();
    const store = await openStore({ client, buckets, retryMinMs: 50, retryMaxMs: 200, drainConcurrency: 8 });
    const ids = Array.from({ length: 20 }, () => `r_${randomBytes(8).toString('hex')}`);
    for (const id of ids) await begin(store, id);
    await proxy.cut();
    for (let seg = 0; seg < 3; seg++) {
      for (const id of ids) for (const p of ['pa', 'pc']) expect((await store.putSegment(segMeta(id, p, seg), fakeOgg(id, p, seg))).stored).toBe('spooled');
    }
    const items = store.spoolState().items;
    const bytes = store.spoolBytes();
    await proxy.restore();
    const t0 = performance.now();
    await store.drained(60_000);
    const ms = performance.now() - t0;
    console.log(
      `[storage] drain: ${items} spooled items (${(bytes / 1e6).toFixed(1)} MB, ${ids.length * 2} tracks) uploaded in ${ms.toFixed(0)} ms ` +
        `= ${((items * 1000) / ms).toFixed(0)} items/s (includes up to 200 ms of retry backoff)`,
    );
    for (const id of ids) {
      const versions = await versionsUnder(buckets.media, `rec/${id}/`);
      expect(versions.size).toBe(6);
      expect([...versions.values()].every((n) => n === 1)).toBe(true);
    }
    for (const id of ids.slice(0, 3)) {
      await store.endRecording(id);
      expect((await readTrack(store, id, 'pc')).map((t) => t.segment)).toEqual([0, 1, 2]);
    }
  });
});

describe('crash', () => {
  it('kill -9 while spooling: after restart every acknowledged segment arrives exactly once and the manifest is repaired', async () => {
    const buckets = await versionedBuckets();
    const { proxy } = await startProxy();
    const spoolDir = await tempDir();
    const R = `r_${randomBytes(8).toString('hex')}`;
    const nodeId = 'crashnode';
    const src = (p: string): string => pathToFileURL(resolve(p)).href;
    const script = join(await tempDir(), 'crash-child.mts');
    await writeFile(
      script,
      `
import { RecordingStore } from ${JSON.stringify(src('src/storage/RecordingStore.ts'))};
import { fakeOgg } from ${JSON.stringify(src('test/support/storageFixtures.ts'))};
import { Keyring } from ${JSON.stringify(src('src/crypto/Keyring.ts'))};
import { createLogger } from ${JSON.stringify(src('src/log/logger.ts'))};
import { createS3Client } from ${JSON.stringify(src('src/storage/s3Endpoint.ts'))};
const env = JSON.parse(process.env.CRASH_CHILD ?? '{}');
const store = await RecordingStore.open({
  client: createS3Client(env.s3), buckets: env.buckets, keyring: Keyring.fromConfig(env.keyring),
  spoolDir: env.spoolDir, spoolMaxBytes: 256 * 1024 * 1024, logger: createLogger('silent'),
  nodeId: env.nodeId, uploadTimeoutMs: 500, retryMinMs: 100, retryMaxMs: 500,
});
const R = env.recordingId;
await store.beginRecording({ recordingId: R, callId: 'c_crash', startedAt: Date.now(),
  participants: [{ participantId: 'pa', role: 'agent', subjectId: 's_a' }, { participantId: 'pc', role: 'customer', subjectId: 's_c' }],
  consentEvidence: [{ subjectId: 's_c', method: 'dtmf', infoVersion: 'v3' }] });
for (let seg = 0; ; seg++) {
  for (const p of ['pa', 'pc']) {
    const r = await store.putSegment({ recordingId: R, participantId: p, segment: seg, run: 0,
      startWallClockMs: 1_700_000_000_000 + seg * 10_000, durationMs: 10_000, opusPayloadBytes: 39_000, quality: {} }, fakeOgg(R, p, seg, 40_000));
    process.stdout.write(JSON.stringify({ p, seg, stored: r.stored }) + '\\n');
  }
  await new Promise((r) => setTimeout(r, 10));
}
`,
    );
    const cfg = s3Config();
    // One process (tsx as an in-process loader, not the tsx CLI wrapper), so SIGKILL hits the writer.
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: resolve('.'),
      env: {
        ...process.env,
        CRASH_CHILD: JSON.stringify({
          s3: { ...cfg, endpoint: `http://127.0.0.1:${proxy.port}` },
          buckets,
          keyring: { activeKeyId: 'k1', keys: { k1 } },
          spoolDir,
          nodeId,
          recordingId: R,
        }),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const acked: Array<{ p: string; seg: number; stored: string }> = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let buf = '';
    let cut = false;
    let killSent = false;
    const killed = new Promise<void>((resolveKilled, reject) => {
      child.on('exit', () => resolveKilled());
      child.on('error', reject);
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          acked.push(JSON.parse(buf.slice(0, nl)) as { p: string; seg: number; stored: string });
          buf = buf.slice(nl + 1);
        }
        const uploaded = acked.filter((a) => a.stored === 'uploaded').length;
        const spooled = acked.filter((a) => a.stored === 'spooled').length;
        if (!cut && uploaded >= 6) {
          cut = true;
          void proxy.cut();
        }
        // kill -9 mid-stream: the child is in the middle of sealing/spooling the next segment.
        if (spooled >= 30 && !killSent) {
          killSent = true;
          process.kill(child.pid!, 'SIGKILL');
        }
      });
    });
    await killed;
    expect(child.signalCode, stderr).toBe('SIGKILL');
    const spooled = acked.filter((a) => a.stored === 'spooled');
    expect(spooled.length).toBeGreaterThanOrEqual(30);
    // What the dead process left: only sealed bytes and wrapped keys.
    await assertNoPlaintext(spoolDir, spooled.slice(0, 4).map((a) => fakeOgg(R, a.p, a.seg)));

    await proxy.restore();
    const tReopen = Date.now();
    const store = await openStore({ client: direct, buckets, spoolDir, nodeId, sweepScanIntervalMs: 200 });
    await store.drained(60_000);
    // Repair runs after the spool drained and after the sweeper's scan found the manifest.
    let manifest = await store.getManifest(R);
    for (let i = 0; i < 50 && manifest.state === 'recording'; i++) {
      await sleep(100);
      await store.drained(60_000);
      manifest = await store.getManifest(R);
    }
    expect(manifest.state).toBe('interrupted');
    const recoveryMs = Date.now() - tReopen;

    const versions = await versionsUnder(buckets.media, `rec/${R}/`);
    expect([...versions.values()].every((n) => n === 1)).toBe(true);
    for (const a of acked) expect(versions.has(mediaObjectKey(R, a.p, a.seg))).toBe(true);
    // At most the open segment (one per participant) beyond what was acknowledged.
    expect(versions.size - acked.length).toBeLessThanOrEqual(2);
    expect(manifest.segments.map((s) => s.objectKey).sort()).toEqual([...versions.keys()].sort());
    expect(manifest.participants.map((p) => p.dataKeyId !== undefined)).toEqual([true, true]);
    for (const p of ['pa', 'pc']) {
      const track = await readTrack(store, R, p);
      const stored = [...versions.keys()].filter((k) => k.includes(`/${p}/`)).length;
      expect(track.map((t) => t.segment)).toEqual(Array.from({ length: stored }, (_, i) => i));
      for (const t of track) expect(t.ogg.equals(fakeOgg(R, p, t.segment))).toBe(true);
    }
    expect(await readdir(join(spoolDir, 'items'))).toEqual([]);
    console.log(`[storage] crash: ${acked.length} segments acknowledged (${spooled.length} spooled) before SIGKILL; ${versions.size} objects after restart, 1 version each; recovered + repaired in ${recoveryMs} ms`);
  }, 120_000);
});
