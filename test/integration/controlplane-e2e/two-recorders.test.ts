import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signCallToken } from '../../../src/callcontrol/callToken.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { sendRtp, type FfmpegRun } from '../../../src/media/ffmpeg.ts';
import { bucketNames, dataKeyPrefix, manifestObjectKey, mediaPrefix, type BucketNames } from '../../../src/storage/layout.ts';
import { useBuckets } from '../../support/buckets.ts';
import { startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { PolicyFacts, storedRecordingState } from '../../support/policyFacts.ts';
import { until } from '../../support/recorderNode.ts';
import { listNames, makeMinioClient, s3Config } from '../../support/s3.ts';
import { StreamRelay } from '../../support/streamRelay.ts';
import { spawnRecorder, type WorkerProcess } from '../../support/workerProcess.ts';
import { freeUdpPortPair } from '../../support/udpPorts.ts';
import { TEST_AUDIT_KEY_HEX } from '../../support/auditKey.ts';

/**
 * Two recorder processes (workers/recorder.ts) on one store, and a deletion (issue 13, "must
 * show"): a team lead deletes a recording that recorder B is writing. Whether B hears of it at
 * once or only after its link to the control plane comes back, no object, data key or manifest of
 * the recording reappears in the store afterwards (B stops, deletes what it holds, forgets the
 * key; its store refuses every later PUT and manifest write: the tombstone), B reports `deleted`
 * (R7), and recorder A, recording another call on the same store, is not disturbed. The control
 * plane (with the store's credentials) carries the deletion out and records the receipt.
 */

const buckets = useBuckets();
const prefix = buckets.prefix();
const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
const callSecret = randomBytes(32).toString('base64url');
/** The control plane's own spool (its store's writes), removed with it. */
const cpDataDir = mkdtempSync(path.join(tmpdir(), 'optin-2rec-cp-'));
let db: TestDatabase;
let control: TestControlPlane;
let policy: PolicyFacts;
let direct: Client;
let names: BucketNames;
const relays: Record<'a' | 'b', StreamRelay> = {} as never;
const workers: Record<'a' | 'b', { w: WorkerProcess; url: string; spool: string; id: string }> = {} as never;
const senders: FfmpegRun[] = [];

beforeAll(async () => {
  const s3 = s3Config();
  db = await createTestDatabase();
  control = await startTestControlPlane({
    databaseUrl: db.url,
    overrides: {
      'stream.heartbeatMs': 100,
      'ledger.graceMs': 300,
      'ledger.holderTimeoutMs': 10_000,
      'ledger.sweepIntervalMs': 100,
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.bucketPrefix': prefix,
      keyring,
      dataDir: cpDataDir,
    },
    deps: { store: undefined },
  });
  policy = new PolicyFacts({ url: control.cp.url, tokens: control.tokens });
  direct = makeMinioClient();
  names = bucketNames({ prefix });
  for (const k of ['a', 'b'] as const) {
    relays[k] = await StreamRelay.start({ target: control.cp.streamUrl, secret: control.secret });
    const spool = mkdtempSync(path.join(tmpdir(), `optin-2rec-${k}-`));
    const id = `w-2rec-${k}`;
    const w = spawnRecorder({
      OPTIN_S3_ENDPOINT: s3.endpoint,
      OPTIN_S3_ACCESS_KEY: s3.accessKey,
      OPTIN_S3_SECRET_KEY: s3.secretKey,
      OPTIN_S3_BUCKET_PREFIX: prefix,
      OPTIN_KEYRING: JSON.stringify(keyring),
      OPTIN_CONTROL_URL: relays[k].url,
      OPTIN_CONTROL_SECRET: control.secret,
      OPTIN_CONTROL_HEARTBEAT_TIMEOUT_MS: '300',
      OPTIN_SIP_LEG_SECRET: callSecret,
      OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX,
      // Test buckets must be removable after the file: GOVERNANCE retention, one day.
      OPTIN_AUDIT_LOCK_MODE: 'GOVERNANCE',
      OPTIN_AUDIT_LOCK_DAYS: '1',
      OPTIN_HTTP_PORT: '0',
      OPTIN_SPOOL_DIR: spool,
      OPTIN_SEGMENT_SECONDS: '1',
      OPTIN_MEDIASOUP_WORKERS: '1',
      OPTIN_WORKER_ID: id,
      OPTIN_MAX_EVENT_LOOP_LAG_MS: '60000',
      OPTIN_LOG_LEVEL: 'info',
    });
    const ready = await w.waitForLog('recorder ready', 60_000);
    workers[k] = { w, url: String(ready.url), spool, id };
  }
  await policy.setSchedule('ag-2rec', [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 100);
}, 120_000);

afterAll(async () => {
  for (const s of senders) s.stop();
  for (const k of ['a', 'b'] as const) {
    workers[k]?.w.child.kill('SIGKILL');
    await relays[k]?.close();
    if (workers[k]) rmSync(workers[k].spool, { recursive: true, force: true });
  }
  await control?.close();
  await db?.drop();
  rmSync(cpDataDir, { recursive: true, force: true });
});

/** A call on recorder `k`, its legs asked through call control (as the SIP gateway does), consent given; resolves with its recording id. */
async function recordedCall(k: 'a' | 'b', callId: string): Promise<string> {
  await policy.startCall(callId, [
    { participantId: `${callId}-a`, role: 'agent', subjectId: 'ag-2rec', teamLeadId: 'lead-2rec' },
    { participantId: `${callId}-c`, role: 'customer', subjectId: `${callId}-subj` },
  ]);
  await sleep(200); // the worker learns of the call over its stream
  let ssrc = callId.length * 0x100 + (k === 'a' ? 0x10 : 0x20);
  for (const [participantId, codec, file] of [
    [`${callId}-a`, 'opus', 'agent-tone.wav'],
    [`${callId}-c`, 'pcmu', 'customer-tone.wav'],
  ] as const) {
    ssrc++;
    // A single-use sip-leg token, and the leg pinned to the address the gateway sends from.
    const token = signCallToken(callSecret, { aud: 'sip-leg', callId, participantId, lifetimeSeconds: 60 });
    const from = await freeUdpPortPair();
    const res = await fetch(`${workers[k].url}/calls/${callId}/plain-legs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ participantId, codec, ssrc, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } }),
    });
    expect(res.status).toBe(201);
    const leg = (await res.json()) as { ip: string; rtpPort: number; rtcpPort: number };
    senders.push(sendRtp({ file: fixturePath(file), codec, ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc, seconds: 40, localRtpPort: from.rtpPort, localRtcpPort: from.rtcpPort }));
  }
  await sleep(500);
  await policy.grantConsent(callId, `${callId}-c`, { method: 'dtmf', at: Date.now(), infoVersion: 'notice-v1' });
  let recordingId = '';
  await until(async () => {
    const s = await storedRecordingState(control.cp.db, callId);
    if (s?.recording && s.recordingId) recordingId = s.recordingId;
    return recordingId !== '';
  }, 10_000, `${callId} recording on ${k}`);
  return recordingId;
}

/** Every object of the recording in the store: media (all versions listed by name), data keys, manifest. */
async function objectsOf(recordingId: string): Promise<string[]> {
  return [
    ...(await listNames(direct, names.media, mediaPrefix(recordingId))),
    ...(await listNames(direct, names.keys, dataKeyPrefix(recordingId))),
    ...(await listNames(direct, names.keys, manifestObjectKey(recordingId))),
  ];
}

async function deletionDone(deletionId: string): Promise<Record<string, unknown>> {
  let status: Record<string, unknown> = {};
  await until(async () => (status = await policy.deletion(deletionId)).state === 'done', 30_000, `deletion ${deletionId} done`);
  return status;
}

describe('a deletion while another recorder writes the recording', () => {
  it('B hears of it at once: it stops (R7 deleted), confirms, and nothing of the recording reappears; A records on', async () => {
    const onA = await recordedCall('a', 'call-2rec-a1');
    const onB = await recordedCall('b', 'call-2rec-b1');
    await until(async () => (await objectsOf(onB)).length >= 4, 15_000, 'B uploaded a few segments');

    const deletionId = await policy.deleteRecording(onB, { actor: 'lead-2rec', reason: 'team-lead' });
    await until(async () => (await storedRecordingState(control.cp.db, 'call-2rec-b1'))?.reasons.includes('deleted') === true, 10_000, 'B reports deleted');
    const status = await deletionDone(deletionId);
    const receipt = status.receipt as { confirmedBy: { workerId: string; receipts: { recordingId: string; complete: boolean }[] }[]; storeReceipts: { recordingId: string; complete: boolean }[] };
    // Every live worker that got the fact confirms; B (the holder) with its store receipt, A with nothing (it held none of it).
    const byB = receipt.confirmedBy.find((c) => c.workerId === workers.b.id);
    expect(byB?.receipts[0]).toMatchObject({ recordingId: onB, complete: true });
    for (const c of receipt.confirmedBy) if (c.workerId !== workers.b.id) expect(c.receipts).toEqual([]);
    expect(receipt.storeReceipts[0]).toMatchObject({ recordingId: onB, complete: true });
    expect(await objectsOf(onB)).toEqual([]);
    // Longer than B's manifest flush (5 s) and several segments of media still arriving at B.
    await sleep(7000);
    expect(await objectsOf(onB)).toEqual([]);
    expect((await storedRecordingState(control.cp.db, 'call-2rec-b1'))?.recording).toBe(false);
    // A was not disturbed: still recording, its objects growing.
    expect((await storedRecordingState(control.cp.db, 'call-2rec-a1'))?.recording).toBe(true);
    expect((await objectsOf(onA)).length).toBeGreaterThan(4);
  }, 120_000);

  it('B\'s link is down while the deletion is made: back, it deletes what it held and uploads none of it; nothing reappears', async () => {
    const onB = await recordedCall('b', 'call-2rec-b2');
    await until(async () => (await objectsOf(onB)).length >= 4, 15_000, 'B uploaded a few segments');
    relays.b.down(); // B goes stale: its gate closes, what it sealed waits in its spool
    await sleep(600);
    const deletionId = await policy.deleteRecording(onB, { actor: 'lead-2rec', reason: 'team-lead' });
    const status = await deletionDone(deletionId); // no live holder: the control plane deletes it itself
    const receipt = status.receipt as { confirmedBy: { workerId: string; receipts: unknown[] }[]; storeReceipts: { recordingId: string; complete: boolean }[] };
    expect(receipt.confirmedBy.map((c) => c.workerId)).not.toContain(workers.b.id);
    for (const c of receipt.confirmedBy) expect(c.receipts).toEqual([]);
    expect(receipt.storeReceipts[0]).toMatchObject({ recordingId: onB, complete: true });
    expect(await objectsOf(onB)).toEqual([]);
    await sleep(1500);
    expect(await objectsOf(onB)).toEqual([]); // nothing while B is away: it uploads nothing while stale

    relays.b.up(); // B reconnects: the snapshot's tombstone
    await until(async () => (await storedRecordingState(control.cp.db, 'call-2rec-b2'))?.reasons.includes('deleted') === true, 10_000, 'B reports deleted');
    await sleep(7000); // B's uploader and manifest flush had every chance to resurrect it
    expect(await objectsOf(onB)).toEqual([]);
  }, 120_000);
});
