import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AuditTrail, type AuditInput } from '../../../src/audit/AuditTrail.ts';
import { canonicalJson, hashEntry, type AuditEntry } from '../../../src/audit/chain.ts';
import { runAuditVerify } from '../../../src/audit/verifyCommand.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import type { AuditSink } from '../../../src/storage/types.ts';
import { useBuckets } from '../../support/buckets.ts';
import { s3Config } from '../../support/s3.ts';
import { TEST_AUDIT_KEY, TEST_AUDIT_KEY_HEX } from '../../support/auditKey.ts';

const hmacKey = TEST_AUDIT_KEY;

const buckets = useBuckets();
const client = buckets.client;
let n = 0;

/** A fresh, plain bucket per test: tests tamper with objects and must not see each other's. */
function freshBucket(): Promise<string> {
  return buckets.make(`audit${n++}`);
}

function play(i: number): AuditInput {
  return {
    type: 'access.play',
    actor: `tl_${i}`,
    role: 'team-lead',
    purpose: 'coaching',
    refs: { callId: 'c_1', recordingId: 'r_0123456789abcdef', subjectId: 's_agent1' },
    details: { segments: i, range: { fromMs: 0, toMs: 1000 * i } },
  };
}

async function fill(trail: AuditTrail, count: number): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for (let i = 1; i <= count; i++) out.push(await trail.append(play(i)));
  return out;
}

const key = (writer: string, seq: number): string => `streams/${writer}/audit/${String(seq).padStart(12, '0')}.json`;

async function readJson(bucket: string, objectKey: string): Promise<AuditEntry> {
  const chunks: Buffer[] = [];
  for await (const c of await client.getObject(bucket, objectKey)) chunks.push(Buffer.from(c as Buffer));
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as AuditEntry;
}

async function writeJson(bucket: string, objectKey: string, value: unknown): Promise<void> {
  await client.putObject(bucket, objectKey, Buffer.from(JSON.stringify(value)));
}

