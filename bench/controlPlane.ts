/**
 * Control-plane benchmark (issue 13; not a timed test): `npm run bench:control`.
 *
 * 1. Catalogue listing: a team's recordings, newest first, 50 per page, with N catalogue rows
 *    (default 100,000; 500 team leads, 5,000 agents). Measured through the HTTP API (token check,
 *    validation, query, JSON) and as the bare query; first pages and deep pages (keyset cursor).
 *    Target: p99 < 50 ms.
 * 2. Fact ingest: C concurrent posters send F facts (consent and schedule changes) while a
 *    policy-stream client is connected; reports accepted facts/s and the latency from POST to
 *    the delta at the stream client (p50/p99).
 *
 * Database: OPTIN_DATABASE_URL if set, else a throwaway PostgreSQL 15 cluster with fsync ON
 * (durable commits, as in production; --fast turns it off), or --embedded for PGlite.
 *
 *     npm run bench:control -- [--rows 100000] [--lists 1000] [--facts 3000] [--concurrency 8] [--embedded] [--fast]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startThrowawayCluster, type ThrowawayCluster } from '../scripts/pg/cluster.ts';
import { listRecordings } from '../src/catalogue/Catalogue.ts';
import { ControlPlane } from '../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../src/controlplane/config.ts';
import { createControlPlaneMetrics } from '../src/metrics/controlPlaneMetrics.ts';
import { createToken, upsertIntegration } from '../src/facts/integrations.ts';
import { createLogger } from '../src/log/logger.ts';
import { StreamClientV2 } from '../test/support/controlStreamV2.ts';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    lists: { type: 'string', default: '1000' },
    facts: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '8' },
    embedded: { type: 'boolean', default: false },
    fast: { type: 'boolean', default: false },
  },
});
const ROWS = Number(values.rows);
const LISTS = Number(values.lists);
const FACTS = Number(values.facts);
const CONCURRENCY = Number(values.concurrency);
const LEADS = 500;
const AGENTS = 5000;

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  return `p50 ${pct(s, 50).toFixed(2)} ms, p99 ${pct(s, 99).toFixed(2)} ms, max ${s.at(-1)!.toFixed(2)} ms (n=${s.length})`;
}

let cluster: ThrowawayCluster | undefined;
let databaseUrl = process.env.OPTIN_DATABASE_URL;
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'optin-bench-cp-'));
if (!values.embedded && databaseUrl === undefined) {
  cluster = await startThrowawayCluster({ fast: values.fast });
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  await admin.query('CREATE DATABASE bench');
  await admin.end();
  const u = new URL(cluster.url);
  u.pathname = '/bench';
  databaseUrl = u.toString();
}
const secret = randomBytes(32).toString('base64url');
const env: NodeJS.ProcessEnv = { OPTIN_CONTROL_SECRET: secret, OPTIN_CONTROL_PORT: '0', OPTIN_DATA_DIR: dataDir, OPTIN_LOG_LEVEL: 'warn', OPTIN_DATABASE_POOL_SIZE: '16' };
if (!values.embedded && databaseUrl !== undefined) env.OPTIN_DATABASE_URL = databaseUrl;
const config = loadControlPlaneConfig(env, { 'http.rateLimitPerMinute': 1_000_000 });
const t0 = performance.now();
const cp = await ControlPlane.start(config, { logger: createLogger('warn'), metrics: createControlPlaneMetrics({ defaultMetrics: false }), store: null });
console.log(`control plane on ${cp.db.kind === 'embedded' ? 'the embedded database (PGlite)' : `PostgreSQL 15 (${cluster ? `throwaway cluster, fsync ${values.fast ? 'off' : 'on'}` : 'OPTIN_DATABASE_URL'})`}, started in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const tokens: Record<string, string> = {};
for (const scope of ['ivr', 'wfm', 'ops'] as const) {
  const tk = createToken(scope);
  await upsertIntegration(cp.db, { id: scope, secretHash: tk.secretHash, scopes: [scope] }, Date.now());
  tokens[scope] = tk.token;
}

async function api(method: string, p: string, token: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${cp.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(method === 'GET' ? {} : { 'idempotency-key': `b-${randomBytes(9).toString('base64url')}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

// -- 1. catalogue ------------------------------------------------------------------------------
{
  const t1 = performance.now();
  const base = Date.now() - 20 * 86_400_000;
  // Bulk-loaded with SQL (the same rows reports would make): agent i belongs to lead i % LEADS.
  await cp.db.query(
    `INSERT INTO recordings (recording_id, call_id, agent_ids, team_lead_ids, participants, started_at_ms, ended_at_ms, tracks, segments, bytes, expires_at_ms, state, worker_id, updated_at_ms)
     SELECT 'r' || g, 'c' || g, ARRAY['agent-' || (g % $2)], ARRAY['lead-' || ((g % $2) % $3)],
            jsonb_build_array(jsonb_build_object('participantId', 'pa', 'role', 'agent', 'subjectId', 'agent-' || (g % $2), 'teamLeadId', 'lead-' || ((g % $2) % $3)),
                              jsonb_build_object('participantId', 'pc', 'role', 'customer', 'subjectId', 'cust-' || g)),
            $4::bigint + g * 17000, $4::bigint + g * 17000 + 300000, 2, 60, 2400000, $4::bigint + g * 17000 + 2592000000, 'complete', 'w1', $5
       FROM generate_series(1, $1) AS g`,
    [ROWS, AGENTS, LEADS, base, Date.now()],
  );
  await cp.db.query(
    `INSERT INTO recording_index (kind, key, started_at_ms, recording_id)
     SELECT 'agent', agent_ids[1], started_at_ms, recording_id FROM recordings
     UNION ALL SELECT 'lead', team_lead_ids[1], started_at_ms, recording_id FROM recordings`,
  );
  await cp.db.exec('ANALYZE recordings; ANALYZE recording_index');
  console.log(`\ncatalogue: ${ROWS.toLocaleString('en')} rows (${LEADS} team leads, ${AGENTS} agents; ~${Math.round(ROWS / LEADS)} recordings per team) loaded in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  const lead = (): string => `lead-${Math.floor(Math.random() * LEADS)}`;
  for (let i = 0; i < 50; i++) await api('GET', `/v1/recordings?teamLeadId=${lead()}&limit=50`, tokens.ops!); // warm-up
  const first: number[] = [];
  const deep: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < LISTS; i++) {
    const key = lead();
    let s = performance.now();
    const page1 = await api('GET', `/v1/recordings?teamLeadId=${key}&limit=50`, tokens.ops!);
    first.push(performance.now() - s);
    if ((page1.body.recordings as unknown[]).length !== 50) throw new Error('expected a full page');
    // A deep page: follow the cursor 3 more times and time the last one.
    let cursor = page1.body.nextCursor as string;
    for (let k = 0; k < 3; k++) {
      s = performance.now();
      const next = await api('GET', `/v1/recordings?teamLeadId=${key}&limit=50&cursor=${cursor}`, tokens.ops!);
      if (k === 2) deep.push(performance.now() - s);
      cursor = next.body.nextCursor as string;
    }
    s = performance.now();
    await listRecordings(cp.db, { by: 'lead', key, limit: 50 });
    bare.push(performance.now() - s);
  }
  console.log(`  GET /v1/recordings?teamLeadId=..&limit=50, first page : ${summary(first)}`);
  console.log(`  GET /v1/recordings, 4th page (keyset cursor)          : ${summary(deep)}`);
  console.log(`  the query alone (listRecordings)                      : ${summary(bare)}`);
  console.log(`  target p99 < 50 ms through the API: ${pct([...first].sort((a, b) => a - b), 99) < 50 && pct([...deep].sort((a, b) => a - b), 99) < 50 ? 'met' : 'NOT met'}`);
}

// -- 2. fact ingest --------------------------------------------------------------------------------
{
  const client = await StreamClientV2.connect(cp.streamUrl, { secret, workerId: 'bench-worker' });
  await client.waitSnapshot();
  // Calls to consent on, and agents to schedule (set up before timing).
  const CALLS = 200;
  for (let i = 0; i < CALLS; i++) {
    const callId = `bc-${i}`;
    await api('POST', '/v1/calls', tokens.ivr!, {
      callId,
      participants: [
        { participantId: `${callId}-a`, role: 'agent', subjectId: `agent-${i % AGENTS}` },
        { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${i}` },
      ],
    });
  }
  await client.waitSeq((await cp.db.query<{ seq: number }>('SELECT seq FROM stream_head')).rows[0]!.seq, 60_000);
  const arrival = new Map<number, number>();
  client.onDelta = (d) => arrival.set(d.seq, performance.now());
  const sentAt: Array<{ at: number; seq: number }> = [];
  let next = 0;
  let refused = 0;
  const hour = 3_600_000;
  const t2 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        if (i >= FACTS) return;
        const at = performance.now();
        const res =
          i % 2 === 0
            ? await api('POST', `/v1/calls/bc-${i % CALLS}/consent`, tokens.ivr!, {
                participantId: `bc-${i % CALLS}-c`,
                decision: i % 4 === 0 ? 'granted' : 'declined',
                evidence: { method: 'dtmf', at: Date.now(), infoVersion: 'bench.v1' },
              })
            : await api('PUT', `/v1/agents/agent-${i % AGENTS}/schedule`, tokens.wfm!, { windows: [{ start: Date.now() + hour, end: Date.now() + 2 * hour }], monthlyCap: i % 50 });
        if (res.status >= 300) refused++;
        else sentAt.push({ at, seq: res.body.seq as number });
      }
    }),
  );
  const elapsed = (performance.now() - t2) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const lastSeq = Math.max(...sentAt.map((x) => x.seq));
  await client.waitSeq(lastSeq, 60_000);
  const lat = sentAt.map((x) => arrival.get(x.seq)! - x.at);
  console.log(`\nfact ingest: ${FACTS} facts (consent and schedule writes), ${CONCURRENCY} concurrent posters, 1 stream client`);
  console.log(`  ${(sentAt.length / elapsed).toFixed(0)} facts/s accepted (${refused} refused), ${elapsed.toFixed(1)} s`);
  console.log(`  this process (API, stream and the posting clients together) used ${(((cpu.user + cpu.system) / 1e6 / elapsed) * 100).toFixed(0)}% of one core`);
  console.log(`  POST -> delta at the stream client: ${summary(lat)}`);
  console.log(`  stream client stale: ${client.stale ?? 'no'}, deltas received in order: ${client.deltas.length}`);
  client.close();
}

console.log(`\nprocess RSS at the end: ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
await cp.close();
await cluster?.stop();
rmSync(dataDir, { recursive: true, force: true });
