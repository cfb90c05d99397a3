import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION_2, type RecordingReport } from '../../../src/control/protocolV2.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { summarizeReceipt } from '../../../src/erasure/storeAdapter.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { bucketNames, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { callBody, dtmfEvidence, startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep, s3Config } from '../../support/s3.ts';
import { fakeOgg, segMeta } from '../../support/storageFixtures.ts';

/**
 * The erasure ledger and deletions against real PostgreSQL and the real S3 server. The test plays
 * the recording worker: it writes through its own RecordingStore and speaks the stream. Covered:
 * an erase for a recording no worker holds (carried out by the control plane from the store), an
 * erase while the worker's link is down and the call then ended, a live holder that confirms
 * (final sweep after it), a team-lead deletion, and a late report of an erased call.
 */

const logger = createLogger('silent');
const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
let db: TestDatabase;
let t: TestControlPlane;
let client: Client;
let prefix: string;
let buckets: BucketNames;
const dirs: string[] = [];
const stores: RecordingStore[] = [];
const streams: StreamClientV2[] = [];

async function workerStore(nodeId: string): Promise<RecordingStore> {
  const spoolDir = await mkdtemp(join(tmpdir(), 'optin-ledger-'));
  dirs.push(spoolDir);
  const store = await RecordingStore.open({ client, buckets, keyring: Keyring.fromConfig(keyring), spoolDir, spoolMaxBytes: 64 << 20, logger, nodeId, sweep: false });
  stores.push(store);
  return store;
}

async function connect(workerId: string): Promise<StreamClientV2> {
  const c = await StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId });
  streams.push(c);
  await c.waitSnapshot();
  return c;
}

/** Records two segments per participant of call `callId` into `store`; returns the recording id. */
async function record(store: RecordingStore, callId: string, end = true): Promise<string> {
  const recordingId = `r-${callId}`;
  await store.beginRecording({
    recordingId,
    callId,
    startedAt: Date.now() - 20_000,
    participants: [
      { participantId: `${callId}-a`, role: 'agent', subjectId: 'agent-l', teamLeadId: 'lead-l' },
      { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${callId}` },
    ],
    consentEvidence: [],
  });
  for (const p of [`${callId}-a`, `${callId}-c`]) {
    for (const seg of [0, 1]) await store.putSegment(segMeta(recordingId, p, seg), fakeOgg(recordingId, p, seg));
  }
  if (end) await store.endRecording(recordingId);
  return recordingId;
}

function report(callId: string, event: RecordingReport['event']): RecordingReport {
  const now = Date.now();
  return {
    v: PROTOCOL_VERSION_2,
    type: 'recording.report',
    recordingId: `r-${callId}`,
    callId,
    event,
    participants: [
      { participantId: `${callId}-a`, role: 'agent', subjectId: 'agent-l', teamLeadId: 'lead-l' },
      { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${callId}` },
    ],
    startedAt: now - 20_000,
    ...(event === 'ended' ? { endedAt: now } : {}),
    tracks: 2,
    segments: 4,
    bytes: 4 * 4000,
    expiresAt: now + 86_400_000,
  };
}

async function startCall(callId: string): Promise<void> {
  expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody(callId, 'agent-l') })).status).toBe(201);
  expect((await t.api('POST', `/v1/calls/${callId}/consent`, { token: t.tokens.ivr, body: { participantId: `${callId}-c`, decision: 'granted', evidence: dtmfEvidence() } })).status).toBe(200);
}

async function erase(callId: string): Promise<string> {
  const res = await t.api('POST', `/v1/calls/${callId}/consent`, { token: t.tokens.ivr, body: { participantId: `${callId}-c`, decision: 'withdrawn', erase: true, evidence: dtmfEvidence() } });
  expect(res.status).toBe(202);
  return res.body.erasureId as string;
}

async function waitDone(kind: 'erasures' | 'deletions', id: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  let last: Record<string, unknown> = {};
  await expect
    .poll(
      async () => {
        last = (await t.api('GET', `/v1/${kind}/${id}`, { token: t.tokens.ops })).body;
        return last.state;
      },
      { timeout: timeoutMs, interval: 100 },
    )
    .toBe('done');
  return last;
}

