/**
 * Deleted, erased or expired audio leaves every render cache and every held extract at once
 * (issue 14 §8), on every control-plane replica: each follows the deletion and erasure facts of
 * the fact log (NOTIFY), and each download re-checks the recording. Two replicas on one
 * PostgreSQL database; the deletion goes through replica A, a render was cached on replica B.
 * Also: a full render pool answers 503 with Retry-After.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/access/roles.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { decodeToPcm } from '../../../src/media/ffmpeg.ts';
import { rmsDb } from '../../support/audio.ts';
import { startWebStack, waitFor, type WebSession, type WebStack } from '../../support/webapp.ts';

const RA = 'r_aaaa000000000001'; // deleted by the team lead
const RB = 'r_bbbb000000000002'; // its customer erased
const RC = 'r_cccc000000000003'; // expires during the test
const RD = 'r_dddd000000000004'; // for the full pool
const lead: Principal = { sub: 'lead-l1', role: 'team-lead' };

let s: WebStack;
let b: TestControlPlane;
let l1: WebSession;
let xop: WebSession;
let a1: WebSession;
const dirs: string[] = [];
let shortLived: RecordingStore | undefined;

function renderKeys(t: { cp: { access: { renders: { keys(): string[] } } } }, rid: string): string[] {
  return t.cp.access.renders.keys().filter((k) => k.startsWith(`${rid}:`));
}

async function extractReady(subjectId: string, caseRef: string): Promise<{ id: string; files: Array<{ name: string }> }> {
  const res = await xop.fetch('/api/extracts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ subjectId, caseRef }) });
  expect(res.status).toBe(202);
  const { job } = (await res.json()) as { job: { id: string } };
  return waitFor(async () => (await (await xop.fetch(`/api/extracts/${job.id}`)).json()) as { id: string; state: string; files: Array<{ name: string }> }, (j) => j.state === 'ready', { what: 'extract' });
}

beforeAll(async () => {
  s = await startWebStack({ overrides: { 'access.ffmpegConcurrency': 1, 'access.ffmpegQueue': 0 } });
  const now = Date.now();
  await s.addRecording({ recordingId: RA, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-a', startedAtMs: now - 50_000, seconds: 3 });
  await s.addRecording({ recordingId: RB, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-b', startedAtMs: now - 40_000, seconds: 3 });
  await s.addRecording({ recordingId: RD, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-d', startedAtMs: now - 30_000, seconds: 20 });
  // Replica B: same database, same store, its own replica id and port.
  const cfg = s.t.cp.config;
  b = await startTestControlPlane({
    databaseUrl: (cfg.database.url as string),
    overrides: {
      dataDir: await mkdtemp(join(tmpdir(), 'optin-cp-b-')),
      's3.endpoint': cfg.s3.endpoint,
      's3.accessKey': cfg.s3.accessKey,
      's3.secretKey': cfg.s3.secretKey,
      's3.region': cfg.s3.region,
      's3.bucketPrefix': cfg.s3.bucketPrefix,
      keyring: cfg.keyring,
    },
    deps: { store: undefined },
    createTokens: false,
  });
  dirs.push(b.cp.config.dataDir);
  l1 = await s.signIn('lead');
  xop = await s.signIn('extract');
  a1 = await s.signIn('agent');
}, 240_000);

afterAll(async () => {
  await shortLived?.close().catch(() => undefined);
  await b?.close();
  await s?.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('after a deletion, on every replica', () => {
  it('the render, the held extract and the list entry are gone within a second', async () => {
    expect((await l1.fetch(`/api/recordings/${RA}/play?purpose=coaching`)).status).toBe(200);
    await b.cp.access.play(lead, RA, { purpose: 'coaching', format: 'ogg' });
    expect(renderKeys(s.t, RA)).toHaveLength(1);
    expect(renderKeys(b, RA)).toHaveLength(1);
    const x = await extractReady('cust-a', 'SAR-del');
    const file = `/api/extracts/${x.id}/files/${RA}.ogg?caseRef=SAR-del`;
    expect((await xop.fetch(file)).status).toBe(200);
    const listed = async (who: WebSession) => ((await (await who.fetch('/api/recordings')).json()) as { recordings: Array<{ recordingId: string }> }).recordings.some((r) => r.recordingId === RA);
    expect(await listed(l1)).toBe(true);

    const t0 = performance.now();
    expect((await l1.fetch(`/api/recordings/${RA}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(
      async () => ({ a: renderKeys(s.t, RA).length, b: renderKeys(b, RA).length, held: s.t.cp.access.extracts.held.ids().includes(x.id), lead: await listed(l1), agent: await listed(a1) }),
      (v) => v.a === 0 && v.b === 0 && !v.held && !v.lead && !v.agent,
      { timeoutMs: 5000, intervalMs: 20, what: 'the purge' },
    );
    const elapsed = performance.now() - t0;
    console.log(`deletion -> render (both replicas), held extract and list entries gone: ${elapsed.toFixed(0)} ms`);
    expect(elapsed).toBeLessThan(1000);
    expect((await xop.fetch(file)).status).toBe(410);
    expect(((await (await xop.fetch(`/api/extracts/${x.id}`)).json()) as { state: string }).state).toBe('withdrawn');
    expect((await l1.fetch(`/api/recordings/${RA}/play?purpose=coaching`)).status).toBe(404);
    await expect(b.cp.access.play(lead, RA, { purpose: 'coaching', format: 'ogg' })).rejects.toMatchObject({ status: 404 });
  });
});

describe("after an erasure of the customer (the IVR's withdrawal with erase)", () => {
  it('renders holding them and their held extract are gone within a second; a new render leaves their side silent', async () => {
    expect((await l1.fetch(`/api/recordings/${RB}/play?purpose=coaching`)).status).toBe(200);
    await b.cp.access.play(lead, RB, { purpose: 'coaching', format: 'ogg' });
    const x = await extractReady('cust-b', 'SAR-erase');
    const t0 = performance.now();
    const res = await s.t.api('POST', `/v1/calls/call-${RB}/consent`, { token: s.t.tokens.ivr, body: { participantId: `call-${RB}-c`, decision: 'withdrawn', erase: true, evidence: { method: 'dtmf', at: Date.now() - 10, infoVersion: 'training-notice-v3' } } });
    expect(res.status).toBe(202);
    await waitFor(async () => ({ a: renderKeys(s.t, RB).length, b: renderKeys(b, RB).length, held: s.t.cp.access.extracts.held.ids().includes(x.id) }), (v) => v.a === 0 && v.b === 0 && !v.held, { timeoutMs: 5000, intervalMs: 20, what: 'the purge' });
    const elapsed = performance.now() - t0;
    console.log(`erasure -> renders (both replicas) and held extract gone: ${elapsed.toFixed(0)} ms`);
    expect(elapsed).toBeLessThan(1000);
    expect((await xop.fetch(`/api/extracts/${x.id}/files/${RB}.ogg?caseRef=SAR-erase`)).status).toBe(410);
    // Even before the sweeper has carried the erasure out, a new render leaves the customer out.
    const again = Buffer.from(await (await l1.fetch(`/api/recordings/${RB}/play?purpose=coaching&format=wav`)).arrayBuffer());
    const pcm = again.subarray(44);
    const right = new Float32Array(pcm.length / 4);
    for (let i = 0; i < right.length; i++) right[i] = pcm.readInt16LE(4 * i + 2) / 32768;
    expect(rmsDb(right, 0, right.length)).toBeLessThan(-80);
  });
});

// Before the expiry test: its short-lived store (retention 6 s) sets a lifecycle rule on the
// shared buckets, and the test S3 server's lifecycle "day" lasts 10 s (OPTIN_RGW_LC_DEBUG_INTERVAL),
// so after it the server itself expires every older object of this file, RD's included.
describe('a full render pool', () => {
  it('answers 503 with Retry-After instead of queueing without bound', async () => {
    // One ffmpeg at a time, no queue. A job of known length occupies the pool (a real ffmpeg
    // producing 8 s of silence in real time) rather than a render whose start the test would
    // have to catch by polling: on two loaded cores the render's store reads alone take seconds.
    const occupying = s.t.cp.pool.run(['-v', 'error', '-re', '-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '8', '-f', 's16le', 'pipe:1'], {});
    expect(s.t.cp.pool.running).toBe(1);
    const second = await l1.fetch(`/api/recordings/${RD}/play?purpose=training`);
    expect(second.status, second.status === 503 ? '' : await second.clone().text()).toBe(503);
    expect(Number(second.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await second.json()).toMatchObject({ error: 'unavailable', message: expect.stringContaining('busy') });
    expect((await occupying).length).toBe(8 * 8000 * 2);
    const wav = Buffer.from(await (await l1.fetch(`/api/recordings/${RD}/play?purpose=coaching&format=wav`)).arrayBuffer());
    expect((await decodeToPcm(wav)).pcm.length / 48).toBeGreaterThan(19_000);
  });
});

describe('at expiry', () => {
  it('the render leaves the cache within a second of the recording expiring, and nothing more is served', async () => {
    const spoolDir = await mkdtemp(join(tmpdir(), 'optin-short-'));
    dirs.push(spoolDir);
    const cfg = s.t.cp.config;
    shortLived = await RecordingStore.open({ client: s.client, buckets: s.buckets, keyring: Keyring.fromConfig(cfg.keyring), retentionSeconds: 6, spoolDir, spoolMaxBytes: 64 << 20, logger: createLogger('silent'), nodeId: 'short-lived', sweep: false });
    const { manifest } = await s.addRecording({ recordingId: RC, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c', startedAtMs: Date.now() - 2000, seconds: 1, store: shortLived });
    expect((await l1.fetch(`/api/recordings/${RC}/play?purpose=coaching`)).status).toBe(200);
    expect(renderKeys(s.t, RC)).toHaveLength(1);
    await waitFor(async () => Date.now(), (t) => t >= manifest.expiresAtMs, { timeoutMs: 15_000, intervalMs: 50 });
    await waitFor(async () => renderKeys(s.t, RC).length, (n) => n === 0, { timeoutMs: 1500, intervalMs: 20, what: 'the expired render to go' });
    console.log(`expiry -> render gone ${Date.now() - manifest.expiresAtMs} ms after the expiry instant`);
    expect(Date.now() - manifest.expiresAtMs).toBeLessThan(1100);
    expect((await l1.fetch(`/api/recordings/${RC}/play?purpose=coaching`)).status).toBe(404);
  });
});

