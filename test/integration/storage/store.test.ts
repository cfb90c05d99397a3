import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditTrail } from '../../../src/audit/AuditTrail.ts';
import { TEST_AUDIT_KEY, TEST_RETENTION } from '../../support/auditKey.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { OggOpusWriter } from '../../../src/media/OggOpusWriter.ts';
import { dataKeyObjectKey, manifestObjectKey, mediaObjectKey, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import type { RecordingStoreOptions } from '../../../src/storage/types.ts';
import { SEALED_MANIFEST_FORMAT, openManifest, plainManifestBytes, sealManifest, unsealManifestJson, type RecordingManifest } from '../../../src/storage/manifest.ts';
import { useBuckets } from '../../support/buckets.ts';
import { expectCode } from '../../support/optinErrors.ts';
import { listNames } from '../../support/s3.ts';
import { MemoryAudit, fakeOgg, readTrackOgg, segMeta } from '../../support/storageFixtures.ts';

const logger = createLogger('silent');
const k1 = Keyring.generateKeyBase64();
const k2 = Keyring.generateKeyBase64();
const ring1 = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
const ring12 = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k1, k2 } });

const s3Buckets = useBuckets();
let client: Client;
let buckets: BucketNames;
const tmpDirs: string[] = [];
const stores: RecordingStore[] = [];

async function openStore(over: Partial<RecordingStoreOptions> = {}): Promise<RecordingStore> {
  const spoolDir = await mkdtemp(join(tmpdir(), 'optin-store-'));
  tmpDirs.push(spoolDir);
  const store = await RecordingStore.open({
    client,
    buckets,
    keyring: ring1,
    spoolDir,
    spoolMaxBytes: 64 * 1024 * 1024,
    logger,
    nodeId: `n${randomBytes(4).toString('hex')}`,
    ...over,
  });
  stores.push(store);
  return store;
}

function newRecordingId(): string {
  return `r_${randomBytes(8).toString('hex')}`;
}

async function begin(store: RecordingStore, recordingId = newRecordingId(), participants = ['pa', 'pc']): Promise<string> {
  await store.beginRecording({
    recordingId,
    callId: `c_${recordingId.slice(2)}`,
    startedAt: Date.now(),
    participants: participants.map((p, i) => ({ participantId: p, role: i === 0 ? 'agent' : 'customer', subjectId: `s_${p}_${recordingId.slice(2, 8)}` })),
    consentEvidence: [{ subjectId: `s_${participants[1] ?? 'x'}_${recordingId.slice(2, 8)}`, method: 'dtmf', at: new Date().toISOString(), infoVersion: 'v3' }],
  });
  return recordingId;
}

