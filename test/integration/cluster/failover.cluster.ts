/**
 * Distribution, proven by killing parts of it (issue 18, item 5): `npm run test:cluster`.
 *
 * On loopback: the replicated Ceph cluster of scripts/ceph/cluster.sh (one monitor, three OSDs on
 * memstore, the RGW pools replicated three times with two needed for I/O, two gateways behind a
 * balancer), a PostgreSQL primary with a synchronous hot standby (scripts/pg/pg.sh) behind a proxy,
 * two control-plane replicas (workers/control.ts processes) on that database, with the store's
 * credentials (they carry out erasures no worker holds), and two recorder processes
 * (workers/recorder.ts), recorder A streaming from replica a, B from replica b, both storing
 * through the gateway balancer.
 *
 * Three calls are recorded (ffmpeg feeding each leg through call control): a1 on A, consented
 * before anything is killed; b1 on B, consented after the OSD is killed; e1 on A, consented after
 * the gateway is killed, whose customer withdraws with erasure after the PostgreSQL failover.
 * Beside them, an object writer (retrying a failed PUT as the uploader does), an integration
 * ingesting facts (retrying with the same Idempotency-Key, alternating replicas) and one
 * policy-stream client per replica. Killed in turn: one OSD, one gateway, the PostgreSQL primary
 * (the standby is promoted and the proxy pointed at it), then recorder B (kill -9; restarted on
 * its spool, as a container on its volume).
 *
 * Afterwards: every acknowledged object reads back with its bytes; every acknowledged fact is in
 * the database under the seq it was answered with, no gap, none twice, and every delta a stream
 * client saw is that fact; every consent started its recording and the erasure was carried out
 * (the customer's media and key gone, the store's receipt recorded); on every track no segment is
 * missing or stored twice and no audio is lost inside a gate run, B's tracks reach the kill but
 * for its open segment; and `optin catalogue rebuild --dry-run` finds the catalogue consistent
 * with the store. The report (artifacts/cluster/report.json and the test's output) lists what was
 * killed when, the outages each client saw, and the counts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Client } from 'minio';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import type { FfmpegRun } from '../../../src/media/ffmpeg.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { bucketNames, dataKeyPrefix, manifestObjectKey, mediaPrefix } from '../../../src/storage/layout.ts';
import { createS3Client } from '../../../src/storage/s3Endpoint.ts';
import { TEST_SECRET, callBody } from '../../support/controlPlane.ts';
import { freePort, spawnControlPlane, writeIntegrationsFile, type ControlProcess } from '../../support/controlProcess.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { startCephCluster, startPgPair, type CephCluster, type PgPair } from '../../support/clusterHarness.ts';
import { ClusterRecorder, judgeTrack, objectVersions, type TrackVerdict } from '../../support/clusterRecorders.ts';
import { PolicyFacts } from '../../support/policyFacts.ts';
import { TcpBalancer } from '../../support/tcpBalancer.ts';
import { readTrack } from '../../support/storageFixtures.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const started = Date.now();
const at = (): number => Date.now() - started;

interface Event {
  t: number;
  what: string;
}
const timeline: Event[] = [];
function mark(what: string): void {
  timeline.push({ t: at(), what });
  console.log(`[cluster +${(at() / 1000).toFixed(1)} s] ${what}`);
}

const SEGMENT_SECONDS = 2;
let ceph: CephCluster;
let db: PgPair;
let dir: string;
const replicas: { proc: ControlProcess; port: number }[] = [];
const recorders: Record<'a' | 'b', ClusterRecorder> = {} as never;
const senders: FfmpegRun[] = [];
let controlBalancer: TcpBalancer | undefined;
let token: string;
const bucket = `cluster-${randomBytes(4).toString('hex')}`;
const recorderPrefix = `rec${randomBytes(3).toString('hex')}-`;
const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
const callSecret = randomBytes(32).toString('base64url');
const auditHmacKey = randomBytes(32).toString('hex');
/** The audit trail's settings, as every writer (recorders, control planes, the CLI) gets them. */
const auditEnv = (): Record<string, string> => ({
  OPTIN_AUDIT_HMAC_KEY: auditHmacKey,
  OPTIN_S3_AUDIT_ACCESS_KEY: ceph.auditAccessKey,
  OPTIN_S3_AUDIT_SECRET_KEY: ceph.auditSecretKey,
});

