/**
 * An insider with the recorders' store credentials (DESIGN §6: "a verify command proves it
 * unbroken, including against someone who holds the recorders' store credentials") against the
 * real audit bucket (RGW, versioned, object lock) and the real control plane (PostgreSQL): they
 * rewrite entries, delete a whole writer stream (every version of it, as a store without object
 * lock, or an administrator bypassing GOVERNANCE, would allow), and cut the tail of a stream
 * together with its head's history. `optin audit verify` finds each; checking the bucket alone
 * would have missed the last two, which is why the control plane registers streams and anchors
 * their heads.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'minio';
import { AuditTrail, type AuditInput } from '../../../src/audit/AuditTrail.ts';
import { listAuditStreams } from '../../../src/audit/anchors.ts';
import { runAuditVerify } from '../../../src/audit/verifyCommand.ts';
import { complianceReport } from '../../../src/compliance/report.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { bucketNames, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { TEST_AUDIT_KEY, TEST_AUDIT_KEY_HEX, TEST_RETENTION } from '../../support/auditKey.ts';
import { startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep, s3Config } from '../../support/s3.ts';

const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
let db: TestDatabase;
let t: TestControlPlane;
let client: Client;
let buckets: BucketNames;
const dirs: string[] = [];

const entryKey = (stream: string, seq: number): string => `streams/${stream}/audit/${String(seq).padStart(12, '0')}.json`;

function gate(n: number): AuditInput {
  return { type: 'gate.transition', actor: 'system', role: 'recorder', purpose: 'training-recording-gate', refs: { callId: `c-${n}` }, details: { n } };
}

/** A recorder's writer: the store's credentials, the shared audit key. */
async function writer(stream: string, entries: number): Promise<AuditTrail> {
  const trail = await AuditTrail.open({ client, bucket: buckets.audit, writerId: stream, hmacKey: TEST_AUDIT_KEY, retention: TEST_RETENTION });
  for (let i = 1; i <= entries; i++) await trail.append(gate(i));
  return trail;
}

async function versionsOf(key: string): Promise<Array<{ versionId: string; isDeleteMarker: boolean }>> {
  const out: Array<{ versionId: string; isDeleteMarker: boolean }> = [];
  for await (const v of client.listObjects(buckets.audit, key, true, { IncludeVersion: true }) as AsyncIterable<{ name?: string; versionId?: string; isDeleteMarker?: boolean }>) {
    if (v.name === key && v.versionId) out.push({ versionId: v.versionId, isDeleteMarker: v.isDeleteMarker === true });
  }
  return out;
}

/** What the insider can do where the store lets them: remove every version (GOVERNANCE bypass). */
async function purge(key: string): Promise<void> {
  for (const v of await versionsOf(key)) await client.removeObject(buckets.audit, key, { versionId: v.versionId, governanceBypass: true });
}

async function read(key: string, versionId?: string): Promise<Buffer> {
  return Buffer.concat(await (await client.getObject(buckets.audit, key, versionId ? { versionId } : {})).toArray());
}

async function verify(args: string[]): Promise<{ code: number; out: string }> {
  const cfg = s3Config();
  const lines: string[] = [];
  const code = await runAuditVerify(['--bucket', buckets.audit, ...args], {
    OPTIN_S3_ENDPOINT: cfg.endpoint,
    OPTIN_S3_ACCESS_KEY: cfg.accessKey,
    OPTIN_S3_SECRET_KEY: cfg.secretKey,
    OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX,
    OPTIN_CONTROL_TOKEN: t.tokens.ops,
    OPTIN_CONTROL_API_URL: t.cp.url,
  }, { out: (l) => lines.push(l), err: (l) => lines.push(l) });
  return { code, out: lines.join('\n') };
}

function streamLine(out: string, stream: string): string {
  return out.split('\n').find((l) => l.trimStart().startsWith(`${stream}:`)) ?? '';
}