async function getObject(bucket: string, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await client.getObject(bucket, key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function getObjectVersion(bucket: string, key: string, versionId: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await client.getObject(bucket, key, { versionId })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function putRaw(bucket: string, key: string, body: Buffer): Promise<void> {
  await client.putObject(bucket, key, body, body.length);
}

beforeAll(async () => {
  client = s3Buckets.client;
  buckets = s3Buckets.layout();
});

afterAll(async () => {
  for (const s of stores) await s.close();
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

describe('RecordingStore against S3', () => {
  it('stores sealed, tagged segments and reads each track back in order', async () => {
    const store = await openStore();
    const rid = await begin(store);
    for (let seg = 0; seg < 3; seg++) {
      for (const p of ['pa', 'pc']) {
        const r = await store.putSegment(segMeta(rid, p, seg), fakeOgg(rid, p, seg));
        expect(r.stored).toBe('uploaded');
        expect(r.objectKey).toBe(mediaObjectKey(rid, p, seg));
        expect(r.sealedBytes).toBe(4000 + 33);
      }
    }
    const final = await store.endRecording(rid);
    expect(final.state).toBe('ended');
    expect(final.segments).toHaveLength(6);

    for (const p of ['pa', 'pc']) {
      const track = await readTrackOgg(store, rid, p);
      expect(track).toHaveLength(3);
      track.forEach((ogg, seg) => expect(ogg.equals(fakeOgg(rid, p, seg))).toBe(true));
    }

    // Tags on every media object, set on the PUT; object keys hold only pseudonymous ids.
    const media = await listNames(client, buckets.media, `rec/${rid}/`);
    expect(media).toHaveLength(6);
    for (const key of media) {
      const tags = Object.fromEntries(((await client.getObjectTagging(buckets.media, key)) as Array<{ Key: string; Value: string }>).map((t) => [t.Key, t.Value]));
      expect(tags['expires-at']).toBe(final.expiresAt);
      expect(tags['retention-class']).toBe('training-30d');
      expect(tags.recording).toBe(rid);
      expect(key).not.toMatch(/s_p/);
      // Sealed: the stored bytes are not the plaintext.
      const body = await getObject(buckets.media, key);
      expect(body.subarray(0, 4).toString('latin1')).toBe('OPTN');
      expect(body.includes(fakeOgg(rid, 'pa', 0).subarray(4, 40))).toBe(false);
    }

    // Keys and manifest live in the keys bucket, never beside the media.
    expect(await listNames(client, buckets.keys, `keys/${rid}/`)).toEqual([dataKeyObjectKey(rid, 'pa'), dataKeyObjectKey(rid, 'pc')]);
    const keyDoc = JSON.parse((await getObject(buckets.keys, dataKeyObjectKey(rid, 'pa'))).toString()) as Record<string, string>;
    expect(keyDoc.kekId).toBe('k1');
    expect(keyDoc.alg).toBe('A256GCM');
    // The manifest is sealed (issue 19): only its format, recording id and KEK id are in clear.
    const stored = await getObject(buckets.keys, manifestObjectKey(rid));
    expect(Object.keys(JSON.parse(stored.toString()) as object).sort()).toEqual(['alg', 'ciphertext', 'format', 'kekId', 'nonce', 'recordingId']);
    expect(stored.toString()).not.toContain(`s_pa_${rid.slice(2, 8)}`);
    const manifest = JSON.parse(unsealManifestJson(stored, rid, ring1).toString()) as { state: string; segments: unknown[] };
    expect(manifest.state).toBe('ended');
    expect(manifest.segments).toHaveLength(6);
    expect(await listNames(client, buckets.media, 'keys/')).toEqual([]);

    // Lifecycle backstop rules, whole days rounded up.
    const lc = (await client.getBucketLifecycle(buckets.media)) as { Rule: unknown };
    const rules = ([] as Array<{ ID: string; Filter: { Prefix: string }; Expiration: { Days: number | string }; Status: string }>).concat(lc.Rule as never);
    expect(rules).toEqual([expect.objectContaining({ ID: 'optin-expiry-media', Status: 'Enabled', Filter: { Prefix: 'rec/' } })]);
    expect(Number(rules[0]!.Expiration.Days)).toBe(30);
    const klc = (await client.getBucketLifecycle(buckets.keys)) as { Rule: unknown };
    expect(([] as Array<{ ID: string }>).concat(klc.Rule as never).map((r) => r.ID).sort()).toEqual(['optin-expiry-keys', 'optin-expiry-manifests']);

    // listRecordings: metadata only.
    const list = await store.listRecordings();
    const mine = list.find((r) => r.recordingId === rid)!;
    expect(mine.participants.map((p) => [p.participantId, p.segments, p.durationMs])).toEqual([
      ['pa', 3, 30_000],
      ['pc', 3, 30_000],
    ]);
    expect(JSON.stringify(list)).not.toContain('wrapped');
  });

  it('installs lifecycle rules idempotently and keeps foreign rules', async () => {
    await client.setBucketLifecycle(buckets.media, {
      Rule: [
        { ID: 'optin-expiry-media', Status: 'Enabled', Filter: { Prefix: 'rec/' }, Expiration: { Days: 30 } },
        { ID: 'someone-else', Status: 'Enabled', Filter: { Prefix: 'tmp/' }, Expiration: { Days: 2 } },
      ],
    } as never);
    const store = await openStore({ retentionSeconds: 7 * 86400 + 1 });
    const rules = ([] as Array<{ ID: string; Expiration: { Days: number | string } }>).concat(
      ((await client.getBucketLifecycle(buckets.media)) as { Rule: unknown }).Rule as never,
    );
    expect(rules.map((r) => [r.ID, Number(r.Expiration.Days)]).sort()).toEqual([
      ['optin-expiry-media', 8],
      ['someone-else', 2],
    ]);
    await store.close();
    // Restore the default for the other tests' assertions.
    await (await openStore()).close();
  });

  it('tampering fails with a clear error: flipped bit, swapped participants, truncation, wrong or missing KEK', async () => {
    const store = await openStore();
    const rid = await begin(store);
    for (let seg = 0; seg < 2; seg++) for (const p of ['pa', 'pc']) await store.putSegment(segMeta(rid, p, seg), fakeOgg(rid, p, seg));
    await store.endRecording(rid);
    const keyA0 = mediaObjectKey(rid, 'pa', 0);
    const keyC0 = mediaObjectKey(rid, 'pc', 0);
    const origA0 = await getObject(buckets.media, keyA0);
    const origC0 = await getObject(buckets.media, keyC0);
    const manifestOrig = await getObject(buckets.keys, manifestObjectKey(rid));

    // 1. A flipped bit: the manifest digest catches it before decryption.
    const flipped = Buffer.from(origA0);
    flipped[100]! ^= 0x04;
    await putRaw(buckets.media, keyA0, flipped);
    let msg = await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED');
    expect(msg).toMatch(/digest/);

    // 2. Someone with the store's credentials rewrites the manifest digests to match: the
    //    manifest's MAC refuses it before anything is decrypted.
    const patchManifest = async (objectKey: string, body: Buffer, resign = true): Promise<void> => {
      const m = JSON.parse(unsealManifestJson(manifestOrig, rid, ring1).toString()) as RecordingManifest;
      const s = m.segments.find((x) => x.objectKey === objectKey)!;
      s.sha256 = createHash('sha256').update(body).digest('hex');
      s.sealedBytes = body.length;
      await putRaw(buckets.keys, manifestObjectKey(rid), resign ? sealManifest(m, ring1) : Buffer.from(JSON.stringify(m)));
    };
    await putRaw(buckets.media, keyA0, origC0);
    await patchManifest(keyA0, origC0, false);
    msg = await expectCode(readTrackOgg(store, rid, 'pa'), 'MANIFEST_TAMPERED');
    expect(msg).toMatch(/does not match its MAC/);
    //    An insider who also holds the keyring re-signs it: the AAD still refuses a segment moved
    //    from the customer's track into the agent's.
    await patchManifest(keyA0, origC0);
    msg = await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED', 'authentication');
    expect(msg).toMatch(/moved|altered/);

    // 3. Renumbered: segment 1 stored as segment 0 of the same track.
    const origA1 = await getObject(buckets.media, mediaObjectKey(rid, 'pa', 1));
    await putRaw(buckets.media, keyA0, origA1);
    await patchManifest(keyA0, origA1);
    await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED', 'authentication');

    // 4. Truncated: short of the tag, and short of even a header.
    await putRaw(buckets.media, keyA0, origA0.subarray(0, origA0.length - 10));
    await patchManifest(keyA0, origA0.subarray(0, origA0.length - 10));
    await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED', 'authentication');
    await putRaw(buckets.media, keyA0, origA0.subarray(0, 12));
    await patchManifest(keyA0, origA0.subarray(0, 12));
    await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED', 'too-short');
    await putRaw(buckets.media, keyA0, Buffer.concat([Buffer.from('XXXX'), origA0.subarray(4)]));
    await patchManifest(keyA0, Buffer.concat([Buffer.from('XXXX'), origA0.subarray(4)]));
    await expectCode(readTrackOgg(store, rid, 'pa'), 'SEGMENT_AUTH_FAILED', 'bad-magic');

    // 4b. The sealed manifest itself (issue 19): a changed byte of its ciphertext, or the envelope
    //     relabelled for another recording, does not open.
    await putRaw(buckets.media, keyA0, origA0);
    const envelope = JSON.parse(manifestOrig.toString()) as Record<string, string>;
    const ct = Buffer.from(envelope.ciphertext!, 'base64');
    ct[20]! ^= 0x01;
    await putRaw(buckets.keys, manifestObjectKey(rid), Buffer.from(JSON.stringify({ ...envelope, ciphertext: ct.toString('base64') })));
    msg = await expectCode(readTrackOgg(store, rid, 'pa'), 'MANIFEST_TAMPERED');
    expect(msg).toMatch(/does not open/);
    await putRaw(buckets.keys, manifestObjectKey(rid), Buffer.from(JSON.stringify({ ...envelope, recordingId: 'r_0000000000000000' })));
    await expectCode(readTrackOgg(store, rid, 'pa'), 'MANIFEST_TAMPERED');

    // Restored, it opens again; the customer's track was never affected.
    await putRaw(buckets.media, keyA0, origA0);
    await putRaw(buckets.keys, manifestObjectKey(rid), manifestOrig);
    expect(await readTrackOgg(store, rid, 'pa')).toHaveLength(2);
    expect(await readTrackOgg(store, rid, 'pc')).toHaveLength(2);

    // 5. Wrong KEK material under the right id (the manifest's MAC already fails), and a ring without the KEK.
    const wrong = await openStore({ keyring: Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: k2 } }), sweep: false });
    msg = await expectCode(readTrackOgg(wrong, rid, 'pa'), 'MANIFEST_TAMPERED');
    expect(msg).not.toContain(k1);
    const missing = await openStore({ keyring: Keyring.fromConfig({ activeKeyId: 'k2', keys: { k2 } }), sweep: false });
    msg = await expectCode(readTrackOgg(missing, rid, 'pa'), 'KEK_UNKNOWN');
    expect(msg).toContain('"k1"');

    // 6. A wrapped key copied onto another participant does not unwrap (context-bound).
    const keyDocA = await getObject(buckets.keys, dataKeyObjectKey(rid, 'pa'));
    const forged = JSON.parse(keyDocA.toString()) as Record<string, string>;
    forged.participantId = 'pc';
    const keyDocC = await getObject(buckets.keys, dataKeyObjectKey(rid, 'pc'));
    await putRaw(buckets.keys, dataKeyObjectKey(rid, 'pc'), Buffer.from(JSON.stringify(forged)));
    await expectCode(readTrackOgg(store, rid, 'pc'), 'KEY_UNWRAP_FAILED');
    await putRaw(buckets.keys, dataKeyObjectKey(rid, 'pc'), keyDocC);
    expect(await readTrackOgg(store, rid, 'pc')).toHaveLength(2);
  });

  it('a plain manifest an older version wrote is read (listing, tracks, erasure) and the next write seals it', async () => {
    const store = await openStore({ sweep: false });
    const rid = await begin(store);
    for (const p of ['pa', 'pc']) await store.putSegment(segMeta(rid, p, 0), fakeOgg(rid, p, 0));
    const ended = await store.endRecording(rid);
    await store.drained(30_000);
    // What versions before issue 19 stored: the MAC'd manifest JSON, subject ids in clear.
    await putRaw(buckets.keys, manifestObjectKey(rid), plainManifestBytes(ended, ring1));
    const customer = `s_pc_${rid.slice(2, 8)}`;
    expect((await getObject(buckets.keys, manifestObjectKey(rid))).toString()).toContain(customer);

    const later = await openStore({ sweep: false });
    const summary = (await later.listRecordings()).find((r) => r.recordingId === rid)!;
    expect(summary.participants.map((p) => p.subjectId)).toEqual([`s_pa_${rid.slice(2, 8)}`, customer]);
    expect(await readTrackOgg(later, rid, 'pc')).toHaveLength(1);
    // A plain manifest without a valid MAC is still refused.
    const altered = JSON.parse(plainManifestBytes(ended, ring1).toString()) as RecordingManifest;
    altered.participants[0]!.teamLeadId = 'lead-x';
    await putRaw(buckets.keys, manifestObjectKey(rid), Buffer.from(JSON.stringify(altered)));
    await expectCode(later.getManifest(rid), 'MANIFEST_TAMPERED');
    await putRaw(buckets.keys, manifestObjectKey(rid), plainManifestBytes(ended, ring1));

    // The customer's erasure rewrites the manifest: sealed now, and nothing in clear names either subject.
    await later.deleteRecording(rid, { participantId: 'pc', reason: 'consent-withdrawn-erase', actor: 'system' });
    const stored = await getObject(buckets.keys, manifestObjectKey(rid));
    expect((JSON.parse(stored.toString()) as { format: string }).format).toBe(SEALED_MANIFEST_FORMAT);
    expect(stored.toString()).not.toContain(customer);
    expect(stored.toString()).not.toContain(`s_pa_${rid.slice(2, 8)}`);
    const after = await later.getManifest(rid);
    expect(after.participants.find((p) => p.participantId === 'pc')).toMatchObject({ erased: { reason: 'consent-withdrawn-erase' } });
    expect(after.participants.find((p) => p.participantId === 'pc')!.subjectId).toBeUndefined();
    expect(await readTrackOgg(later, rid, 'pa')).toHaveLength(1);
  });

  it('an erasure on a versioned keys bucket leaves one manifest version: the earlier ones named the erased participant', async () => {
    const vb = s3Buckets.layout();
    await client.makeBucket(vb.keys, 'us-east-1');
    await client.setBucketVersioning(vb.keys, { Status: 'Enabled' });
    const store = await openStore({ buckets: vb, sweep: false });
    const rid = await begin(store);
    for (const p of ['pa', 'pc']) await store.putSegment(segMeta(rid, p, 0), fakeOgg(rid, p, 0));
    await store.endRecording(rid);
    await store.drained(30_000);
    const versions = async (): Promise<string[]> => {
      const out: string[] = [];
      for await (const o of client.listObjects(vb.keys, manifestObjectKey(rid), true, { IncludeVersion: true }) as AsyncIterable<{ name?: string; versionId?: string }>) {
        if (o.name === manifestObjectKey(rid)) out.push(String(o.versionId));
      }
      return out;
    };
    const before = await versions();
    expect(before.length).toBeGreaterThanOrEqual(2);
    const customer = `s_pc_${rid.slice(2, 8)}`;
    const older = await getObjectVersion(vb.keys, manifestObjectKey(rid), before.at(-1)!);
    expect(openManifest(older, rid, ring1).participants.some((p) => p.subjectId === customer)).toBe(true);

    await store.deleteRecording(rid, { participantId: 'pc', reason: 'consent-withdrawn-erase', actor: 'system' });
    const after = await versions();
    console.log(`versioned keys bucket: ${before.length} manifest versions before the erasure, ${after.length} after`);
    expect(after).toHaveLength(1);
    const m = openManifest(await getObject(vb.keys, manifestObjectKey(rid)), rid, ring1);
    expect(m.participants.some((p) => p.subjectId === customer)).toBe(false);
    expect(m.participants.find((p) => p.participantId === 'pc')?.erased).toBeDefined();
  });

  it('key rotation: recording continues across it, new recordings use the new KEK, old ones still open', async () => {
    const store = await openStore({ keyring: ring1 });
    const old = await begin(store);
    await store.putSegment(segMeta(old, 'pa', 0), fakeOgg(old, 'pa', 0));
    store.setKeyring(ring12);
    // Same track keeps its data key (wrapped by k1); a participant's first segment after rotation gets k2.
    await store.putSegment(segMeta(old, 'pa', 1), fakeOgg(old, 'pa', 1));
    await store.putSegment(segMeta(old, 'pc', 0), fakeOgg(old, 'pc', 0));
    const fresh = await begin(store);
    await store.putSegment(segMeta(fresh, 'pa', 0), fakeOgg(fresh, 'pa', 0));
    const mOld = await store.endRecording(old);
    const mNew = await store.endRecording(fresh);
    expect(mOld.participants.map((p) => p.kekId)).toEqual(['k1', 'k2']);
    expect(mNew.participants[0]!.kekId).toBe('k2');

    const reader = await openStore({ keyring: ring12, sweep: false });
    expect((await readTrackOgg(reader, old, 'pa')).map((b) => b.equals(fakeOgg(old, 'pa', 0)) || b.equals(fakeOgg(old, 'pa', 1)))).toEqual([true, true]);
    expect(await readTrackOgg(reader, old, 'pc')).toHaveLength(1);
    expect(await readTrackOgg(reader, fresh, 'pa')).toHaveLength(1);
    // The old keyring cannot read what the new KEK wrapped.
    await expectCode(readTrackOgg(await openStore({ keyring: ring1, sweep: false }), fresh, 'pa'), 'KEK_UNKNOWN');
  });

  it('bad inputs fail clearly and change nothing', async () => {
    await expectCode(openStore({ retentionSeconds: 30 * 86400 + 1 }), 'RETENTION_INVALID');
    await expectCode(openStore({ retentionSeconds: 0 }), 'RETENTION_INVALID');
    const store = await openStore();
    const before = [...(await listNames(client, buckets.media)), ...(await listNames(client, buckets.keys))];
    const spoolBefore = store.spoolBytes();
    const rid = newRecordingId();
    const base = { recordingId: rid, callId: 'c_1', startedAt: Date.now(), participants: [{ participantId: 'pa', role: 'agent' as const, subjectId: 's_1' }], consentEvidence: [] };
    await expectCode(store.beginRecording({ ...base, recordingId: 'r.1' }), 'INVALID_ID');
    await expectCode(store.beginRecording({ ...base, callId: 'x'.repeat(65) }), 'INVALID_ID');
    await expectCode(store.beginRecording({ ...base, participants: [{ participantId: 'pa', role: 'boss' as never, subjectId: 's' }] }), 'INVALID_INPUT');
    await expectCode(store.beginRecording({ ...base, participants: [{ participantId: 'pa', role: 'agent', subjectId: 'jane@example.com' }] }), 'INVALID_ID');
    await expectCode(store.beginRecording({ ...base, startedAt: Date.now() - 31 * 86400_000 }), 'RECORDING_EXPIRED');
    await expectCode(store.beginRecording({ ...base, consentEvidence: [{ nested: { a: 1 } as never }] }), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0), fakeOgg(rid, 'pa', 0)), 'RECORDING_NOT_ACTIVE');
    await expectCode(readTrackOgg(store, rid, 'pa'), 'RECORDING_NOT_FOUND');

    await store.beginRecording(base);
    await expectCode(store.putSegment(segMeta(rid, 'pz', 0), fakeOgg(rid, 'pz', 0)), 'PARTICIPANT_UNKNOWN');
    await expectCode(store.putSegment(segMeta(rid, '../pa', 0), fakeOgg(rid, 'pa', 0)), 'INVALID_ID');
    await expectCode(store.putSegment(segMeta(rid, 'pa', -1), fakeOgg(rid, 'pa', 0)), 'INVALID_SEGMENT');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0, { durationMs: Number.NaN }), fakeOgg(rid, 'pa', 0)), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0, { quality: { big: 'x'.repeat(200), b: 'y'.repeat(200), c: 'z'.repeat(200), d: 'w'.repeat(200) } }), fakeOgg(rid, 'pa', 0)), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0), Buffer.alloc(0)), 'INVALID_INPUT');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0), Buffer.alloc(8 * 1024 * 1024 + 1)), 'SEGMENT_TOO_LARGE');
    await expectCode(store.deleteRecording(rid, { reason: '', actor: 'tl_1' }), 'INVALID_INPUT');
    await expectCode(store.deleteRecording(rid, { reason: 'asked by Jöns', actor: 'tl_1' }), 'INVALID_INPUT');
    await expectCode(store.deleteRecording(rid, { reason: 'agent-request', actor: 'Jane Doe' }), 'INVALID_ID');
    await expectCode(store.deleteRecording('bad id', { reason: 'x', actor: 'tl_1' }), 'INVALID_ID');
    // Nothing of the failed calls reached the store or the spool (only the begun manifest).
    const after = [...(await listNames(client, buckets.media)), ...(await listNames(client, buckets.keys))];
    expect(after.filter((k) => !before.includes(k))).toEqual([manifestObjectKey(rid)]);
    expect(store.spoolBytes()).toBe(spoolBefore);
    expect((await store.getManifest(rid)).segments).toEqual([]);

    await store.putSegment(segMeta(rid, 'pa', 0), fakeOgg(rid, 'pa', 0));
    await expectCode(store.putSegment(segMeta(rid, 'pa', 0), fakeOgg(rid, 'pa', 0)), 'SEGMENT_OUT_OF_ORDER');
    expect((await store.getManifest(rid)).segments).toHaveLength(1);
    await store.endRecording(rid);
    await expectCode(store.putSegment(segMeta(rid, 'pa', 1), fakeOgg(rid, 'pa', 1)), 'RECORDING_NOT_ACTIVE');
    await expectCode(readTrackOgg(store, rid, 'pz'), 'PARTICIPANT_UNKNOWN');
  });

  it('deletes a participant, then the recording, keys first; idempotent; audited; no key material in receipts', async () => {
    const audit = new MemoryAudit();
    const store = await openStore({ audit });
    const rid = await begin(store);
    for (let seg = 0; seg < 3; seg++) for (const p of ['pa', 'pc']) await store.putSegment(segMeta(rid, p, seg), fakeOgg(rid, p, seg));
    const keyDocC = (await getObject(buckets.keys, dataKeyObjectKey(rid, 'pc'))).toString();

    // Consent withdrawn with erase mid-call: the customer's part goes, the agent's stays.
    const r1 = await store.deleteRecording(rid, { participantId: 'pc', reason: 'consent-withdrawn-erase', actor: 'system' });
    expect(r1).toMatchObject({ scope: 'participant', complete: true, nothingLeft: false, manifest: 'updated' });
    expect(r1.mediaObjects.count).toBe(3);
    expect(r1.dataKeys).toEqual([expect.objectContaining({ participantId: 'pc', kekId: 'k1', destroyed: ['memory', 'store'] })]);
    expect(await listNames(client, buckets.media, `rec/${rid}/pc/`)).toEqual([]);
    expect(await listNames(client, buckets.keys, `keys/${rid}/`)).toEqual([dataKeyObjectKey(rid, 'pa')]);
    const m = await store.getManifest(rid);
    expect(m.segments.every((s) => s.participantId === 'pa')).toBe(true);
    expect(m.participants[1]).toMatchObject({ participantId: 'pc', erased: { reason: 'consent-withdrawn-erase' } });
    expect(m.participants[1]!.subjectId).toBeUndefined();
    await expectCode(store.putSegment(segMeta(rid, 'pc', 3), fakeOgg(rid, 'pc', 3)), 'PARTICIPANT_ERASED');
    await expectCode(readTrackOgg(store, rid, 'pc'), 'PARTICIPANT_ERASED');
    // The agent keeps recording.
    await store.putSegment(segMeta(rid, 'pa', 3), fakeOgg(rid, 'pa', 3));
    expect(await readTrackOgg(store, rid, 'pa')).toHaveLength(4);

    // Team lead deletes the whole recording.
    const r2 = await store.deleteRecording(rid, { reason: 'agent-request', actor: 'tl_42' });
    expect(r2).toMatchObject({ scope: 'recording', complete: true, nothingLeft: false, manifest: 'deleted' });
    expect(r2.mediaObjects.count).toBe(4);
    expect(await listNames(client, buckets.media, `rec/${rid}/`)).toEqual([]);
    expect(await listNames(client, buckets.keys, `keys/${rid}/`)).toEqual([]);
    expect(await listNames(client, buckets.keys, manifestObjectKey(rid))).toEqual([]);
    await expectCode(readTrackOgg(store, rid, 'pa'), 'RECORDING_NOT_FOUND');
    await expectCode(store.putSegment(segMeta(rid, 'pa', 4), fakeOgg(rid, 'pa', 4)), 'RECORDING_DELETED');

    // Idempotent, from this process or from a fresh one.
    const r3 = await store.deleteRecording(rid, { reason: 'agent-request', actor: 'tl_42' });
    expect(r3).toMatchObject({ nothingLeft: true, complete: true, manifest: 'absent' });
    expect(r3.mediaObjects.count).toBe(0);
    const other = await openStore({ sweep: false });
    expect((await other.deleteRecording(rid, { reason: 'again', actor: 'tl_42' })).nothingLeft).toBe(true);

    expect(audit.entries.map((e) => e.type)).toEqual(['recording.deleted', 'recording.deleted', 'recording.deleted']);
    // Pseudonymous refs only, and no subject id (issue 19: the trail outlives the erasure it records).
    expect(audit.entries[0]!.subjects).toEqual({ recordingId: rid, participantId: 'pc' });
    expect(JSON.stringify(audit.entries)).not.toContain(`s_pc_${rid.slice(2, 8)}`);
    expect(audit.entries[1]!.actor).toBe('tl_42');
    const wrapped = (JSON.parse(keyDocC) as { wrapped: string }).wrapped;
    for (const r of [r1, r2, r3, ...audit.entries]) {
      const text = JSON.stringify(r) + inspect(r, { depth: 10 });
      expect(text).not.toContain(wrapped);
      expect(text).not.toContain(k1);
    }
  });

  it('deletion and expiry receipts land in the real hash-chained audit trail', async () => {
    const trail = await AuditTrail.open({ client, bucket: buckets.audit, writerId: 'storage-test', createBucket: true, hmacKey: TEST_AUDIT_KEY, retention: TEST_RETENTION });
    const store = await openStore({ audit: trail, retentionSeconds: 2 });
    const rid = await begin(store);
    await store.putSegment(segMeta(rid, 'pc', 0), fakeOgg(rid, 'pc', 0));
    const receipt = await store.deleteRecording(rid, { participantId: 'pc', reason: 'consent-withdrawn-erase', actor: 'system' });
    const rid2 = await begin(store);
    await store.putSegment(segMeta(rid2, 'pa', 0), fakeOgg(rid2, 'pa', 0));
    await new Promise<void>((resolve) => store.sweeper.on('expired', (id) => id === rid2 && resolve()));
    const entries = await trail.list();
    const del = entries.find((e) => e.type === 'recording.deleted' && e.refs.recordingId === rid)!;
    expect(del).toMatchObject({ actor: 'system', purpose: 'consent-withdrawn-erase', refs: { participantId: 'pc' } });
    expect(del.details).toMatchObject({ receiptId: receipt.receiptId, mediaObjects: { count: 1 } });
    expect(entries.find((e) => e.type === 'recording.expired' && e.refs.recordingId === rid2)).toMatchObject({ actor: 'system', role: 'system' });
    expect((await trail.verify()).ok).toBe(true);
    await store.close();
  });

  it('refuses deletion blocked by an object lock, naming the object, and destroys nothing', async () => {
    const lb = s3Buckets.layout();
    await client.makeBucket(lb.media, 'us-east-1', { ObjectLocking: true });
    await client.setObjectLockConfig(lb.media, { mode: 'GOVERNANCE', unit: 'Days', validity: 1 });
    const store = await openStore({ buckets: lb });
    const rid = await begin(store);
    await store.putSegment(segMeta(rid, 'pa', 0), fakeOgg(rid, 'pa', 0));
    const msg = await expectCode(store.deleteRecording(rid, { reason: 'agent-request', actor: 'tl_1' }), 'OBJECT_LOCKED');
    expect(msg).toContain(mediaObjectKey(rid, 'pa', 0));
    expect(msg).toMatch(/GOVERNANCE retention until \d{4}-/);
    // Nothing destroyed: the key and the media are still there and the track still plays.
    expect(await listNames(client, lb.keys, `keys/${rid}/`)).toHaveLength(1);
    expect(await readTrackOgg(store, rid, 'pa')).toHaveLength(1);
    await store.close();
  });

  it('expires at the exact instant: media, keys, manifest gone, audited; reads refused once expired', async () => {
    const audit = new MemoryAudit();
    const store = await openStore({ retentionSeconds: 3, audit });
    const rid = await begin(store);
    const startedAt = (await store.getManifest(rid)).startedAtMs;
    await store.putSegment(segMeta(rid, 'pa', 0), fakeOgg(rid, 'pa', 0));
    await store.putSegment(segMeta(rid, 'pc', 0), fakeOgg(rid, 'pc', 0));
    const tags = (await client.getObjectTagging(buckets.media, mediaObjectKey(rid, 'pa', 0))) as Array<{ Key: string; Value: string }>;
    expect(tags.find((t) => t.Key === 'retention-class')?.Value).toBe('training-3s');
    const expired = new Promise<number>((resolve) => store.sweeper.once('expired', () => resolve(Date.now())));
    const at = await expired;
    // Late by at most scheduling jitter plus the deletion round trips.
    expect(at - (startedAt + 3000)).toBeGreaterThanOrEqual(0);
    expect(at - (startedAt + 3000)).toBeLessThan(1500);
    expect(await listNames(client, buckets.media, `rec/${rid}/`)).toEqual([]);
    expect(await listNames(client, buckets.keys, `keys/${rid}/`)).toEqual([]);
    expect(await listNames(client, buckets.keys, manifestObjectKey(rid))).toEqual([]);
    const entry = audit.entries.find((e) => e.type === 'recording.expired')!;
    expect(entry).toMatchObject({ actor: 'system', purpose: 'retention-expired', details: { kind: 'expiry', complete: true, manifest: 'deleted' } });
    expect(entry.details.mediaObjects.count).toBe(2);
    expect(entry.details.dataKeys.map((d) => d.participantId).sort()).toEqual(['pa', 'pc']);
    await expectCode(store.putSegment(segMeta(rid, 'pa', 1), fakeOgg(rid, 'pa', 1)), 'RECORDING_DELETED');

    // Without the sweeper (a read-only tool), an expired recording is still refused for playback.
    const idle = await openStore({ retentionSeconds: 2, sweep: false });
    const rid2 = await begin(idle);
    await idle.putSegment(segMeta(rid2, 'pa', 0), fakeOgg(rid2, 'pa', 0));
    await new Promise((r) => setTimeout(r, 2100));
    await expectCode(readTrackOgg(idle, rid2, 'pa'), 'RECORDING_EXPIRED');
    await expectCode(idle.putSegment(segMeta(rid2, 'pa', 1), fakeOgg(rid2, 'pa', 1)), 'RECORDING_EXPIRED');
    // A sweeping store finds it by scanning the manifests and deletes it.
    const sweeper = await openStore({ sweepScanIntervalMs: 200, audit });
    await new Promise<void>((resolve) => sweeper.sweeper.once('expired', () => resolve()));
    expect(await listNames(client, buckets.media, `rec/${rid2}/`)).toEqual([]);
    expect(audit.entries.filter((e) => e.type === 'recording.expired').map((e) => e.subjects.recordingId)).toContain(rid2);
  });

  it('measures: sealed bytes vs Opus payload, upload latency per 10 s segment', async () => {
    const store = await openStore();
    const rid = await begin(store, newRecordingId(), ['pa']);
    // 10 s of 32 kb/s Opus: 500 packets of 80 bytes (20 ms each) in a real Ogg Opus file.
    const segments = 60;
    let opusBytes = 0;
    let oggBytes = 0;
    let sealedBytes = 0;
    const latencies: number[] = [];
    for (let seg = 0; seg < segments; seg++) {
      const w = new OggOpusWriter({ serial: seg + 1, channels: 1, preSkip: 0, inputSampleRate: 48000 });
      for (let i = 0; i < 500; i++) {
        const pkt = randomBytes(80);
        pkt[0] = 0xfc; // CELT fullband 20 ms, one frame
        w.addPacket(pkt, 960);
      }
      const ogg = Buffer.concat([w.header(), w.finish()]);
      const payload = 500 * 80;
      const t0 = performance.now();
      const r = await store.putSegment(segMeta(rid, 'pa', seg, { opusPayloadBytes: payload }), ogg);
      latencies.push(performance.now() - t0);
      expect(r.stored).toBe('uploaded');
      opusBytes += payload;
      oggBytes += ogg.length;
      sealedBytes += r.sealedBytes;
    }
    await store.endRecording(rid);
    latencies.sort((a, b) => a - b);
    const p = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
    const overhead = (sealedBytes / opusBytes - 1) * 100;
    const sealOverhead = (sealedBytes / oggBytes - 1) * 100;
    console.log(
      `[storage] ${segments} x 10 s segments: opus payload ${opusBytes} B, ogg ${oggBytes} B, sealed ${sealedBytes} B; ` +
        `overhead vs Opus payload ${overhead.toFixed(2)} % (seal alone ${sealOverhead.toFixed(3)} %); ` +
        `putSegment (seal + PUT with tags) p50 ${p(0.5).toFixed(1)} ms, p99 ${p(0.99).toFixed(1)} ms; ` +
        `store stats p50 ${store.stats().uploadLatencyMs.p50.toFixed(1)} ms`,
    );
    expect(overhead).toBeLessThan(3);
    expect(await readTrackOgg(store, rid, 'pa')).toHaveLength(segments);
  });
});