beforeAll(async () => {
  mark('starting Ceph (1 mon, 3 OSDs, 2 gateways) and PostgreSQL (primary + synchronous standby)');
  // Both at once (Ceph takes ~40 s); each assigned as soon as it is up, so afterAll stops
  // whichever started even when the other failed.
  const results = await Promise.allSettled([startCephCluster().then((c) => (ceph = c)), startPgPair().then((p) => (db = p))]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  mark(`Ceph ready (gateways ${ceph.gateways.join(', ')}); PostgreSQL ready (primary :${db.primaryPort}, standby :${db.standbyPort})`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'optin-cluster-'));
  const integrations = writeIntegrationsFile(dir);
  token = integrations.token;
  const admin = new pg.Client({ connectionString: db.url() });
  await admin.connect();
  await admin.query('CREATE DATABASE optin');
  await admin.end();
  for (const name of ['cp-a', 'cp-b']) {
    const port = await freePort();
    const proc = spawnControlPlane({
      OPTIN_CONTROL_SECRET: TEST_SECRET,
      OPTIN_DATABASE_URL: db.url('optin'),
      OPTIN_CONTROL_PORT: String(port),
      OPTIN_CONTROL_HEARTBEAT_MS: '200',
      OPTIN_CONTROL_INTEGRATIONS_FILE: integrations.file,
      OPTIN_CONTROL_REPLICA_ID: name,
      OPTIN_DATA_DIR: path.join(dir, name),
      // The store, so that the control plane carries out an erasure no live worker holds.
      OPTIN_S3_ENDPOINT: ceph.endpoint,
      OPTIN_S3_ACCESS_KEY: ceph.accessKey,
      OPTIN_S3_SECRET_KEY: ceph.secretKey,
      OPTIN_S3_BUCKET_PREFIX: recorderPrefix,
      OPTIN_KEYRING: JSON.stringify(keyring),
      ...auditEnv(),
      OPTIN_CONTROL_SWEEP_INTERVAL_MS: '200',
    });
    replicas.push({ proc, port });
  }
  await Promise.all(replicas.map((r) => r.proc.ready));
  mark(`control plane replicas cp-a :${replicas[0]!.port} and cp-b :${replicas[1]!.port} ready`);
  // The recorders reach the control plane through one balancer over both replicas (the
  // deployment's `control` alias): a recorder whose replica goes away reconnects to the other.
  // Round robin: A's first stream lands on cp-a, B's on cp-b.
  controlBalancer = await TcpBalancer.start(replicas.map((r) => ({ host: '127.0.0.1', port: r.port })));
  // One after the other: each starts a mediasoup worker, and the two cores are busy enough.
  for (const k of ['a', 'b'] as const) {
    recorders[k] = await ClusterRecorder.start({
      name: k,
      controlUrl: `ws://127.0.0.1:${controlBalancer.port}/v1/stream`,
      controlSecret: TEST_SECRET,
      s3: { endpoint: ceph.endpoint, accessKey: ceph.accessKey, secretKey: ceph.secretKey },
      bucketPrefix: recorderPrefix,
      keyring,
      audit: { hmacKey: auditHmacKey, accessKey: ceph.auditAccessKey, secretKey: ceph.auditSecretKey },
      callSecret,
      segmentSeconds: SEGMENT_SECONDS,
    });
  }
  mark(`recorders ${recorders.a.workerId} and ${recorders.b.workerId} ready, streaming through the control balancer (open: ${JSON.stringify([...controlBalancer.openConnections()])})`);
}, 400_000);