beforeAll(async () => {
  db = await createTestDatabase();
  client = makeMinioClient();
  buckets = bucketNames({ prefix: `${freshBucketPrefix()}-` });
  const dataDir = await mkdtemp(join(tmpdir(), 'optin-insider-'));
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
      's3.bucketPrefix': buckets.media.slice(0, buckets.media.length - 'optin-media'.length),
      keyring,
      // Passes run on demand below.
      'audit.anchorIntervalMs': 24 * 3600_000,
    },
    deps: { store: undefined },
  });
}, 60_000);

afterAll(async () => {
  await t?.close();
  await db?.drop();
  if (client !== undefined) for (const b of Object.values(buckets)) await removeBucketDeep(client, b);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('the audit trail against an insider with the store credentials', () => {
  it('registers writer streams (policy-stream hello, API, replica) and anchors their heads', async () => {
    // rec-a is a recorder: connecting to the policy stream registers its stream.
    const hello = await StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId: 'rec-a' });
    hello.close();
    for (const id of ['rec-b', 'rec-c', 'rec-d']) {
      expect((await t.api('POST', '/v1/audit/streams', { token: t.tokens.ops, body: { streamId: id } })).status).toBe(200);
    }
    // A phone number is not a writer id.
    expect((await t.api('POST', '/v1/audit/streams', { token: t.tokens.ops, body: { streamId: '46701234567' } })).status).toBe(400);
    for (const id of ['rec-a', 'rec-b', 'rec-c', 'rec-d']) await writer(id, 5);

    const pass = await t.cp.anchoring!.runOnce();
    expect(pass.suspicious).toEqual([]);
    expect(pass.anchored).toBe(4);
    const res = await t.api('GET', '/v1/audit/streams', { token: t.tokens.ops });
    const streams = (res.body as { streams: Array<{ streamId: string; registeredBy: string; anchor: { seq: number } | null }> }).streams;
    expect(streams.map((s) => [s.streamId, s.registeredBy, s.anchor?.seq ?? null])).toEqual([
      [t.cp.config.replicaId, 'replica', null],
      ['rec-a', 'stream-hello', 5],
      ['rec-b', `api:ops`, 5],
      ['rec-c', `api:ops`, 5],
      ['rec-d', `api:ops`, 5],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));

    const clean = await verify([]);
    expect(clean.code, clean.out).toBe(0);
    expect(clean.out).toMatch(/VERIFIED; 5 stream\(s\), 20 entries verified; HMAC-SHA256, every version, 5 registered stream\(s\) and their anchors/);
    expect(streamLine(clean.out, 'rec-a')).toMatch(/rec-a: 5 entries, head 5, anchored 5, ok/);
    // The replica's own stream is registered but has written nothing yet: noted, not a break.
    expect(streamLine(clean.out, t.cp.config.replicaId)).toMatch(/0 entries, head none, anchored never, ok/);
    expect(clean.out).toMatch(/note: registered in the control plane, no entries yet \(not anchored\)/);
  });

  it('rewrites, a deleted stream and a cut tail are each reported by optin audit verify', async () => {
    // 1. rec-a: entry 2 edited in place (a PUT over it) and entry 4 deleted.
    const e2 = JSON.parse((await read(entryKey('rec-a', 2))).toString()) as Record<string, unknown>;
    const edited = Buffer.from(JSON.stringify({ ...e2, purpose: 'nothing-to-see' }));
    await client.putObject(buckets.audit, entryKey('rec-a', 2), edited, edited.length);

    // 2. rec-b: the whole stream, every version of every entry and of the head, is gone.
    for (let seq = 1; seq <= 5; seq++) await purge(entryKey('rec-b', seq));
    await purge('heads/rec-b.json');

    // 3. rec-c: the tail (4, 5) is cut and the head is put back to its genuine state at 3, with
    //    every later version of it purged: in the bucket alone, a consistent stream of three.
    const headVersions = (await versionsOf('heads/rec-c.json')).filter((v) => !v.isDeleteMarker);
    let at3: Buffer | undefined;
    for (const v of headVersions) {
      const body = await read('heads/rec-c.json', v.versionId);
      if ((JSON.parse(body.toString()) as { seq: number }).seq === 3) at3 = body;
    }
    expect(at3).toBeDefined();
    await purge(entryKey('rec-c', 5));
    await purge(entryKey('rec-c', 4));
    await purge('heads/rec-c.json');
    await client.putObject(buckets.audit, 'heads/rec-c.json', at3!, at3!.length);

    // 4. rec-d: the newest two entries deleted the ordinary way (delete markers).
    await client.removeObject(buckets.audit, entryKey('rec-d', 5));
    await client.removeObject(buckets.audit, entryKey('rec-d', 4));

    const full = await verify([]);
    expect(full.code, full.out).toBe(1);
    expect(streamLine(full.out, 'rec-a')).toMatch(/BROKEN at seq 2: an entry was edited \(hash-mismatch; .*2 versions stored, the original is retained\)/);
    expect(streamLine(full.out, 'rec-b')).toMatch(/BROKEN at seq 1: a whole writer stream the control plane knows was deleted \(stream-missing; registered in the control plane and anchored at entry 5/);
    expect(streamLine(full.out, 'rec-c')).toMatch(/BROKEN at seq 4: the stream ends before a position the control plane anchored: entries were deleted \(anchor-missing; the control plane anchored entry 5/);
    expect(streamLine(full.out, 'rec-d')).toMatch(/BROKEN at seq 4: an entry was deleted \(missing; entry 4 was deleted \(1 earlier version\(s\) retained by the store\)\)/);

    // The bucket alone sees the edit and the ordinary deletion, but not the purged stream nor the
    // consistent-looking cut: the registry and the anchors are what catch those.
    const bucketOnly = await verify(['--bucket-only']);
    expect(bucketOnly.code).toBe(1);
    expect(streamLine(bucketOnly.out, 'rec-b')).toBe('');
    expect(streamLine(bucketOnly.out, 'rec-c')).toMatch(/rec-c: 3 entries, head 3, anchored never, ok/);

    // The next anchoring pass refuses to move rec-c's anchor back, and says so.
    const pass = await t.cp.anchoring!.runOnce();
    expect(pass.suspicious).toEqual([{ stream: 'rec-c', problem: 'behind' }]);
    // Pushing the old head through the API is refused the same way.
    const head = JSON.parse(at3!.toString()) as { seq: number; hash: string; at: string };
    const refused = await t.api('POST', '/v1/audit/anchors', { token: t.tokens.ops, body: { streamId: 'rec-c', seq: head.seq, hash: head.hash, at: head.at } });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toBe('anchor-behind');
  });

  it('the compliance report prints the anchored head hashes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'optin-insider-store-'));
    dirs.push(dir);
    const store = await RecordingStore.open({ client, buckets, keyring: Keyring.fromConfig(keyring), spoolDir: dir, spoolMaxBytes: 64 << 20, logger: createLogger('silent'), sweep: false });
    try {
      const audit = await AuditTrail.open({ client, bucket: buckets.audit, writerId: 'report-reader', hmacKey: TEST_AUDIT_KEY, retention: false });
      const report = await complianceReport({ store, s3: client, audit, rolesForAuditType: () => undefined, auditAnchors: () => listAuditStreams(t.cp.db) });
      const anchored = (await listAuditStreams(t.cp.db)).filter((s) => s.anchor !== null);
      expect(report.auditAnchors?.filter((a) => a.seq !== null)).toEqual(
        anchored.map((s) => ({ stream: s.streamId, seq: s.anchor!.seq, hash: s.anchor!.hash, anchoredAt: new Date(s.anchor!.anchoredAtMs).toISOString() })),
      );
      expect(report.auditAnchors?.find((a) => a.stream === 'rec-c')).toMatchObject({ seq: 5, hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
      expect(report.notes.join('\n')).toMatch(/registered writer stream\(s\), head hashes anchored in the control plane/);
    } finally {
      await store.close();
    }
  });
});
