/**
 * The people's side benchmark (issue 14; not a timed test): `npm run bench:webapp`.
 *
 * All real: a throwaway PostgreSQL 15 cluster (fsync on), the S3 server, the local OpenID
 * provider (scripts/devIdp), the control plane with its store, access API and web app, and
 * headless Debian Chromium. The catalogue holds `--rows` recordings (default 10,000) over
 * `--leads` teams; the demo team lead `lead` (subject lead-l1) has `--team` of them.
 *
 * 1. A team lead's list, first page (50, newest first):
 *    - baselines: the bare catalogue query (listRecordings) on the same database, and one audit
 *      append alone (each list is an audited access, R11);
 *    - the JSON API (GET /api/recordings) and the page (GET /recordings) with the lead's session:
 *      request time on loopback as the client sees it (an upper bound of the server's time:
 *      session lookup, policy, query, consent in words, deletion requests, audit entry, HTML);
 *    - the page in Chromium: the first view right after sign-in, then reloads (Navigation
 *      Timing: time to first byte, DOMContentLoaded, load).
 * 2. Coaching renders (stereo Ogg Opus of `--render-seconds` s recordings):
 *    - baseline: renderCoaching called directly (ffmpeg, same store, same concurrency as the pool);
 *    - through the API, cold (each recording rendered once: the bounded pool, auth, audit) and
 *      warm (served from the render cache). A full pool answers 503 + Retry-After; counted.
 *
 *     npm run bench:webapp -- [--rows 10000] [--team 1000] [--leads 10] [--lists 300] [--loads 20] [--renders 12] [--render-seconds 20]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { DEMO_USERS, startDevIdp } from '../scripts/devIdp/devIdp.ts';
import { startThrowawayCluster } from '../scripts/pg/cluster.ts';
import { ensureS3Server } from '../scripts/s3/devServer.ts';
import { renderCoaching } from '../src/access/coaching.ts';
import { listRecordings, upsertEntry, type CatalogueEntry } from '../src/catalogue/Catalogue.ts';
import { ControlPlane } from '../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../src/controlplane/config.ts';
import { Keyring } from '../src/crypto/Keyring.ts';
import { createLogger } from '../src/log/logger.ts';
import { createControlPlaneMetrics } from '../src/metrics/controlPlaneMetrics.ts';
import type { RecordingManifest } from '../src/storage/manifest.ts';
import { RecordingStore } from '../src/storage/RecordingStore.ts';
import { bucketNames } from '../src/storage/layout.ts';
import { createS3Client } from '../src/storage/s3Endpoint.ts';
import { fixturePath } from '../test/support/fixtures.ts';
import { fetchSignIn } from '../test/support/oidcSignIn.ts';
import { synthSegments } from '../test/support/synthRecording.ts';
import { launchBrowser, personContext, signInBrowser } from '../test/support/webBrowser.ts';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '10000' },
    team: { type: 'string', default: '1000' },
    leads: { type: 'string', default: '10' },
    lists: { type: 'string', default: '300' },
    loads: { type: 'string', default: '20' },
    renders: { type: 'string', default: '12' },
    'render-seconds': { type: 'string', default: '20' },
  },
});
const ROWS = Number(values.rows);
const TEAM = Number(values.team);
const LEADS = Number(values.leads);
const LISTS = Number(values.lists);
const LOADS = Number(values.loads);
const RENDERS = Number(values.renders);
const RENDER_SECONDS = Number(values['render-seconds']);
const LEAD = 'lead-l1';
const AGENTS_PER_TEAM = 20;

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  return `p50 ${pct(s, 50).toFixed(2)} ms, p99 ${pct(s, 99).toFixed(2)} ms, max ${s.at(-1)!.toFixed(2)} ms (n=${s.length})`;
}
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
/** Runs `jobs` with at most `n` at a time. */
async function inParallel<T>(jobs: Array<() => Promise<T>>, n: number): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (let i = next++; i < jobs.length; i = next++) out[i] = await jobs[i]!();
    }),
  );
  return out;
}
const say = (s: string): void => console.log(s);