afterAll(async () => {
  for (const s of senders) s.stop();
  for (const r of Object.values(recorders)) if (r.proc.child.exitCode === null) r.proc.child.kill('SIGKILL');
  for (const r of replicas) r.proc.child.kill('SIGKILL');
  await controlBalancer?.close();
  // The processes' own logs (pseudonymous ids only, R-privacy), for whoever reads a red run.
  mkdirSync('artifacts/cluster', { recursive: true });
  for (const [k, r] of Object.entries(recorders)) writeFileSync(`artifacts/cluster/recorder-${k}.log`, r.logs());
  replicas.forEach((r, i) => writeFileSync(`artifacts/cluster/control-${i === 0 ? 'a' : 'b'}.log`, r.proc.output()));
  await Promise.all([ceph?.stop(), db?.stop()].map((p) => p?.catch((err: Error) => console.error(err.message))));
  for (const r of Object.values(recorders)) rmSync(r.spoolDir, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 120_000);

/** Stores objects one after another, retrying a failed PUT until it is stored. */
class ObjectWriter {
  readonly acked = new Map<string, string>(); // name -> sha256
  readonly failures: { t: number; name: string; error: string }[] = [];
  longestStallMs = 0;
  #stop = false;
  #done: Promise<void> | undefined;
  constructor(readonly s3: Client) {}

  start(): void {
    this.#done = (async () => {
      for (let n = 0; !this.#stop; n++) {
        const name = `obj-${String(n).padStart(5, '0')}`;
        const body = randomBytes(2048 + (n % 7) * 1024);
        const t0 = Date.now();
        for (;;) {
          try {
            await withTimeout(this.s3.putObject(bucket, name, body, body.length), 30_000);
            break;
          } catch (err) {
            this.failures.push({ t: at(), name, error: (err as Error).message.slice(0, 120) });
            await sleep(100);
          }
        }
        this.longestStallMs = Math.max(this.longestStallMs, Date.now() - t0);
        this.acked.set(name, createHash('sha256').update(body).digest('hex'));
        await sleep(100);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

interface AckedFact {
  callId: string;
  seq: number;
  replica: number;
  attempts: number;
  ms: number;
}

/** Starts calls through the API, alternating replicas; a failed write is retried with its key. */
class FactWriter {
  readonly acked: AckedFact[] = [];
  readonly failures: { t: number; callId: string; replica: number; error: string }[] = [];
  longestStallMs = 0;
  #stop = false;
  #done: Promise<void> | undefined;

  start(): void {
    this.#done = (async () => {
      for (let n = 0; !this.#stop; n++) {
        const callId = `call-${String(n).padStart(5, '0')}`;
        const key = `k-${callId}-${randomBytes(4).toString('hex')}`;
        const t0 = Date.now();
        for (let attempt = 1; ; attempt++) {
          const replica = (n + attempt - 1) % replicas.length;
          try {
            const res = await fetch(`http://127.0.0.1:${replicas[replica]!.port}/v1/calls`, {
              method: 'POST',
              headers: { authorization: `Bearer ${token}`, 'idempotency-key': key, 'content-type': 'application/json' },
              body: JSON.stringify(callBody(callId, `agent-${n % 5}`)),
              signal: AbortSignal.timeout(15_000),
            });
            const body = (await res.json()) as { seq?: number; error?: string };
            if (res.status === 201 && typeof body.seq === 'number') {
              this.acked.push({ callId, seq: body.seq, replica, attempts: attempt, ms: Date.now() - t0 });
              break;
            }
            this.failures.push({ t: at(), callId, replica, error: `HTTP ${res.status} ${body.error ?? ''}` });
          } catch (err) {
            this.failures.push({ t: at(), callId, replica, error: (err as Error).message.slice(0, 120) });
          }
          await sleep(200);
        }
        this.longestStallMs = Math.max(this.longestStallMs, Date.now() - t0);
        await sleep(150);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

/** Follows one replica's stream, reconnecting (and resyncing from a snapshot) when it drops. */
class StreamWatcher {
  /** seq -> callId of every call.started delta seen, across reconnections. */
  readonly seen = new Map<number, string>();
  readonly conflicts: string[] = [];
  reconnects = 0;
  stale: string[] = [];
  #client: StreamClientV2 | undefined;
  #stop = false;
  #done: Promise<void> | undefined;
  constructor(readonly replica: number) {}

  start(): void {
    this.#done = (async () => {
      while (!this.#stop) {
        try {
          const client = await StreamClientV2.connect(`ws://127.0.0.1:${replicas[this.replica]!.port}/v1/stream`, { secret: TEST_SECRET, workerId: `w-watch-${this.replica}` });
          this.#client = client;
          client.onDelta = (d) => {
            if (d.fact.type !== 'call.started') return;
            const callId = (d.fact as { callId: string }).callId;
            const before = this.seen.get(d.seq);
            if (before !== undefined && before !== callId) this.conflicts.push(`seq ${d.seq}: ${before} then ${callId}`);
            this.seen.set(d.seq, callId);
          };
          while (!this.#stop && client.stale === undefined) await sleep(50);
          if (client.stale !== undefined && !this.#stop) {
            this.stale.push(`+${(at() / 1000).toFixed(1)} s ${client.stale}`);
            this.reconnects++;
          }
          client.close();
        } catch {
          await sleep(200);
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    this.#client?.close();
    await this.#done;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
}

async function streamToBuffer(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** One query on a fresh connection through the proxy: it survives the failover of the primary. */
async function sql<R extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: db.url('optin') });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** The R7 state the control plane holds for a call (reported by the recorder holding it). */
async function recordingState(callId: string): Promise<{ recording: boolean; reasons: string[]; workerId: string; recordingId: string | null } | undefined> {
  const rows = await sql<{ recording: boolean; reasons: string[]; worker_id: string; recording_id: string | null }>(
    'SELECT recording, reasons, worker_id, recording_id FROM call_recording_states WHERE call_id = $1',
    [callId],
  );
  const r = rows[0];
  return r && { recording: r.recording, reasons: r.reasons, workerId: r.worker_id, recordingId: r.recording_id };
}

async function until<T>(probe: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A fact through the API, retried on the other replica while the answer is a 5xx or none. */
async function fact(act: (policy: PolicyFacts) => Promise<Record<string, unknown>>, what: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 30_000;
  for (let attempt = 0; ; attempt++) {
    const port = replicas[attempt % replicas.length]!.port;
    try {
      return await act(new PolicyFacts({ url: `http://127.0.0.1:${port}`, tokens: { ivr: token, wfm: token, hr: token, ops: token } }));
    } catch (err) {
      const status = (err as { status?: number }).status;
      if ((status !== undefined && status < 500) || Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`);
      await sleep(250);
    }
  }
}

interface CallPlan {
  callId: string;
  recorder: 'a' | 'b';
  agent: string;
  customer: string;
  consentAt?: number;
  recordingId?: string;
}

function plan(callId: string, recorder: 'a' | 'b'): CallPlan {
  return { callId, recorder, agent: `${callId}-agent`, customer: `${callId}-cust` };
}

/** The call's facts, then its legs on its recorder (ffmpeg for `seconds`). */
async function startCall(c: CallPlan, seconds: number): Promise<void> {
  await fact(
    (p) =>
      p.startCall(c.callId, [
        { participantId: c.agent, role: 'agent', subjectId: 'ag-cluster', teamLeadId: 'lead-cluster' },
        { participantId: c.customer, role: 'customer', subjectId: `${c.callId}-subject` },
      ]),
    `call.started ${c.callId}`,
  );
  await sleep(300); // the worker learns of the call over its stream
  senders.push(
    ...(await recorders[c.recorder].openCall(
      c.callId,
      [
        { participantId: c.agent, codec: 'opus', file: 'agent-tone.wav' },
        { participantId: c.customer, codec: 'pcmu', file: 'customer-tone.wav' },
      ],
      seconds,
    )),
  );
}

/** Consent by DTMF; resolves once the recorder reports the call recording (R7), with the recording id. */
async function consent(c: CallPlan): Promise<void> {
  c.consentAt = Date.now();
  await fact((p) => p.grantConsent(c.callId, c.customer, { method: 'dtmf', at: c.consentAt!, infoVersion: 'notice-v1' }), `consent ${c.callId}`);
  const state = await until(async () => {
    const s = await recordingState(c.callId);
    return s?.recording && s.recordingId ? s : undefined;
  }, 20_000, `${c.callId} recording after its consent`);
  c.recordingId = state.recordingId!;
  mark(`consent for ${c.callId} carried out: recording ${c.recordingId} on ${state.workerId} ${Date.now() - c.consentAt} ms after the fact`);
}

describe('the cluster keeps working while its parts are killed', () => {
  it('one OSD, one gateway, the PostgreSQL primary, then a recorder: nothing acknowledged is lost, the sequence holds, recordings are whole', async () => {
    const s3 = createS3Client({ endpoint: ceph.endpoint, accessKey: ceph.accessKey, secretKey: ceph.secretKey, region: 'us-east-1' });
    await s3.makeBucket(bucket, 'us-east-1');
    await fact((p) => p.setSchedule('ag-cluster', [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 100), 'schedule.set');
    const a1 = plan('call-a1', 'a');
    const b1 = plan('call-b1', 'b');
    const e1 = plan('call-e1', 'a');
    const calls = [a1, b1, e1];
    for (const c of calls) await startCall(c, 120);
    await consent(a1);

    const objects = new ObjectWriter(s3);
    const facts = new FactWriter();
    const watchers = [new StreamWatcher(0), new StreamWatcher(1)];
    objects.start();
    facts.start();
    for (const w of watchers) w.start();
    mark('workload running: three calls on two recorders, objects through the gateway balancer, facts through both replicas, one stream client per replica');
    await sleep(3000);

    const counts = (): string => `${objects.acked.size} objects, ${facts.acked.length} facts acknowledged`;
    mark(`kill -9 osd.1 (${counts()})`);
    await ceph.kill('osd', '1');
    await ceph.waitOsdsUp(2);
    mark('osd.1 marked down by the monitor: 2 of 3 OSDs up, pools degraded (size 3, min_size 2)');
    await consent(b1);
    await sleep(2000);

    // The gateway carrying the most (keep-alive) connections, so that the kill is felt.
    const open = ceph.balancer.openConnections();
    const busiest = ceph.gateways.map((g, i) => ({ name: i === 0 ? 'a' : 'b', n: open.get(new URL(g).host) ?? 0 })).sort((x, y) => y.n - x.n)[0]!;
    mark(`kill -9 rgw.${busiest.name}, which carries ${busiest.n} open connection(s) (${counts()})`);
    await ceph.kill('rgw', busiest.name);
    await consent(e1);
    await sleep(2000);
    mark(`gateway balancer: ${ceph.balancer.stats.refused} connects refused and retried on the other gateway; writer failures so far: ${objects.failures.length}`);

    mark(`kill -9 the PostgreSQL primary (${counts()})`);
    await db.crashPrimary();
    const promoteMs = await db.promoteStandby();
    mark(`standby promoted in ${promoteMs} ms; the database proxy now points at it`);
    const factsAtPromotion = facts.acked.length;
    const deadline = Date.now() + 60_000;
    while (facts.acked.length < factsAtPromotion + 10 && Date.now() < deadline) await sleep(100);
    mark(`facts flowing again after the failover (${counts()})`);

    // The customer of e1 withdraws, with erasure (R9): carried out on the new primary.
    const withdrawn = await fact((p) => p.withdrawConsent(e1.callId, e1.customer, { erase: true, evidence: { method: 'dtmf', at: Date.now(), infoVersion: 'notice-v1' } }), 'erasure');
    const erasureId = String(withdrawn.erasureId);
    mark(`erasure ${erasureId} of ${e1.callId}'s customer requested`);
    const erasure = await until(async () => {
      const st = await fact((p) => p.erasure(erasureId), 'erasure status');
      return st.state === 'done' ? st : undefined;
    }, 60_000, `erasure ${erasureId} done`);
    mark(`erasure ${erasureId} done`);
    await sleep(2000);

    // Last, recorder B: kill -9 in the middle of b1, then restarted on its spool.
    const spoolAtKill = recorders.b.spoolItems();
    const bKilledAt = Date.now();
    mark(`kill -9 recorder ${recorders.b.workerId} (b1 recording; ${spoolAtKill} item(s) in its spool)`);
    await recorders.b.kill();
    await sleep(2000);
    await recorders.b.restart();
    mark(`recorder ${recorders.b.workerId} restarted on its spool`);
    await until(async () => recorders.b.spoolItems() === 0 || undefined, 60_000, "the restarted recorder's spool to drain");
    mark(`its spool drained (${counts()})`);

    // The end: calls end, the workload stops, the recorders stop gracefully.
    const endedAt = Date.now();
    for (const c of calls) await fact((p) => p.endCall(c.callId), `call.ended ${c.callId}`);
    for (const s of senders) s.stop();
    await Promise.all([objects.stop(), facts.stop()]);
    const head = facts.acked.reduce((m, f) => Math.max(m, f.seq), 0);
    await Promise.all(
      watchers.map(async (w) => {
        const deadline = Date.now() + 20_000;
        while (Math.max(0, ...w.seen.keys()) < head && Date.now() < deadline) await sleep(100);
      }),
    );
    for (const w of watchers) await w.stop();
    await sleep(3000); // the recordings end (final segments, manifests, catalogue reports) before the stop
    const stops = { a: await recorders.a.stop(), b: await recorders.b.stop() };
    mark(`workload stopped: ${counts()}; recorders stopped (A exit ${stops.a.code}, B exit ${stops.b.code})`);

    // Every acknowledged object reads back, bytes intact (through the surviving gateway).
    let objectsOk = 0;
    for (const [name, sha] of objects.acked) {
      const bytes = await streamToBuffer(await s3.getObject(bucket, name));
      if (createHash('sha256').update(bytes).digest('hex') === sha) objectsOk++;
    }
    const stored = new Set<string>();
    for await (const item of s3.listObjectsV2(bucket, '', true) as AsyncIterable<{ name?: string }>) if (item.name) stored.add(item.name);

    // Every acknowledged fact is in the database under its answered seq; no gap, none twice.
    const rows = await sql<{ seq: string; type: string; call_id: string | null }>("SELECT seq, type, body->>'callId' AS call_id FROM facts ORDER BY seq");
    const recovery = await sql<{ in_recovery: boolean }>('SELECT pg_is_in_recovery() AS in_recovery');
    const dbSeqs = rows.map((r) => Number(r.seq));
    const bySeq = new Map(rows.map((r) => [Number(r.seq), r]));
    const byCall = new Map<string, number[]>();
    for (const r of rows) if (r.type === 'call.started' && r.call_id) byCall.set(r.call_id, [...(byCall.get(r.call_id) ?? []), Number(r.seq)]);
    const lostFacts = facts.acked.filter((f) => bySeq.get(f.seq)?.call_id !== f.callId);
    const duplicates = [...byCall.entries()].filter(([, seqs]) => seqs.length > 1);
    const gaps = dbSeqs.filter((s, i) => i > 0 && s !== dbSeqs[i - 1]! + 1);
    const divergent = watchers.flatMap((w) =>
      [...w.seen.entries()].filter(([seq, callId]) => bySeq.get(seq)?.call_id !== callId || bySeq.get(seq)?.type !== 'call.started').map(([seq]) => `replica ${w.replica} seq ${seq}`),
    );

    // The recordings, read back from the store: every track judged segment by segment.
    const names = bucketNames({ prefix: recorderPrefix });
    const store = await RecordingStore.open({
      client: s3,
      buckets: names,
      keyring: Keyring.fromConfig(keyring),
      spoolDir: mkdtempSync(path.join(dir, 'read-')),
      spoolMaxBytes: 1 << 24,
      logger: createLogger('silent'),
      sweep: false,
    });
    const tracks: Record<string, TrackVerdict> = {};
    const unreadable: string[] = [];
    const versions = await objectVersions(s3, names.media, 'rec/');
    try {
      for (const c of [a1, b1]) {
        for (const pid of [c.agent, c.customer]) {
          try {
            tracks[pid] = judgeTrack(pid, await readTrack(store, c.recordingId!, pid));
          } catch (err) {
            unreadable.push(`${pid}: ${(err as Error).message}`);
          }
        }
      }
    } finally {
      await store.close();
    }
    // e1's erasure takes the whole recording: every track (the agent's side can hold the
    // customer's words too, src/recorder/Recorder.ts), its data keys and its manifest.
    const erasedLeft = [...versions.keys()].filter((k) => k.startsWith(mediaPrefix(e1.recordingId!)));
    for (const prefix of [dataKeyPrefix(e1.recordingId!), manifestObjectKey(e1.recordingId!)]) {
      for await (const o of s3.listObjects(names.keys, prefix, true) as AsyncIterable<{ name?: string }>) if (o.name) erasedLeft.push(o.name);
    }
    const segmentsStoredTwice = [...versions.entries()].filter(([, n]) => n > 1).map(([k]) => k);
    const bTrackEnds = [b1.agent, b1.customer].map((pid) => tracks[pid]!.lastEndMs ?? 0);

    // The catalogue against the store, as an operator checks it after an incident: a dry run,
    // the rebuild, and a second dry run.
    const optinCatalogue = async (...args: string[]): Promise<{ scanned: number; catalogueRows: number; differences: { recordingId: string; kind: string; fields?: string[] }[] }> => {
      const { stdout } = await promisify(execFile)(process.execPath, ['bin/optin.mjs', 'catalogue', 'rebuild', '--json', ...args], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          OPTIN_DATABASE_URL: db.url('optin'),
          OPTIN_DATA_DIR: path.join(dir, 'cli'),
          OPTIN_S3_ENDPOINT: ceph.endpoint,
          OPTIN_S3_ACCESS_KEY: ceph.accessKey,
          OPTIN_S3_SECRET_KEY: ceph.secretKey,
          OPTIN_S3_BUCKET_PREFIX: recorderPrefix,
          OPTIN_KEYRING: JSON.stringify(keyring),
          ...auditEnv(),
        },
        timeout: 60_000,
      });
      return JSON.parse(stdout) as never;
    };
    const catalogueBefore = await optinCatalogue('--dry-run');
    const catalogueRebuilt = await optinCatalogue();
    const catalogueAfter = await optinCatalogue('--dry-run');
    const catalogue = { before: catalogueBefore, rebuilt: catalogueRebuilt.differences.length, after: catalogueAfter };

    // The recorders' store user cannot touch the audit trail: another RGW user (the audit
    // principal) owns its bucket, so a compromised recorder cannot forge or remove entries (R11).
    const attempt = (p: Promise<unknown>): Promise<string> => p.then(() => 'allowed', (e: { code?: string }) => e.code ?? String(e));
    const auditByRecorderUser = {
      put: await attempt(s3.putObject(names.audit, 'audit/forged.json', Buffer.from('{}'))),
      remove: await attempt(s3.removeObject(names.audit, 'audit/000000000001.json')),
      lifecycle: await attempt(s3.setBucketLifecycle(names.audit, { Rule: [{ ID: 'wipe', Status: 'Enabled', Filter: { Prefix: '' }, Expiration: { Days: 1 } }] } as never)),
    };

    const report = {
      seconds: Math.round(at() / 100) / 10,
      timeline,
      objects: { acknowledged: objects.acked.size, readBackIntact: objectsOk, listed: stored.size, failedAttempts: objects.failures.length, longestStallMs: objects.longestStallMs, failures: objects.failures.slice(0, 20) },
      facts: {
        acknowledged: facts.acked.length,
        inDatabase: rows.length,
        lost: lostFacts.length,
        duplicates: duplicates.length,
        gaps: gaps.length,
        retried: facts.acked.filter((f) => f.attempts > 1).length,
        failedAttempts: facts.failures.length,
        longestStallMs: facts.longestStallMs,
        failures: facts.failures.slice(0, 20),
      },
      streams: watchers.map((w) => ({ replica: w.replica, deltasSeen: w.seen.size, reconnects: w.reconnects, stale: w.stale, conflicts: w.conflicts, divergentFromDatabase: divergent.filter((d) => d.startsWith(`replica ${w.replica} `)).length })),
      recordings: {
        segmentSeconds: SEGMENT_SECONDS,
        calls: calls.map((c) => ({ callId: c.callId, recorder: recorders[c.recorder].workerId, recordingId: c.recordingId, consentAt: c.consentAt })),
        tracks: Object.values(tracks).map((t) => ({
          ...t,
          // Expected: consent (or the start of the recording) to the end of the call, in segments.
          expectedSegmentsAbout: Math.ceil(((t.participantId.startsWith('call-b1') ? bKilledAt : endedAt) - (calls.find((c) => t.participantId.startsWith(c.callId))!.consentAt ?? 0)) / (SEGMENT_SECONDS * 1000)),
        })),
        unreadable,
        mediaObjects: versions.size,
        segmentsStoredTwice: segmentsStoredTwice.length,
        erasure: { erasureId, state: erasure.state, objectsLeft: erasedLeft.length, receipt: erasure.receipt },
        recorderB: { killedAt: bKilledAt - started, spoolItemsAtKill: spoolAtKill, trackEndsBeforeKillMs: bTrackEnds.map((e) => bKilledAt - e) },
        stops,
      },
      catalogueRebuild: catalogue,
      auditByRecorderUser,
      controlPlanesAlive: replicas.map((r) => r.proc.child.exitCode === null && r.proc.child.signalCode === null),
      controlBalancer: controlBalancer!.stats,
      gatewayBalancer: ceph.balancer.stats,
      databaseProxy: db.proxy.stats,
      promotedStandbyIsPrimary: recovery[0]?.in_recovery === false,
    };
    mkdirSync('artifacts/cluster', { recursive: true });
    writeFileSync('artifacts/cluster/report.json', `${JSON.stringify(report, null, 2)}\n`);
    console.log(JSON.stringify({ ...report, timeline: undefined }, null, 2));

    expect(objectsOk).toBe(objects.acked.size);
    expect([...objects.acked.keys()].every((n) => stored.has(n))).toBe(true);
    expect(lostFacts).toEqual([]);
    expect(duplicates).toEqual([]);
    expect(gaps).toEqual([]);
    expect(dbSeqs[0]).toBe(1);
    expect(divergent).toEqual([]);
    for (const w of watchers) expect(w.conflicts).toEqual([]);
    expect(report.promotedStandbyIsPrimary).toBe(true);
    expect(report.controlPlanesAlive).toEqual([true, true]);
    // The workload really ran through each failure.
    expect(objects.acked.size).toBeGreaterThan(20);
    expect(facts.acked.length - factsAtPromotion).toBeGreaterThanOrEqual(10);
    // Recordings: every consent started one; on every track no segment missing, none twice, no
    // audio lost while the gate was open; B's tracks reach its kill but for the open segment.
    for (const c of calls) expect(c.recordingId, c.callId).toBeDefined();
    expect(unreadable).toEqual([]);
    for (const t of Object.values(tracks)) {
      expect(t.segments, t.participantId).toBeGreaterThan(2);
      expect(t.missingSegments, t.participantId).toEqual([]);
      expect(t.overlaps, t.participantId).toBe(0);
      expect(t.gapsInRun, t.participantId).toEqual([]);
    }
    for (const end of bTrackEnds) expect(bKilledAt - end).toBeLessThan(SEGMENT_SECONDS * 1000 + 1500);
    expect(segmentsStoredTwice).toEqual([]);
    expect(stops.a).toEqual({ code: 0, clean: true });
    // The erasure: done, nothing of the customer's part left in the store.
    expect(erasure.state).toBe('done');
    expect(erasedLeft).toEqual([]);
    // The catalogue agrees with the store at once, as an operator checks it after an incident:
    // b1's end is written by the restarted recorder's crash repair, which reports it; reports the
    // control plane could not store during the database failover were sent again.
    expect(catalogueBefore.differences).toEqual([]);
    expect(auditByRecorderUser).toEqual({ put: 'AccessDenied', remove: 'AccessDenied', lifecycle: 'AccessDenied' });
    expect(catalogueRebuilt.differences).toEqual([]);
    expect(catalogueAfter.differences).toEqual([]);
    expect(catalogueAfter.scanned).toBe(2); // a1 and b1: e1 was erased
  }, 400_000);
});
