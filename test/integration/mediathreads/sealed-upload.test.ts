/**
 * Sealing and upload in the media threads (issue 16 item 1), against the run's real S3 server:
 * a thread's finished segment stays in the thread (SegmentHold), the store on the main thread
 * keeps the books and has the thread seal it with the track's data key and PUT it. The main
 * thread gets figures, never the audio; sealed bytes come over only for the spool. What is
 * stored reads back, through the store, to every packet sent.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { DEFAULT_OLD_SPACE_MB } from '../../../src/mediathreads/defaults.ts';
import { createLogger } from '../../../src/log/logger.ts';
import type { SegmentStore } from '../../../src/recorder/TrackRecorder.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import { isHeldSegment } from '../../../src/storage/inputs.ts';
import type { BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import type { HeldSegment, PutSegmentResult, SegmentBody } from '../../../src/storage/types.ts';
import { useBuckets } from '../../support/buckets.ts';
import { expectCode } from '../../support/optinErrors.ts';
import { listNames, s3Config } from '../../support/s3.ts';
import { readTrackOgg, segMeta } from '../../support/storageFixtures.ts';
import { openThreadTrack, startThreadPlane, type ThreadPlane } from '../../support/threadTrack.ts';

const s3Buckets = useBuckets();
const keyring = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } });
/** What the store's write guard says (the policy stream's freshness and tombstones, in the recorder). */
const guard = { mayUpload: true, deleted: new Set<string>() };
let store: RecordingStore;
let buckets: BucketNames;
let spoolDir: string;
/** Threads that PUT to the real S3 server, and threads whose endpoint refuses every connection. */
let good: ThreadPlane;
let dead: ThreadPlane;
/** Threads told to hand their segments' Ogg to the main thread (OPTIN_SEGMENT_SEALING=main). */
let onMain: ThreadPlane;

const PACKETS = 150; // 3 s of 20 ms packets: three 1 s segments
const marker = (callId: string, seq: number): Buffer => Buffer.from(`${callId}/voice-${String(seq).padStart(4, '0')}`);

beforeAll(async () => {
  spoolDir = await mkdtemp(join(tmpdir(), 'optin-sealed-upload-'));
  buckets = s3Buckets.layout();
  store = await RecordingStore.open({
    client: s3Buckets.client,
    buckets,
    keyring,
    spoolDir,
    spoolMaxBytes: 64 * 1024 * 1024,
    logger: createLogger('silent'),
    writeGuard: { isDeleted: (recordingId) => guard.deleted.has(recordingId), mayUpload: () => guard.mayUpload },
  });
  good = await startThreadPlane({ threads: 1, maxTracks: 16, portMin: 48_000, portMax: 48_099, maxStreams: 8, s3: s3Config() });
  // Port 9 (discard) on loopback: nothing listens, every PUT from these threads is refused.
  dead = await startThreadPlane({ threads: 1, maxTracks: 16, portMin: 48_200, portMax: 48_299, maxStreams: 8, s3: { ...s3Config(), endpoint: 'http://127.0.0.1:9' } });
  onMain = await startThreadPlane({ threads: 1, maxTracks: 16, portMin: 48_300, portMax: 48_399, maxStreams: 8, s3: s3Config(), sealing: 'main' });
});

afterAll(async () => {
  await good?.close();
  await dead?.close();
  await onMain?.close();
  await store?.close();
  await rm(spoolDir, { recursive: true, force: true });
});

async function begin(): Promise<string> {
  const recordingId = `r_${randomBytes(8).toString('hex')}`;
  await store.beginRecording({
    recordingId,
    callId: `c_${recordingId.slice(2)}`,
    startedAt: Date.now(),
    participants: [{ participantId: 'p1', role: 'customer', subjectId: `s_${recordingId.slice(2, 10)}` }],
    consentEvidence: [{ subjectId: `s_${recordingId.slice(2, 10)}`, method: 'dtmf', at: new Date().toISOString(), infoVersion: 'v3' }],
  });
  return recordingId;
}

/** What the store was handed and answered, per segment. */
interface Handed {
  bodies: SegmentBody[];
  results: PutSegmentResult[];
  errors: Error[];
}