async function expectErased(store: RecordingStore, recordingId: string, participantId: string): Promise<void> {
  const manifest = await store.getManifest(recordingId);
  const p = manifest.participants.find((x) => x.participantId === participantId)!;
  expect(p.erased).toBeDefined();
  expect(p.subjectId).toBeUndefined();
  expect(manifest.segments.some((s) => s.participantId === participantId)).toBe(false);
  // Nothing of the customer's media or key is left in the buckets, any version.
  const names: string[] = [];
  for (const bucket of [buckets.media, buckets.keys]) {
    for await (const o of client.listObjects(bucket, '', true, { IncludeVersion: true }) as AsyncIterable<{ name?: string }>) if (o.name) names.push(o.name);
  }
  expect(names.filter((n) => n.includes(`${recordingId}/${participantId}`))).toEqual([]);
}

beforeAll(async () => {
  db = await createTestDatabase();
  client = makeMinioClient();
  prefix = freshBucketPrefix();
  buckets = bucketNames({ prefix: `${prefix}-` });
  const dataDir = await mkdtemp(join(tmpdir(), 'optin-cp-data-'));
  dirs.push(dataDir);
  const s3 = s3Config();
  t = await startTestControlPlane({
    databaseUrl: db.url,
    overrides: {
      dataDir,
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.region': s3.region,
      's3.bucketPrefix': `${prefix}-`,
      keyring,
      'ledger.holderTimeoutMs': 8_000,
    },
    deps: { store: undefined },
  });
});