describe('AuditTrail', () => {
  it('appends a hash chain that verifies, and lists entries by type and time', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const entries = await fill(trail, 3);
    const deletion = await trail.append({ type: 'deletion', actor: 'system', role: 'system', purpose: 'retention', refs: { recordingId: 'r_0123456789abcdef' } });

    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(entries[0]?.prevHash).toBe('0'.repeat(64));
    expect(entries[1]?.prevHash).toBe(entries[0]?.hash);
    expect(deletion.prevHash).toBe(entries[2]?.hash);
    // hash = HMAC-SHA256(audit key, canonical JSON of the entry without hash): only key holders recompute it.
    const { hash, ...rest } = deletion;
    expect(hashEntry(rest, hmacKey)).toBe(hash);
    expect(canonicalJson({ b: 1, a: [true, null, 'x'] })).toBe('{"a":[true,null,"x"],"b":1}');

    const v = await trail.verify();
    expect(v).toMatchObject({ ok: true, entries: 4 });
    expect(v.streams).toEqual([expect.objectContaining({ stream: 'node-a', entries: 4, headSeq: 4, ok: true, warnings: [] })]);

    expect((await trail.list({ type: 'deletion' })).map((e) => e.seq)).toEqual([4]);
    expect(await trail.list({ to: '2000-01-01T00:00:00Z' })).toEqual([]);
    expect((await trail.list({ from: entries[0]!.at })).length).toBe(4);
  });

  it('serialises concurrent appends of one process into one unbroken chain', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => trail.append(play(i + 1))));
    expect(results.map((e) => e.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const v = await trail.verify();
    expect(v).toMatchObject({ ok: true, entries: 20 });
    // The head follows every append.
    expect(v.streams[0]).toMatchObject({ headSeq: 20, warnings: [] });
  });

  it('continues the chain after a restart, and after a crash between entry and head', async () => {
    const bucket = await freshBucket();
    await fill(await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey }), 2);
    const again = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    expect((await again.append(play(3))).seq).toBe(3);

    // Simulate the crash: entry 4 written, head still at 3.
    const e3 = await readJson(bucket, key('node-a', 3));
    const base = { ...e3, seq: 4, at: new Date().toISOString(), prevHash: e3.hash };
    const { hash: _h, ...unhashed } = base;
    await writeJson(bucket, key('node-a', 4), { ...unhashed, hash: hashEntry(unhashed, hmacKey) });
    const lagging = await again.verify();
    expect(lagging.ok).toBe(true);
    expect(lagging.streams[0]?.warnings[0]).toMatch(/head at 3, 1 entries after it/);

    const restarted = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    expect((await restarted.append(play(5))).seq).toBe(5);
    expect(await restarted.verify()).toMatchObject({ ok: true, entries: 5 });
  });

  it('keeps writers in separate streams, verified separately', async () => {
    const bucket = await freshBucket();
    const a = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const b = await AuditTrail.open({ client, bucket, writerId: 'node-b', hmacKey });
    await Promise.all([fill(a, 3), fill(b, 2)]);
    await client.removeObject(bucket, key('node-b', 1));
    const v = await a.verify();
    expect(v.ok).toBe(false);
    expect(v.entries).toBe(3);
    expect(v.streams.map((s) => [s.stream, s.ok])).toEqual([['node-a', true], ['node-b', false]]);
    expect(v.brokenAt).toMatchObject({ stream: 'node-b', seq: 1, reason: 'missing' });
    expect((await a.verify({ stream: 'node-a' })).ok).toBe(true);
    expect((await a.list()).map((e) => e.stream).sort()).toEqual(['node-a', 'node-a', 'node-a', 'node-b']);
  });

  it('two processes sharing a writerId do not fork the chain (create-only PUTs)', async () => {
    const bucket = await freshBucket();
    const p1 = await AuditTrail.open({ client, bucket, writerId: 'shared', hmacKey });
    const p2 = await AuditTrail.open({ client, bucket, writerId: 'shared', hmacKey });
    await p1.append(play(1));
    await p2.append(play(2)); // p2 loads the tail lazily and continues after p1
    await p1.append(play(3)); // p1 believes it is at 1: its PUT of seq 2 is refused, it re-reads
    const v = await p1.verify();
    expect(v.ok).toBe(true);
    expect(v.entries).toBe(3);
  });

  it('detects an edited entry at its seq', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    await fill(trail, 5);
    const e3 = await readJson(bucket, key('node-a', 3));
    await writeJson(bucket, key('node-a', 3), { ...e3, actor: 'tl_someone_else' });
    expect((await trail.verify()).brokenAt).toMatchObject({ stream: 'node-a', seq: 3, reason: 'hash-mismatch' });

    // Re-hashing the edit (possible only WITH the audit key: an insider holding it) moves the break to the next link.
    const { hash: _h, ...edited } = { ...e3, actor: 'tl_someone_else' };
    await writeJson(bucket, key('node-a', 3), { ...edited, hash: hashEntry(edited, hmacKey) });
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 4, reason: 'prev-hash-mismatch' });
  });

  it('detects a deleted entry, reordered entries and an inserted entry', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const entries = await fill(trail, 6);

    await client.removeObject(bucket, key('node-a', 2));
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 2, reason: 'missing' });
    await writeJson(bucket, key('node-a', 2), entries[1]); // restored: verifies again
    expect((await trail.verify()).ok).toBe(true);

    await writeJson(bucket, key('node-a', 4), entries[4]);
    await writeJson(bucket, key('node-a', 5), entries[3]);
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 4, reason: 'seq-mismatch' });
    await writeJson(bucket, key('node-a', 4), entries[3]);
    await writeJson(bucket, key('node-a', 5), entries[4]);

    // Insert a forged entry 3 that links to 2 (the real 3.. would have to shift and re-chain).
    const base = { ...entries[2]!, details: { forged: true } };
    const { hash: _h, ...unhashed } = base;
    await writeJson(bucket, key('node-a', 3), { ...unhashed, hash: hashEntry(unhashed, hmacKey) });
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 4, reason: 'prev-hash-mismatch' });
  });

  it('detects a deleted tail through the head', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    await fill(trail, 4);
    await client.removeObject(bucket, key('node-a', 4));
    await client.removeObject(bucket, key('node-a', 3));
    const v = await trail.verify();
    expect(v.ok).toBe(false);
    expect(v.brokenAt).toMatchObject({ seq: 3, reason: 'truncated' });
    expect(v.entries).toBe(2);

    await client.removeObject(bucket, 'heads/node-a.json');
    expect((await trail.verify()).brokenAt).toMatchObject({ reason: 'head-missing' });
  });

  it('is keyed: a re-hash without the key, an unkeyed entry, another key, and no key at all are all refused', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    await fill(trail, 3);
    expect((await trail.verify()).ok).toBe(true);

    // There is no unkeyed trail: opening one without a key (or with a short one) is refused.
    await expect(AuditTrail.open({ client, bucket, writerId: 'node-a' } as unknown as Parameters<typeof AuditTrail.open>[0])).rejects.toSatisfy((e) => isOptinError(e, 'CONFIG_INVALID'));
    await expect(AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey: Buffer.alloc(16, 1) })).rejects.toSatisfy((e) => isOptinError(e, 'CONFIG_INVALID'));

    // A verifier with another key proves nothing: every entry reads as edited.
    const otherKey = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey: Buffer.from(TEST_AUDIT_KEY.map((b) => b ^ 0xff)) });
    expect((await otherKey.verify()).brokenAt).toMatchObject({ seq: 1, reason: 'hash-mismatch' });

    // The attacker (store credentials, no key) rewrites entry 3 with a plain SHA-256 they can compute.
    const e3 = await readJson(bucket, key('node-a', 3));
    const { hash: _h, ...unhashed } = { ...e3, details: { segments: 0 } };
    const plainHash = createHash('sha256').update(canonicalJson({ ...unhashed, alg: 'sha256' })).digest('hex');
    await writeJson(bucket, key('node-a', 3), { ...unhashed, hash: plainHash });
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 3, reason: 'hash-mismatch' });
    await writeJson(bucket, key('node-a', 3), { ...unhashed, alg: 'sha256', hash: plainHash });
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 3, reason: 'alg-mismatch' });
  });

  it('redacts forbidden fields and refuses malformed entries', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const e = await trail.append({ ...play(1), details: { dataKey: 'c2VjcmV0', nested: { secret: 'x', ok: 1 }, pcm: Buffer.from('abc') } });
    expect(e.details).toEqual({ dataKey: '[redacted]', nested: { secret: '[redacted]', ok: 1 }, pcm: '[redacted]' });
    for (const bad of [
      { ...play(1), type: 'Access Play' },
      { ...play(1), actor: 'alice@example.com' },
      { ...play(1), refs: { subjectId: 'has space' } },
      { ...play(1), purpose: 'line\nbreak' },
    ]) {
      await expect(trail.append(bad)).rejects.toSatisfy((err) => isOptinError(err, 'AUDIT_INVALID_ENTRY'));
    }
    expect(await trail.verify()).toMatchObject({ ok: true, entries: 1 });
  });

  it('accepts the RecordingStore audit shape (subjects, receipt details)', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    const sink: AuditSink = trail; // type-level: AuditTrail satisfies the store's AuditSink
    await sink.append({
      type: 'recording.deleted',
      actor: 'tl_1',
      role: 'operator',
      purpose: 'agent-request',
      subjects: { recordingId: 'r_0123456789abcdef', participantId: 'p_1' },
      details: {
        receiptId: 'd_1', kind: 'deletion', recordingId: 'r_0123456789abcdef', scope: 'recording', reason: 'agent-request', actor: 'tl_1',
        requestedAt: new Date().toISOString(), completedAt: new Date().toISOString(), complete: true, nothingLeft: false,
        dataKeys: [{ participantId: 'p_1', kekId: 'k1', destroyed: ['store'] }], mediaObjects: { count: 0, objectKeys: [] },
        spool: { itemsRemoved: 0, bytes: 0 }, manifest: 'deleted',
      },
    });
    // Other writers may still name several subjects (sorted, deduplicated); the store no longer
    // does (issue 19: its receipts name the recording and participant only).
    await trail.append({ type: 'access.metadata', actor: 'dpo_1', role: 'dpo', purpose: 'audit', subjects: { recordingId: 'r_0123456789abcdef', subjectIds: ['s_b', 's_a', 's_b'] }, details: {} });
    const [entry, second] = await trail.list();
    expect(entry?.refs).toEqual({ recordingId: 'r_0123456789abcdef', participantId: 'p_1' });
    expect(entry?.details.kind).toBe('deletion');
    expect(second?.refs).toEqual({ recordingId: 'r_0123456789abcdef', subjectIds: ['s_a', 's_b'] });
  });

  it('locks entries with a retention when the bucket has object lock', async () => {
    const bucket = buckets.name('auditlock');
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey, createBucket: true, retention: { mode: 'GOVERNANCE', days: 1 } });
    const [first] = await fill(trail, 2);
    const stat = await client.statObject(bucket, key('node-a', 1));
    const retention = await client.getObjectRetention(bucket, key('node-a', 1), { versionId: String(stat.versionId) });
    expect(retention).toMatchObject({ mode: 'GOVERNANCE' });
    expect(new Date(String(retention?.retainUntilDate)).getTime()).toBeGreaterThan(Date.parse(first!.at) + 23 * 3600_000);
    // Heads are locked too: every version of a head is evidence of how far the chain reached.
    const headStat = await client.statObject(bucket, 'heads/node-a.json');
    expect(await client.getObjectRetention(bucket, 'heads/node-a.json', { versionId: String(headStat.versionId) })).toMatchObject({ mode: 'GOVERNANCE' });
    // An overwrite only adds a version: still detected, and the original stays retrievable.
    await writeJson(bucket, key('node-a', 1), { ...first, purpose: 'training' });
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 1, reason: 'hash-mismatch', detail: expect.stringMatching(/2 versions stored, the original is retained/) });
    // Even putting the original bytes back leaves the rewrite on record.
    await writeJson(bucket, key('node-a', 1), first);
    expect((await trail.verify()).brokenAt).toMatchObject({ seq: 1, reason: 'rewritten' });
  });

  it('runAuditVerify: 0 when verified, 1 when broken, 2 when it cannot check', async () => {
    const bucket = await freshBucket();
    const trail = await AuditTrail.open({ client, bucket, writerId: 'node-a', hmacKey });
    await fill(trail, 3);
    const cfg = s3Config();
    const env = { OPTIN_S3_ENDPOINT: cfg.endpoint, OPTIN_S3_ACCESS_KEY: cfg.accessKey, OPTIN_S3_SECRET_KEY: cfg.secretKey, OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX };
    const out: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(l) };

    expect(await runAuditVerify(['--bucket', bucket, '--bucket-only'], env, io)).toBe(0);
    expect(out.join('\n')).toMatch(/VERIFIED; 1 stream\(s\), 3 entries verified; HMAC-SHA256, every version, NO control-plane registry/);

    await client.removeObject(bucket, key('node-a', 3));
    out.length = 0;
    expect(await runAuditVerify(['--bucket', bucket, '--bucket-only'], env, io)).toBe(1);
    expect(out.join('\n')).toMatch(/BROKEN at seq 3: the newest entries were deleted/);

    out.length = 0;
    expect(await runAuditVerify(['--bucket', bucket, '--bucket-only', '--json'], env, io)).toBe(1);
    expect(JSON.parse(out.join('\n'))).toMatchObject({ ok: false, brokenAt: { seq: 3, reason: 'truncated' } });

    out.length = 0;
    expect(await runAuditVerify(['--bucket', bucket, '--bucket-only'], { ...env, OPTIN_S3_ENDPOINT: 'http://127.0.0.1:9' }, io)).toBe(2);
    expect(out.join('\n')).toMatch(/unreachable.*npm run s3:start/);
    expect(await runAuditVerify(['--bogus'], env, io)).toBe(2);
    // Without the key, or without saying how registered streams are checked, it refuses to run.
    out.length = 0;
    expect(await runAuditVerify(['--bucket', bucket, '--bucket-only'], { ...env, OPTIN_AUDIT_HMAC_KEY: '' }, io)).toBe(2);
    expect(out.join('\n')).toMatch(/no audit HMAC key/);
    out.length = 0;
    expect(await runAuditVerify(['--bucket', bucket], env, io)).toBe(2);
    expect(out.join('\n')).toMatch(/--control-url.*--bucket-only/);
  });
});
