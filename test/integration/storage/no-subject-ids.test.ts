/**
 * Issue 19 item 7, the must-show: no object name, tag, user metadata or plaintext object in any
 * bucket names a subject. A dedicated file (not a scan after the whole suite: the suite's files
 * run on buckets of their own, removed as each file ends): it records real calls through the real
 * stack (mediasoup, RecorderApp, store, audit trail, control plane on PostgreSQL; test/support/
 * stack.ts) with recognisable subject and team-lead ids (consent with a pause, a customer's
 * erasure, a recording the team lead deletes, the monthly cap reached, a decline), then lists
 * every version of every object in every bucket of the stack's prefix and reads each one.
 *
 * The audit bucket is held to the same rule with one exception, pinned down here (docs/storage.md,
 * "Subject ids"): a subject-access extract's entry names the subject it was made for in
 * `refs.subjectId` (R11: the DPO shows which requests were answered; R12: the next extract lists
 * them). Deletion and expiry receipts name the recording and participant only (they used to carry
 * the subject ids: the append-only trail then named an erased person for good).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import type { Client } from 'minio';
import { beforeAll, describe, expect, it } from 'vitest';
import { createExtract } from '../../../src/access/extract.ts';
import { SEALED_MANIFEST_FORMAT } from '../../../src/storage/manifest.ts';
import { bucketNames, type BucketNames } from '../../../src/storage/layout.ts';
import { startLiveCall, until, waitState, type LiveCall } from '../../support/recorderNode.ts';
import { makeMinioClient } from '../../support/s3.ts';
import { useStack } from '../../support/stack.ts';

const stack = useStack(
  { segmentSeconds: 1, 'admission.maxEventLoopLagMs': 60_000 },
  {
    heartbeatMs: 200,
    controlPlaneStore: true,
    controlPlaneOverrides: { 'ledger.graceMs': 300, 'ledger.holderTimeoutMs': 5000, 'ledger.sweepIntervalMs': 100 },
  },
);
let direct: Client;
let buckets: BucketNames;
const tag = randomBytes(3).toString('hex');
/** Every subject and team-lead id the scenarios used: none may show in clear in the store. */
const people = new Set<string>();
const evidence = (at = Date.now()) => ({ method: 'dtmf' as const, at, infoVersion: 'notice-v9' });

beforeAll(() => {
  direct = makeMinioClient();
  const c = stack.config.s3;
  buckets = bucketNames({ prefix: c.bucketPrefix, media: c.mediaBucket, keys: c.keysBucket, audit: c.auditBucket });
});

/** A call whose agent, team lead and customer have ids this test can recognise anywhere. */
async function call(name: string, agent: string, cap = 50): Promise<LiveCall> {
  const lead = `zqlead-${name}-${tag}`;
  await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], cap);
  const callId = `zqcall-${name}-${tag}`;
  const c = await startLiveCall(stack.app, stack.policy, callId, agent, lead);
  for (const p of c.participants) people.add(p.subjectId);
  people.add(lead);
  return c;
}

async function grant(c: LiveCall): Promise<void> {
  const from = c.states.length;
  await stack.policy.grantConsent(c.callId, `${c.callId}-c`, evidence());
  await waitState(c, (s) => s.recording, 5000, 'recording', from);
}

async function hangUp(c: LiveCall): Promise<void> {
  await c.stop();
  await stack.policy.endCall(c.callId).catch(() => undefined);
}

