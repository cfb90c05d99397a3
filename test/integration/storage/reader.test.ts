import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { bucketNames, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingReader } from '../../../src/storage/RecordingReader.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep } from '../../support/s3.ts';
import { fakeOgg, segMeta } from '../../support/storageFixtures.ts';

/**
 * The read path on its own (what `optin extract` uses): a RecordingReader reads what a
 * RecordingStore wrote, with no spool, no uploader and no sweeper, and writes nothing.
 */

const keyring = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } });
let client: Client;
let buckets: BucketNames;
let spoolDir: string;
const R = `r_${randomBytes(8).toString('hex')}`;

beforeAll(async () => {
  client = makeMinioClient();
  buckets = bucketNames({ prefix: `${freshBucketPrefix()}-` });
  spoolDir = await mkdtemp(join(tmpdir(), 'optin-reader-'));
  const store = await RecordingStore.open({ client, buckets, keyring, spoolDir, spoolMaxBytes: 16 << 20, logger: createLogger('silent'), sweep: false });
  await store.beginRecording({
    recordingId: R,
    callId: 'c_reader',
    startedAt: Date.now(),
    participants: [
      { participantId: 'pa', role: 'agent', subjectId: 's_agent' },
      { participantId: 'pc', role: 'customer', subjectId: 's_cust' },
    ],
    consentEvidence: [{ subjectId: 's_cust', method: 'dtmf', infoVersion: 'v3' }],
  });
  for (let seg = 0; seg < 3; seg++) await store.putSegment(segMeta(R, 'pa', seg), fakeOgg(R, 'pa', seg, 2000));
  await store.endRecording(R);
  await store.drained(30_000);
  // The writer is gone: whatever the reader sees comes from the object store alone.
  await store.close();
});

afterAll(async () => {
  for (const b of Object.values(buckets)) await removeBucketDeep(client, b);
  await rm(spoolDir, { recursive: true, force: true });
});

describe('RecordingReader', () => {
  it('lists, describes and reads back a recording the store wrote, after the store has closed', async () => {
    const reader = new RecordingReader({ client, buckets, keyring });
    const list = await reader.listRecordings();
    expect(list.map((r) => r.recordingId)).toEqual([R]);
    expect(list[0]).toMatchObject({ state: 'ended', segments: 3 });
    const m = await reader.getManifest(R);
    expect(m.segments.map((s) => s.segment)).toEqual([0, 1, 2]);
    const segs: Buffer[] = [];
    for await (const s of reader.openTrack(R, 'pa')) segs.push(s.ogg);
    expect(segs).toEqual([0, 1, 2].map((seg) => fakeOgg(R, 'pa', seg, 2000)));
  });

  it('answers a missing recording with RECORDING_NOT_FOUND, and a keyring without the KEK cannot unwrap (KEK_UNKNOWN)', async () => {
    const reader = new RecordingReader({ client, buckets, keyring });
    const missing = await reader.getManifest('r_0000000000000000').catch((err: unknown) => err);
    expect(isOptinError(missing, 'RECORDING_NOT_FOUND')).toBe(true);
    const stranger = new RecordingReader({ client, buckets, keyring: Keyring.fromConfig({ activeKeyId: 'k9', keys: { k9: Keyring.generateKeyBase64() } }) });
    const read = async (): Promise<void> => {
      for await (const _ of stranger.openTrack(R, 'pa')) {
        // never reached
      }
    };
    await expect(read()).rejects.toMatchObject({ code: 'KEK_UNKNOWN' });
  });

  it('refuses to be built without a keyring or buckets (CONFIG_INVALID)', () => {
    const bad = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (err) {
        return err;
      }
      return undefined;
    };
    expect(isOptinError(bad(() => new RecordingReader({ client, buckets, keyring: {} as Keyring })), 'CONFIG_INVALID')).toBe(true);
    expect(isOptinError(bad(() => new RecordingReader({ client, buckets: { ...buckets, keys: '' }, keyring })), 'CONFIG_INVALID')).toBe(true);
  });
});