afterAll(async () => {
  for (const s of streams) s.close();
  await t?.close();
  for (const s of stores) await s.close().catch(() => undefined);
  await db?.drop();
  if (client !== undefined) for (const b of Object.values(buckets)) await removeBucketDeep(client, b);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('erasure ledger', () => {
  it('an erase for a recording no worker holds is carried out from the store, with the store receipt', async () => {
    await startCall('la');
    const store = await workerStore('w-gone');
    const recordingId = await record(store, 'la');
    const w = await connect('w-gone');
    w.send(report('la', 'ended'));
    await expect.poll(async () => (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).status).toBe(200);
    w.close(); // the worker is gone
    await t.api('POST', '/v1/calls/la/end', { token: t.tokens.ivr });
    const erasureId = await erase('la');
    const done = await waitDone('erasures', erasureId);
    const receipt = done.receipt as { storeReceipts: Array<Record<string, unknown>>; confirmedBy: unknown[]; unconfirmedHolders: unknown[] };
    expect(receipt.storeReceipts).toEqual([expect.objectContaining({ recordingId, participantId: 'la-c', complete: true, nothingLeft: false, mediaObjects: 2, dataKeysDestroyed: 1 })]);
    expect(receipt.confirmedBy).toEqual([]);
    expect(receipt.unconfirmedHolders).toEqual([]);
    await expectErased(store, recordingId, 'la-c');
    // The agent's track is untouched; the catalogue forgot the customer.
    expect((await store.getManifest(recordingId)).segments.filter((s) => s.participantId === 'la-a')).toHaveLength(2);
    const row = (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).body as { participants: Array<Record<string, unknown>> };
    expect(row.participants.find((p) => p.participantId === 'la-c')).toEqual({ participantId: 'la-c', role: 'customer' });
  });

  it("an erase while the worker's link is down, then the call ends: carried out, and the worker learns it on reconnect", async () => {
    await startCall('lb');
    const store = await workerStore('w-down');
    const recordingId = await record(store, 'lb', false);
    const w = await connect('w-down');
    w.send(report('lb', 'begun'));
    await expect.poll(async () => (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).status).toBe(200);
    w.close(); // link down
    await w.waitFor(() => w.closeCode !== undefined);
    const erasureId = await erase('lb');
    expect((await t.api('POST', '/v1/calls/lb/end', { token: t.tokens.ivr })).status).toBe(200);
    await store.endRecording(recordingId);
    const done = await waitDone('erasures', erasureId);
    expect((done.receipt as { storeReceipts: unknown[] }).storeReceipts).toHaveLength(1);
    await expectErased(store, recordingId, 'lb-c');
    // Reconnected, the worker finds the erasure among the tombstones (it may still hold spooled copies).
    const again = await connect('w-down');
    expect(again.snapshot!.tombstones).toContainEqual({ recordingId, participantId: 'lb-c' });
    expect(again.snapshot!.erasures.some((e) => e.erasureId === erasureId)).toBe(false);
  });

  it('a live holder gets erasure.requested, deletes, confirms; the control plane sweeps after it and records both', async () => {
    await startCall('lc');
    const store = await workerStore('w-live');
    const recordingId = await record(store, 'lc', false);
    const w = await connect('w-live');
    w.send(report('lc', 'segment'));
    await expect.poll(async () => (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).status).toBe(200);
    const erasureId = await erase('lc');
    await w.waitFor(() => w.deltas.some((d) => d.fact.type === 'erasure.requested'), 5000, 'erasure.requested');
    const fact = w.deltas.find((d) => d.fact.type === 'erasure.requested')!.fact;
    expect(fact).toEqual({ type: 'erasure.requested', erasureId, callId: 'lc', participantId: 'lc-c', recordingIds: [recordingId] });
    // The holder stops, deletes the participant's part, forgets the key, confirms.
    const own = await store.deleteRecording(recordingId, { participantId: 'lc-c', reason: 'erasure', actor: 'w-live' });
    w.send({ v: PROTOCOL_VERSION_2, type: 'erasure.done', erasureId, receipts: [summarizeReceipt(own)] });
    const done = await waitDone('erasures', erasureId);
    const receipt = done.receipt as { storeReceipts: Array<Record<string, unknown>>; confirmedBy: Array<{ workerId: string; receipts: unknown[] }> };
    expect(receipt.confirmedBy.map((c) => c.workerId)).toEqual(['w-live']);
    expect(receipt.confirmedBy[0]!.receipts).toEqual([expect.objectContaining({ receiptId: own.receiptId })]);
    // The final sweep found nothing left.
    expect(receipt.storeReceipts).toEqual([expect.objectContaining({ recordingId, nothingLeft: true, complete: true })]);
    expect(done.confirmedBy).toEqual(['w-live']);
    await w.waitFor(() => w.deltas.some((d) => d.fact.type === 'erasure.completed'), 5000, 'erasure.completed');
    await expectErased(store, recordingId, 'lc-c');
  });

  it('a recording reported after its call was erased gets a follow-up erasure', async () => {
    await startCall('ld');
    await t.api('POST', '/v1/calls/ld/end', { token: t.tokens.ivr });
    const first = await erase('ld');
    await waitDone('erasures', first);
    const store = await workerStore('w-late');
    const recordingId = await record(store, 'ld');
    const w = await connect('w-late');
    w.send(report('ld', 'ended'));
    await expect
      .poll(async () => (await t.cp.db.query<{ id: string }>("SELECT id FROM erasures WHERE call_id = 'ld' AND id <> $1", [first])).rows.length, { timeout: 5000 })
      .toBe(1);
    const { rows } = await t.cp.db.query<{ id: string }>("SELECT id FROM erasures WHERE call_id = 'ld' AND id <> $1", [first]);
    w.close();
    await waitDone('erasures', rows[0]!.id);
    await expectErased(store, recordingId, 'ld-c');
  });
});

describe('deletions', () => {
  it('a team-lead deletion: the holder confirms, the store is swept, the catalogue says deleted, a late report does not revive it', async () => {
    await startCall('le');
    const store = await workerStore('w-del');
    const recordingId = await record(store, 'le', false);
    const w = await connect('w-del');
    w.send(report('le', 'segment'));
    await expect.poll(async () => (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).status).toBe(200);
    const res = await t.api('POST', `/v1/recordings/${recordingId}/deletion`, { token: t.tokens.ops, body: { actor: 'lead-l', reason: 'team-lead' } });
    expect(res.status).toBe(202);
    const deletionId = res.body.deletionId as string;
    await w.waitFor(() => w.deltas.some((d) => d.fact.type === 'recording.deleted'), 5000, 'recording.deleted');
    expect(w.deltas.find((d) => d.fact.type === 'recording.deleted')!.fact).toEqual({ type: 'recording.deleted', deletionId, recordingId, reason: 'team-lead' });
    const own = await store.deleteRecording(recordingId, { reason: 'team-lead', actor: 'w-del' });
    w.send({ v: PROTOCOL_VERSION_2, type: 'deletion.done', deletionId, receipt: summarizeReceipt(own) });
    const done = await waitDone('deletions', deletionId);
    expect(done.confirmedBy).toEqual(['w-del']);
    expect((done.receipt as { storeReceipts: Array<Record<string, unknown>> }).storeReceipts).toEqual([expect.objectContaining({ recordingId, nothingLeft: true })]);
    const err = await store.getManifest(recordingId).catch((e: unknown) => e);
    expect(isOptinError(err, 'RECORDING_NOT_FOUND')).toBe(true);
    w.send(report('le', 'segment')); // a late report from a writer that missed the news
    await new Promise((r) => setTimeout(r, 300));
    const row = (await t.api('GET', `/v1/recordings/${recordingId}`, { token: t.tokens.ops })).body;
    expect(row).toMatchObject({ state: 'deleted', participants: [] });
    // New sessions learn it from the snapshot's tombstones.
    const fresh = await connect('w-other');
    expect(fresh.snapshot!.tombstones).toContainEqual({ recordingId });
  });
});