/** Records `PACKETS` marked packets in a track of `threads`, its segments going to the real store; ends the run. */
async function record(threads: ThreadPlane, callId: string, recordingId: string, ssrc: number, from = 0): Promise<Handed> {
  const handed: Handed = { bodies: [], results: [], errors: [] };
  const sink: SegmentStore = {
    putSegment: async (meta, ogg) => {
      handed.bodies.push(ogg);
      const r = await store.putSegment(meta, ogg);
      handed.results.push(r);
      return r;
    },
  };
  const senderPort = (threads.sender.address() as { port: number }).port;
  const { track, rtpPort } = await openThreadTrack(threads.pool, threads.plane, {
    callId,
    senderPort,
    recordingId,
    stored: () => undefined,
    sink,
    onStoreError: (err) => handed.errors.push(err),
    segmentSamples: 48_000,
  });
  await sleep(50);
  for (let seq = from; seq < from + PACKETS; seq++) {
    const payload = Buffer.concat([Buffer.from([0xf8]), marker(callId, seq)]);
    threads.sender.send(buildRtp({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc, payload }), rtpPort, '127.0.0.1');
    await sleep(2);
  }
  const deadline = Date.now() + 5000;
  while (track.counters.received < PACKETS && Date.now() < deadline) await sleep(20);
  expect(track.counters.received).toBe(PACKETS);
  await sleep(150); // past the jitter buffer's hold
  await track.endRun(Date.now());
  await track.close(Date.now());
  return handed;
}

async function heldInThread(threads: ThreadPlane): Promise<number> {
  await threads.pool.refreshStats();
  return threads.pool.load()[0]!.heldSegments;
}

function missingMarkers(callId: string, oggs: Buffer[], from = 0): number[] {
  const all = Buffer.concat(oggs);
  return Array.from({ length: PACKETS }, (_, i) => from + i).filter((s) => all.indexOf(marker(callId, s)) === -1);
}