interface Found {
  bucket: string;
  name: string;
  versionId?: string;
  where: string;
  id: string;
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function hits(text: string): string[] {
  return [...people].filter((id) => text.includes(id));
}

describe('no subject id in clear anywhere in the store', () => {
  it('records consent (with a pause), erase, team-lead deletion, cap and decline, then scans every version of every object', async () => {
    // 1. Consent, a pause and a resume: two runs. The customer's extract says so.
    const a1 = `zqagent-pause-${tag}`;
    const paused = await call('pause', a1);
    await grant(paused);
    await sleep(1500);
    let from = paused.states.length;
    await stack.policy.pause(paused.callId);
    await waitState(paused, (s) => !s.recording, 3000, 'paused', from);
    await sleep(1200);
    from = paused.states.length;
    await stack.policy.resume(paused.callId);
    await waitState(paused, (s) => s.recording, 3000, 'resumed', from);
    await sleep(1500);
    const pausedId = paused.rec.recordingId!;
    await hangUp(paused);

    // 2. The customer withdraws with erase: their part goes, the agent's stays.
    const erased = await call('erase', `zqagent-erase-${tag}`);
    await grant(erased);
    await sleep(2200);
    from = erased.states.length;
    const erasure = await stack.policy.withdrawConsent(erased.callId, `${erased.callId}-c`, { erase: true, evidence: evidence() });
    await waitState(erased, (s) => !s.recording, 3000, 'closed', from);
    await hangUp(erased);
    await until(async () => (await stack.policy.erasure(String(erasure.erasureId))).state === 'done', 20_000, 'erasure done');

    // 3. The team lead deletes a whole recording.
    const deleted = await call('delete', `zqagent-delete-${tag}`);
    await grant(deleted);
    await sleep(1500);
    const deletedId = deleted.rec.recordingId!;
    await hangUp(deleted);
    await stack.app.store.drained(20_000);
    const deletionId = await stack.policy.deleteRecording(deletedId, { actor: `zqlead-delete-${tag}` });
    let status: Record<string, unknown> = {};
    await until(async () => (status = await stack.policy.deletion(deletionId)).state === 'done', 20_000, 'deletion done').catch((err: unknown) => {
      throw new Error(`${String(err)}; last status ${JSON.stringify(status)}`);
    });

    // 4. The monthly cap: cap 1, the second call of the agent is refused.
    const a4 = `zqagent-cap-${tag}`;
    const first = await call('cap1', a4, 1);
    await grant(first);
    await sleep(1200);
    await hangUp(first);
    const second = await call('cap2', a4, 1);
    from = second.states.length;
    await stack.policy.grantConsent(second.callId, `${second.callId}-c`, evidence());
    await waitState(second, (s) => s.reasons.includes('cap-reached'), 5000, 'cap reached', from);
    await hangUp(second);

    // 5. A decline.
    const declined = await call('decline', `zqagent-decline-${tag}`);
    await stack.policy.declineConsent(declined.callId, `${declined.callId}-c`, evidence());
    await sleep(500);
    await hangUp(declined);

    await stack.app.store.drained(20_000);
    await stack.app.recorder.flushAudit();

    // The paused recording's customer extract: two runs, the second where the first ends in the audio.
    // Through the audit trail: the extract's own entry is in the scan too.
    const pkg = await createExtract({ store: stack.app.store, audit: stack.app.audit }, { subjectId: `${paused.callId}-subj`, caseRef: `case-${tag}`, actor: 'xop-scan' });
    const runs = pkg.manifest.recordings.find((r) => r.recordingId === pausedId)!.runs;
    console.log(`scan: paused recording's extract runs ${JSON.stringify(runs.map(({ segments: _s, ...r }) => r))}`);
    expect(runs).toHaveLength(2);
    expect(runs[1]!.audioOffsetMs).toBe(runs[0]!.durationMs);
    expect(runs[1]!.pauseBeforeMs).toBeGreaterThanOrEqual(1000);

    // The scan: every bucket under the stack's prefix, every version of every object.
    const prefix = stack.config.s3.bucketPrefix;
    const all = (await direct.listBuckets()).map((b) => b.name).filter((n) => n.startsWith(prefix)).sort();
    expect(all).toEqual(expect.arrayContaining([buckets.media, buckets.keys, buckets.audit]));
    const clear: Found[] = [];
    const inAudit: Found[] = [];
    const counts: Record<string, number> = {};
    let sealedManifests = 0;
    let sealedMedia = 0;
    for (const bucket of all) {
      const objects: { name: string; versionId?: string }[] = [];
      for await (const o of direct.listObjects(bucket, '', true, { IncludeVersion: true }) as AsyncIterable<{ name?: string; versionId?: string | null; isDeleteMarker?: boolean }>) {
        if (typeof o.name !== 'string' || o.isDeleteMarker) continue;
        objects.push({ name: o.name, ...(o.versionId && o.versionId !== 'null' ? { versionId: o.versionId } : {}) });
      }
      counts[bucket.slice(prefix.length)] = objects.length;
      for (const o of objects) {
        const at = { bucket, name: o.name, ...(o.versionId ? { versionId: o.versionId } : {}) };
        const v = o.versionId ? { versionId: o.versionId } : {};
        for (const id of hits(o.name)) clear.push({ ...at, where: 'name', id });
        const tags = (await direct.getObjectTagging(bucket, o.name, v as { versionId: string })) as unknown as { Key: string; Value: string }[];
        for (const id of hits(JSON.stringify(tags))) clear.push({ ...at, where: 'tag', id });
        const stat = await direct.statObject(bucket, o.name, v as { versionId: string });
        // User metadata as stored, and base64url-decoded (the per-segment record is base64url JSON).
        const meta = Object.values(stat.metaData as Record<string, string>).map((x) => `${x} ${Buffer.from(String(x), 'base64url').toString('utf8')}`).join(' ');
        for (const id of hits(meta)) clear.push({ ...at, where: 'metadata', id });
        const body = await readAll(await direct.getObject(bucket, o.name, v as { versionId: string }));
        const text = body.toString('utf8');
        if (o.name.endsWith('.ogg.sealed')) sealedMedia++;
        if (o.name.startsWith('manifests/')) {
          // Sealed: only format, recording id, KEK id and ciphertext in clear.
          const env = JSON.parse(text) as Record<string, unknown>;
          expect(env.format).toBe(SEALED_MANIFEST_FORMAT);
          expect(Object.keys(env).sort()).toEqual(['alg', 'ciphertext', 'format', 'kekId', 'nonce', 'recordingId']);
          sealedManifests++;
        }
        const found = hits(text);
        if (found.length === 0) continue;
        if (bucket !== buckets.audit) {
          for (const id of found) clear.push({ ...at, where: 'body', id });
          continue;
        }
        // The audit trail: only an extract's entry, naming its own subject in refs.subjectId.
        for (const id of found) inAudit.push({ ...at, where: 'body', id });
        const entry = JSON.parse(text) as { type?: string; refs?: { subjectId?: string } };
        const isExtract = entry.type === 'extract' || entry.type === 'extract.download';
        const elsewhere = hits(JSON.stringify({ ...entry, refs: { ...entry.refs, subjectId: isExtract ? undefined : entry.refs?.subjectId } }));
        for (const id of elsewhere) clear.push({ ...at, where: `audit entry ${entry.type ?? '?'}`, id });
      }
    }
    const auditTypes = new Set<string>();
    for (const f of inAudit) {
      const e = JSON.parse((await readAll(await direct.getObject(f.bucket, f.name, (f.versionId ? { versionId: f.versionId } : {}) as { versionId: string }))).toString()) as { type: string };
      auditTypes.add(e.type);
    }
    console.log(
      `scan: ${people.size} subject/team-lead ids; objects (versions) per bucket ${JSON.stringify(counts)}; ${sealedMedia} sealed media, ${sealedManifests} sealed manifests; ` +
        `ids in clear (names, tags, metadata, bodies): ${clear.length}; audit entries naming a subject: ${new Set(inAudit.map((f) => f.name)).size} (types: ${[...auditTypes].sort().join(', ')})`,
    );
    expect(clear).toEqual([]);
    expect([...auditTypes]).toEqual(['extract']);
    // Recordings left: the paused one and the first cap call (the erase withdrew both tracks, R5; the team lead deleted one).
    expect(sealedManifests).toBeGreaterThanOrEqual(2);
    expect(sealedMedia).toBeGreaterThan(10);
    // The media and keys buckets were really scanned (they hold the surviving recordings).
    expect(counts[buckets.media.slice(prefix.length)]).toBeGreaterThan(10);
  }, 120_000);
});
