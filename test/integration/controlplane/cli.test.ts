import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upsertEntry } from '../../../src/catalogue/Catalogue.ts';
import { main } from '../../../src/cli/main.ts';
import type { CliIo } from '../../../src/cli/io.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { requestDeletion } from '../../../src/erasure/ledger.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { bucketNames, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { callBody, dtmfEvidence, startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { TEST_AUDIT_KEY_HEX } from '../../support/auditKey.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep, s3Config } from '../../support/s3.ts';
import { fakeOgg, segMeta } from '../../support/storageFixtures.ts';

/** `optin facts`, `optin integrations` and `optin catalogue rebuild` against the real services. */

let db: TestDatabase;
let t: TestControlPlane;
let client: Client;
let buckets: BucketNames;
let prefix: string;
const dirs: string[] = [];
const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };

function capture(): CliIo & { stdout: () => string; stderr: () => string } {
  let out = '';
  let err = '';
  return { out: (s) => void (out += s), err: (s) => void (err += s), errIsTty: false, stdout: () => out, stderr: () => err };
}

beforeAll(async () => {
  db = await createTestDatabase();
  t = await startTestControlPlane({ databaseUrl: db.url });
  client = makeMinioClient();
  prefix = freshBucketPrefix();
  buckets = bucketNames({ prefix: `${prefix}-` });
});

afterAll(async () => {
  await t?.close();
  await db?.drop();
  if (client !== undefined) for (const b of Object.values(buckets)) await removeBucketDeep(client, b);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('optin facts', () => {
  it('posts JSON-line facts once, however often the file is replayed, and reports refusals', async () => {
    const facts = [
      JSON.stringify({ type: 'call.started', ...callBody('cli-1') }),
      JSON.stringify({ type: 'consent.granted', callId: 'cli-1', participantId: 'cli-1-c', evidence: dtmfEvidence(1_790_000_000_000) }),
      JSON.stringify({ type: 'team.set', agentId: 'agent-1', teamLeadId: 'lead-cli' }),
      JSON.stringify({ type: 'schedule.set', agentId: 'agent-1', windows: [{ start: Date.now() + 3_600_000, end: Date.now() + 7_200_000 }], monthlyCap: 4 }),
    ].join('\n');
    const env = { OPTIN_FACTS_TOKEN: t.tokens.ivr };
    const head = async () => (await t.cp.db.query<{ seq: number }>('SELECT seq FROM stream_head')).rows[0]!.seq;
    const before = await head();
    // ivr may not set teams or schedules: those two are refused (403), the rest applied.
    const run = capture();
    const code = await import('../../../src/cli/facts.ts').then((m) => m.runFacts(['--url', t.cp.url], env, run, () => facts));
    expect(code).toBe(1);
    const lines = run.stdout().trim().split('\n').map((l) => JSON.parse(l) as { type: string; status: number });
    expect(lines.map((l) => [l.type, l.status])).toEqual([
      ['call.started', 201],
      ['consent.granted', 200],
      ['team.set', 403],
      ['schedule.set', 403],
    ]);
    expect(await head()).toBe(before + 2);
    // Replayed: the same keys, the first answers, nothing applied twice.
    const again = capture();
    await import('../../../src/cli/facts.ts').then((m) => m.runFacts(['--url', t.cp.url], env, again, () => facts.split('\n').slice(0, 2).join('\n')));
    expect(again.stdout().trim().split('\n').map((l) => (JSON.parse(l) as { status: number }).status)).toEqual([201, 200]);
    expect(await head()).toBe(before + 2);
  });

  it('takes facts as flags through `optin facts --fact`', async () => {
    const io = capture();
    const code = await main(['facts', '--url', t.cp.url, '--fact', JSON.stringify({ type: 'call.paused', callId: 'cli-1' })], { OPTIN_FACTS_TOKEN: t.tokens.ivr }, io);
    expect(code).toBe(0);
    expect(JSON.parse(io.stdout())).toMatchObject({ type: 'call.paused', status: 200 });
  });
});

describe('optin integrations', () => {
  it('add prints a working token once; disable revokes it', async () => {
    const io = capture();
    expect(await main(['integrations', 'add', '--name', 'hr-system', '--scopes', 'hr'], { OPTIN_DATABASE_URL: db.url }, io)).toBe(0);
    const token = /token, shown once: (\S+)/.exec(io.stdout())![1]!;
    expect((await t.api('PUT', '/v1/agents/agent-x/team-lead', { token, body: { teamLeadId: 'lead-x' } })).status).toBe(200);
    expect((await t.api('POST', '/v1/calls', { token, body: callBody('cli-x') })).status).toBe(403);
    expect(await main(['integrations', 'disable', '--name', 'hr-system'], { OPTIN_DATABASE_URL: db.url }, capture())).toBe(0);
    await new Promise((r) => setTimeout(r, 5_100)); // the auth cache lives 5 s
    expect((await t.api('PUT', '/v1/agents/agent-x/team-lead', { token, body: { teamLeadId: 'lead-y' } })).status).toBe(401);
  });
});

describe('optin catalogue rebuild', () => {
  it('brings the catalogue in line with the manifests and lists the differences', async () => {
    const spoolDir = await mkdtemp(join(tmpdir(), 'optin-cli-store-'));
    const dataDir = await mkdtemp(join(tmpdir(), 'optin-cli-data-'));
    dirs.push(spoolDir, dataDir);
    const store = await RecordingStore.open({ client, buckets, keyring: Keyring.fromConfig(keyring), spoolDir, spoolMaxBytes: 64 << 20, logger: createLogger('silent'), nodeId: 'w-cli', sweep: false });
    const write = async (recordingId: string, segments: number): Promise<void> => {
      await store.beginRecording({
        recordingId,
        callId: `call-${recordingId}`,
        startedAt: Date.now() - 60_000,
        participants: [
          { participantId: 'pa', role: 'agent', subjectId: 'agent-cat', teamLeadId: 'lead-cat' },
          { participantId: 'pc', role: 'customer', subjectId: 'cust-cat' },
        ],
        consentEvidence: [],
      });
      for (let s = 0; s < segments; s++) await store.putSegment(segMeta(recordingId, 'pa', s), fakeOgg(recordingId, 'pa', s));
      await store.endRecording(recordingId);
    };
    await write('r-lost-report', 2); // in the store, never reported
    await write('r-stale-row', 3); // reported with 1 segment only
    await write('r-resurrected', 1); // deleted, but a late writer put it back
    await store.close();
    const now = Date.now();
    const entry = (recordingId: string, segments: number, state: 'recording' | 'complete' = 'complete') => ({
      recordingId,
      callId: `call-${recordingId}`,
      participants: [{ participantId: 'pa', role: 'agent' as const, subjectId: 'agent-cat', teamLeadId: 'lead-cat' }],
      startedAt: now - 60_000,
      tracks: 1,
      segments,
      bytes: 0,
      expiresAt: now + 86_400_000,
      state,
      workerId: 'w-cli',
    });
    await t.cp.db.transaction((tx) => upsertEntry(tx, entry('r-stale-row', 1), now));
    await t.cp.db.transaction((tx) => upsertEntry(tx, entry('r-gone', 4), now - 3_600_000));
    await t.cp.db.transaction((tx) => upsertEntry(tx, entry('r-resurrected', 1), now));
    await t.cp.db.transaction((tx) => requestDeletion(tx, { recordingId: 'r-resurrected', actor: 'lead-cat', reason: 'team-lead', nowMs: now }));
    await t.cp.db.query("UPDATE deletions SET state = 'done', completed_at_ms = $1 WHERE recording_id = 'r-resurrected'", [now]);

    const s3 = s3Config();
    const env = {
      OPTIN_DATABASE_URL: db.url,
      OPTIN_DATA_DIR: dataDir,
      OPTIN_S3_ENDPOINT: s3.endpoint,
      OPTIN_S3_ACCESS_KEY: s3.accessKey,
      OPTIN_S3_SECRET_KEY: s3.secretKey,
      OPTIN_S3_REGION: s3.region,
      OPTIN_S3_BUCKET_PREFIX: `${prefix}-`,
      OPTIN_KEYRING: JSON.stringify(keyring),
      // The store the rebuild opens writes the audit trail: the key, and a removable test lock.
      OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX,
      OPTIN_AUDIT_LOCK_MODE: 'GOVERNANCE',
    };
    const dry = capture();
    expect(await main(['catalogue', 'rebuild', '--dry-run', '--json'], env, dry)).toBe(0);
    const planned = JSON.parse(dry.stdout()) as { differences: Array<{ recordingId: string; kind: string; fields?: string[] }> };
    const byId = Object.fromEntries(planned.differences.map((d) => [d.recordingId, d]));
    expect(byId['r-lost-report']?.kind).toBe('added');
    expect(byId['r-stale-row']).toMatchObject({ kind: 'changed', fields: expect.arrayContaining(['segments', 'bytes']) });
    expect(byId['r-gone']?.kind).toBe('missing-from-store');
    expect(byId['r-resurrected']?.kind).toBe('deleted-but-in-store');
    expect((await t.cp.db.query("SELECT 1 FROM recordings WHERE recording_id = 'r-lost-report'")).rowCount).toBe(0);

    const real = capture();
    expect(await main(['catalogue', 'rebuild'], env, real)).toBe(0);
    expect(real.stdout()).toMatch(/3 manifests in the store/);
    const rows = Object.fromEntries((await t.cp.db.query<{ recording_id: string; state: string; segments: number }>('SELECT recording_id, state, segments FROM recordings')).rows.map((r) => [r.recording_id, r]));
    expect(rows['r-lost-report']).toMatchObject({ state: 'complete', segments: 2 });
    expect(rows['r-stale-row']).toMatchObject({ segments: 3 });
    expect(rows['r-gone']).toMatchObject({ state: 'deleted' });
    expect((await t.cp.db.query("SELECT 1 FROM deletions WHERE recording_id = 'r-resurrected' AND state = 'pending'")).rowCount).toBe(1);
    // The lost recording is now listed for its team.
    const page = await t.api('GET', '/v1/recordings?teamLeadId=lead-cat', { token: t.tokens.ops });
    expect((page.body.recordings as Array<{ recordingId: string }>).map((r) => r.recordingId).sort()).toEqual(['r-lost-report', 'r-stale-row']);
  });
});