const logger = createLogger('warn');
const dirs = [mkdtempSync(path.join(os.tmpdir(), 'optin-bench-web-cp-')), mkdtempSync(path.join(os.tmpdir(), 'optin-bench-web-writer-'))];
const cluster = await startThrowawayCluster();
const s3 = await ensureS3Server({ logger });
const cleanups: Array<() => Promise<unknown>> = [];
try {
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  await admin.query('CREATE DATABASE bench');
  await admin.end();
  const dbUrl = new URL(cluster.url);
  dbUrl.pathname = '/bench';

  const port = await freePort();
  const appUrl = `http://localhost:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startDevIdp({ users: DEMO_USERS, clients: [{ clientId: 'optin-web', clientSecret, appUrl }] });
  cleanups.push(() => idp.close());
  const prefix = `bw${randomBytes(4).toString('hex')}-`;
  const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
  const config = loadControlPlaneConfig(
    { OPTIN_CONTROL_SECRET: randomBytes(32).toString('base64url'), OPTIN_LOG_LEVEL: 'warn', OPTIN_DATABASE_URL: dbUrl.toString(), OPTIN_DATABASE_POOL_SIZE: '16' },
    {
      'http.port': port,
      'http.rateLimitPerMinute': 1_000_000,
      dataDir: dirs[0],
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.region': s3.region,
      's3.bucketPrefix': prefix,
      keyring,
      'audit.hmacKey': randomBytes(32).toString('hex'),
      // A throwaway bucket: removable (GOVERNANCE), one day.
      'audit.lockMode': 'GOVERNANCE',
      'audit.lockDays': 1,
      'access.publicUrl': appUrl,
      'access.oidc.issuer': idp.issuer,
      'access.oidc.clientId': 'optin-web',
      'access.oidc.clientSecret': clientSecret,
    },
  );
  const cp = await ControlPlane.start(config, { logger, metrics: createControlPlaneMetrics({ defaultMetrics: false }) });
  cleanups.unshift(() => cp.close());
  say(`control plane on PostgreSQL 15 (throwaway cluster, fsync on), S3 ${s3.kind}; render pool ${config.access.ffmpegConcurrency} + queue ${config.access.ffmpegQueue}`);

  // ---- the catalogue: ROWS recordings, TEAM of them in lead-l1's team ----------------------
  const t0 = performance.now();
  const now = Date.now();
  const entries: CatalogueEntry[] = [];
  for (let i = 0; i < ROWS; i++) {
    const inTeam = i < TEAM;
    const lead = inTeam ? LEAD : `lead-x${(i % (LEADS - 1)) + 2}`;
    const agent = `agent-${lead.slice(5)}-${i % AGENTS_PER_TEAM}`;
    const recordingId = `r_bench${String(i).padStart(10, '0')}`;
    const callId = `call-${recordingId}`;
    const startedAt = now - 3_600_000 - i * 60_000;
    entries.push({
      recordingId,
      callId,
      participants: [
        { participantId: `${callId}-a`, role: 'agent', subjectId: agent, teamLeadId: lead },
        { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${i}` },
      ],
      startedAt,
      endedAt: startedAt + 180_000,
      tracks: 2,
      segments: 36,
      bytes: 900_000,
      expiresAt: now + 20 * 86_400_000,
      state: 'complete',
      workerId: 'bench-recorder',
    });
  }
  await seedCalls(cp, entries.map((e) => ({ callId: e.callId, participants: e.participants, startedAt: e.startedAt, endedAt: e.endedAt ?? e.startedAt })));
  for (let i = 0; i < entries.length; i += 500) {
    await cp.db.transaction(async (tx) => {
      for (const e of entries.slice(i, i + 500)) await upsertEntry(tx, e, now, 'report');
    });
  }
  say(`catalogue: ${ROWS} recordings (${TEAM} in ${LEAD}'s team, ${LEADS} teams), calls and consents seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // ---- real recordings for the renders (in lead-l1's team, newest) ------------------------
  const client = createS3Client({ endpoint: s3.endpoint, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region });
  const writer = await RecordingStore.open({ client, buckets: bucketNames({ prefix }), keyring: Keyring.fromConfig(keyring), spoolDir: dirs[1]!, spoolMaxBytes: 256 << 20, logger, nodeId: 'bench-recorder', sweep: false });
  cleanups.unshift(() => writer.close());
  const agentOpus = readFileSync(fixturePath('agent-tone.opus'));
  const customerOpus = readFileSync(fixturePath('customer-tone.opus'));
  const manifests: RecordingManifest[] = [];
  const t1 = performance.now();
  for (let k = 0; k < RENDERS; k++) {
    const recordingId = `r_benchaudio${String(k).padStart(6, '0')}`;
    const callId = `call-${recordingId}`;
    const startedAt = now - 60_000 * (k + 1);
    const participants = [
      { participantId: `${callId}-a`, role: 'agent' as const, subjectId: `agent-l1-${k % AGENTS_PER_TEAM}`, teamLeadId: LEAD },
      { participantId: `${callId}-c`, role: 'customer' as const, subjectId: `cust-audio-${k}` },
    ];
    await seedCalls(cp, [{ callId, participants, startedAt, endedAt: startedAt + RENDER_SECONDS * 1000 }]);
    await writer.beginRecording({ recordingId, callId, startedAt, participants, consentEvidence: [{ method: 'dtmf', at: startedAt - 1000, infoVersion: 'training-notice-v3', ref: `ivr-${k}` }] });
    for (const [pid, source] of [[participants[0]!.participantId, agentOpus], [participants[1]!.participantId, customerOpus]] as const) {
      for (const seg of synthSegments(source, { seconds: RENDER_SECONDS, segmentSeconds: 5 })) {
        await writer.putSegment(
          { recordingId, participantId: pid, segment: seg.index, run: 0, startWallClockMs: startedAt + seg.startSample / 48, durationMs: seg.samples / 48, opusPayloadBytes: seg.opusPayloadBytes, quality: { gate: 'open', run: 0, concealedMs: 0, silenceFilledMs: 0, lost: 0 } },
          seg.ogg,
        );
      }
    }
    await writer.endRecording(recordingId);
    await writer.drained(60_000);
    const m = await writer.getManifest(recordingId);
    manifests.push(m);
    await cp.db.transaction((tx) =>
      upsertEntry(tx, { recordingId, callId, participants, startedAt: m.startedAtMs, ...(m.endedAtMs === undefined ? {} : { endedAt: m.endedAtMs }), tracks: 2, segments: m.segments.length, bytes: m.segments.reduce((n, s) => n + s.sealedBytes, 0), expiresAt: m.expiresAtMs, state: 'complete', workerId: 'bench-recorder' }, Date.now(), 'report'),
    );
  }
  say(`recordings with audio: ${RENDERS} x ${RENDER_SECONDS} s (two speakers, 5 s segments), written through the store in ${((performance.now() - t1) / 1000).toFixed(1)} s`);

  // ---- 1. the team lead's list -------------------------------------------------------------
  say(`\n1. ${LEAD}'s list, first page of 50, ${ROWS} recordings in the catalogue`);
  const lead = await fetchSignIn(appUrl, 'lead', 'demo');
  const firstApi = await timed(async () => {
    const r = await lead.fetch('/api/recordings');
    if (r.status !== 200) throw new Error(`GET /api/recordings: ${r.status}`);
    await r.arrayBuffer();
  });
  const firstPage = await timed(async () => {
    const r = await lead.fetch('/recordings');
    if (r.status !== 200) throw new Error(`GET /recordings: ${r.status}`);
    await r.arrayBuffer();
  });
  say(`   first requests after start: API ${firstApi.toFixed(1)} ms, page ${firstPage.toFixed(1)} ms`);
  const bare: number[] = [];
  const api: number[] = [];
  const page: number[] = [];
  let rowsSeen = 0;
  for (let i = 0; i < LISTS; i++) {
    bare.push(await timed(async () => (rowsSeen = (await listRecordings(cp.db, { by: 'lead', key: LEAD, limit: 50 })).recordings.length)));
    api.push(
      await timed(async () => {
        const r = await lead.fetch('/api/recordings');
        await r.arrayBuffer();
      }),
    );
    page.push(
      await timed(async () => {
        const r = await lead.fetch('/recordings');
        await r.arrayBuffer();
      }),
    );
  }
  // What every list also pays: the audited access (R11: no audit entry, no access), one
  // hash-chained object PUT to the audit bucket, measured alone on the same trail.
  const trail = cp.store?.trail;
  if (trail === undefined) throw new Error('the control plane has no audit trail');
  const appends: number[] = [];
  for (let i = 0; i < Math.min(LISTS, 100); i++) appends.push(await timed(() => trail.append({ type: 'bench.probe', actor: 'bench', role: 'system', purpose: 'benchmark' })));
  say(`   baseline, the bare catalogue query (${rowsSeen} rows): ${summary(bare)}`);
  say(`   baseline, one audit append alone (S3 PUT):       ${summary(appends)}`);
  say(`   GET /api/recordings (JSON, session cookie):      ${summary(api)}`);
  say(`   GET /recordings (the HTML page):                 ${summary(page)}`);

  const browser = await launchBrowser();
  cleanups.unshift(() => browser.close());
  const { page: tab } = await personContext(browser);
  await signInBrowser(tab, appUrl, 'lead');
  await tab.waitForLoadState('load');
  const navTiming = `(() => { const n = performance.getEntriesByType('navigation')[0]; return { ttfb: n.responseStart - n.startTime, dcl: n.domContentLoadedEventEnd - n.startTime, load: n.loadEventEnd - n.startTime, rows: document.querySelectorAll('tr[data-recording]').length }; })()`;
  type Nav = { ttfb: number; dcl: number; load: number; rows: number };
  const first = (await tab.evaluate(navTiming)) as Nav;
  say(`   Chromium, the first view after sign-in (${first.rows} rows): first byte ${first.ttfb.toFixed(1)} ms, DOMContentLoaded ${first.dcl.toFixed(1)} ms, load ${first.load.toFixed(1)} ms`);
  const loads: Nav[] = [];
  for (let i = 0; i < LOADS; i++) {
    await tab.goto(`${appUrl}/recordings`, { waitUntil: 'load' });
    await tab.waitForFunction(`performance.getEntriesByType('navigation')[0].loadEventEnd > 0`);
    loads.push((await tab.evaluate(navTiming)) as Nav);
  }
  say(`   Chromium, ${LOADS} loads of /recordings: first byte ${summary(loads.map((l) => l.ttfb))}`);
  say(`                                   load ${summary(loads.map((l) => l.load))}`);

  // ---- 2. coaching renders -----------------------------------------------------------------
  const concurrency = config.access.ffmpegConcurrency;
  say(`\n2. coaching renders: ${RENDERS} recordings of ${RENDER_SECONDS} s, stereo Ogg Opus`);
  const maxBytes = config.access.renderCacheMb * 1024 * 1024;
  const tb = performance.now();
  const baseTimes = await inParallel(
    manifests.map((m) => () => timed(() => renderCoaching(writer, m, 'ogg', maxBytes))),
    concurrency,
  );
  const baseWall = (performance.now() - tb) / 1000;
  say(`   baseline, renderCoaching directly (${concurrency} at a time): ${(RENDERS / baseWall).toFixed(2)} renders/s, ${((RENDERS * RENDER_SECONDS) / baseWall).toFixed(0)}x real time; per render ${summary(baseTimes)}`);
  let busy = 0;
  const playOnce = async (id: string): Promise<number> => {
    for (;;) {
      const t = performance.now();
      const r = await lead.fetch(`/api/recordings/${id}/play?purpose=coaching&format=ogg`);
      if (r.status === 503) {
        busy++;
        await r.arrayBuffer();
        await new Promise((res) => setTimeout(res, Number(r.headers.get('retry-after') ?? '1') * 1000));
        continue;
      }
      if (r.status !== 200) throw new Error(`play ${id}: ${r.status} ${await r.text()}`);
      await r.arrayBuffer();
      return performance.now() - t;
    }
  };
  const clients = concurrency + config.access.ffmpegQueue;
  for (const pass of ['cold (rendered)', 'warm (render cache)'] as const) {
    busy = 0;
    const tp = performance.now();
    const times = await inParallel(
      manifests.map((m) => () => playOnce(m.recordingId)),
      clients,
    );
    const wall = (performance.now() - tp) / 1000;
    say(`   GET .../play, ${pass}, ${clients} clients: ${(RENDERS / wall).toFixed(2)} renders/s, ${((RENDERS * RENDER_SECONDS) / wall).toFixed(0)}x real time; per request ${summary(times)}; 503 busy answers: ${busy}`);
  }
} finally {
  for (const c of cleanups) await c().catch((e: unknown) => console.error('cleanup:', (e as Error).message));
  await cluster.stop();
  await s3.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/** Calls and their consents straight into the control plane's tables (what the IVR's facts would leave), in bulk. */
async function seedCalls(cp: ControlPlane, calls: Array<{ callId: string; participants: CatalogueEntry['participants']; startedAt: number; endedAt: number }>): Promise<void> {
  for (let i = 0; i < calls.length; i += 1000) {
    const chunk = calls.slice(i, i + 1000);
    await cp.db.query(
      `INSERT INTO calls (call_id, participants, state, started_at_ms, ended_at_ms)
        SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::bigint[]) ON CONFLICT DO NOTHING`,
      [chunk.map((c) => c.callId), chunk.map((c) => JSON.stringify(c.participants)), chunk.map(() => 'ended'), chunk.map((c) => c.startedAt), chunk.map((c) => c.endedAt)],
    );
    await cp.db.query(
      `INSERT INTO consents (call_id, participant_id, status, evidence)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) ON CONFLICT DO NOTHING`,
      [chunk.map((c) => c.callId), chunk.map((c) => `${c.callId}-c`), chunk.map(() => 'granted'), chunk.map((c) => JSON.stringify({ method: 'dtmf', at: c.startedAt - 1000, infoVersion: 'training-notice-v3', ref: `ivr-${c.callId}` }))],
    );
  }
}