describe('media threads seal and upload their own segments', () => {
  it('the thread seals and PUTs; the main thread gets figures, never the audio; every packet reads back', async () => {
    const rid = await begin();
    const handed = await record(good, 'call-sealed', rid, 0x5501);
    expect(handed.errors).toEqual([]);
    expect(handed.bodies.length).toBeGreaterThanOrEqual(3);
    // Not one Buffer of Ogg crossed: each body is the thread's handle, PUT from there.
    for (const b of handed.bodies) expect(isHeldSegment(b) && (b as HeldSegment).put !== undefined).toBe(true);
    expect(handed.results.map((r) => r.stored)).toEqual(handed.bodies.map(() => 'uploaded'));
    expect(await heldInThread(good)).toBe(0);

    const final = await store.endRecording(rid);
    expect(final.segments).toHaveLength(handed.bodies.length);
    const media = await listNames(s3Buckets.client, buckets.media, `rec/${rid}/`);
    expect(media).toHaveLength(handed.bodies.length);
    const oggs = await readTrackOgg(store, rid, 'p1');
    expect(missingMarkers('call-sealed', oggs)).toEqual([]);
    // The manifest's figures are the thread's: sizes and digests of what is in the bucket.
    for (const s of final.segments) {
      const r = handed.results.find((x) => x.objectKey === s.objectKey)!;
      expect(s.sealedBytes).toBe(r.sealedBytes);
      expect(s.sha256).toBe(r.sha256);
    }
  });

  it('sealing on the main thread (OPTIN_SEGMENT_SEALING=main): the Ogg crosses, the store seals and PUTs it here', async () => {
    const rid = await begin();
    const handed = await record(onMain, 'call-on-main', rid, 0x5506);
    expect(handed.errors).toEqual([]);
    expect(handed.bodies.length).toBeGreaterThanOrEqual(3);
    for (const b of handed.bodies) expect(Buffer.isBuffer(b)).toBe(true);
    expect(handed.results.every((r) => r.stored === 'uploaded')).toBe(true);
    expect(await heldInThread(onMain)).toBe(0);
    await store.endRecording(rid);
    expect(missingMarkers('call-on-main', await readTrackOgg(store, rid, 'p1'))).toEqual([]);
  });

  it("a PUT the store refuses in the thread spools the sealed segment; the uploader lands it", async () => {
    const rid = await begin();
    const handed = await record(dead, 'call-refused', rid, 0x5502);
    expect(handed.errors).toEqual([]);
    // The main thread's own client reaches the store: only the thread's PUT could have failed.
    expect(handed.results.length).toBeGreaterThanOrEqual(3);
    expect(handed.results.every((r) => r.stored === 'spooled')).toBe(true);
    expect(await heldInThread(dead)).toBe(0);
    await store.drained(30_000);
    await store.endRecording(rid);
    expect(missingMarkers('call-refused', await readTrackOgg(store, rid, 'p1'))).toEqual([]);
  });

  it('while uploads wait (a stale policy stream), sealed segments come over for the spool and land once allowed', async () => {
    const rid = await begin();
    guard.mayUpload = false;
    let handed: Handed;
    try {
      handed = await record(good, 'call-stale', rid, 0x5503);
    } finally {
      guard.mayUpload = true;
    }
    expect(handed.errors).toEqual([]);
    expect(handed.results.every((r) => r.stored === 'spooled')).toBe(true);
    expect(await listNames(s3Buckets.client, buckets.media, `rec/${rid}/`)).toEqual([]);
    store.writeGuardChanged();
    await store.drained(30_000);
    await store.endRecording(rid);
    expect(missingMarkers('call-stale', await readTrackOgg(store, rid, 'p1'))).toEqual([]);
  });

  it('a deleted recording: the next segment is refused, the thread forgets it, nothing more is stored', async () => {
    const rid = await begin();
    const first = await record(good, 'call-deleted', rid, 0x5504);
    expect(first.errors).toEqual([]);
    await store.deleteRecording(rid, { reason: 'consent-withdrawn-erase', actor: 'system' });
    guard.deleted.add(rid);
    const after = await record(good, 'call-deleted', rid, 0x5505, PACKETS);
    expect(after.results).toEqual([]);
    expect(after.errors.length).toBeGreaterThan(0);
    for (const e of after.errors) expect((e as { code?: string }).code).toBe('RECORDING_DELETED');
    expect(await heldInThread(good)).toBe(0);
    expect(await listNames(s3Buckets.client, buckets.media, `rec/${rid}/`)).toEqual([]);
  });

  it('bad handles are refused before anything is stored; a seal that fails stores nothing', async () => {
    const rid = await begin();
    const ok = await store.putSegment(segMeta(rid, 'p1', 0), Buffer.from('OggS-a-first-segment'));
    expect(ok.stored).toBe('uploaded');
    const handle = (o: Partial<HeldSegment>): HeldSegment => ({
      oggBytes: 100,
      seal: () => Promise.reject(new Error('the media thread is gone')),
      put: undefined,
      take: () => Promise.reject(new Error('the media thread is gone')),
      ...o,
    });
    await expectCode(store.putSegment(segMeta(rid, 'p1', 1), handle({ oggBytes: 0 })), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'p1', 1), handle({ oggBytes: 1.5 })), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'p1', 1), handle({ oggBytes: 64 * 1024 * 1024 })), 'SEGMENT_TOO_LARGE');
    await expect(store.putSegment(segMeta(rid, 'p1', 1), handle({}))).rejects.toThrow('the media thread is gone');
    const final = await store.endRecording(rid);
    expect(final.segments.map((s) => s.segment)).toEqual([0]);
    expect(await listNames(s3Buckets.client, buckets.media, `rec/${rid}/`)).toHaveLength(1);
  });

  it("each thread reports its own heap (after a collection when asked) and runs under the pool's old generation limit", async () => {
    await good.pool.refreshStats({ collectGarbage: true });
    const [load] = good.pool.load();
    expect(load!.heap.usedBytes).toBeGreaterThan(1024 * 1024);
    expect(load!.heap.usedBytes).toBeLessThanOrEqual(load!.heap.totalBytes);
    expect(load!.heap.externalBytes).toBeGreaterThanOrEqual(0);
    // The limit V8 sizes the heap's growth steps from (config mediaThreadOldSpaceMb).
    expect(good.pool.threadOf('any-call').worker.resourceLimits?.maxOldGenerationSizeMb).toBe(DEFAULT_OLD_SPACE_MB);
  });
});
