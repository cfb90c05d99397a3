import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { useBuckets } from '../../support/buckets.ts';
import { TEST_SECRET } from '../../support/controlPlane.ts';
import { freePort, spawnControlPlane, writeIntegrationsFile, type ControlProcess } from '../../support/controlProcess.ts';
import { readTaggedTrack } from '../../support/gateHarness.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { PolicyFacts } from '../../support/policyFacts.ts';
import { startLiveCall, startRecorderNode, until, waitState, type RecorderNode } from '../../support/recorderNode.ts';
import { TcpFailover } from '../../support/tcpFailover.ts';

/**
 * Two control-plane replicas (each its own workers/control.ts process) on one PostgreSQL database,
 * behind a TCP load balancer (issue 13, "must show"): a recorder with a live, recorded call uses
 * the first; facts are posted without pause to the second (so they reach the worker through the
 * database's LISTEN/NOTIFY and the first replica's follower). kill -9 of the replica the worker
 * uses, mid-stream: the worker goes stale (its gate closes), reconnects through the balancer to the
 * survivor, gets a snapshot, and the gate reopens as a new run. The sequence is checked end to end
 * at the worker: across both sessions, every number from the first snapshot to the last fact
 * posted is covered exactly once (by a snapshot or by one delta), never repeated, never reordered;
 * every fact the API acknowledged is in the worker's state at the end.
 */

const buckets = useBuckets();
const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
let db: TestDatabase;
let dir: string;
const replicas: { proc: ControlProcess; port: number; id: string }[] = [];
let balancer: TcpFailover;
let node: RecorderNode | undefined;
let survivor: PolicyFacts;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = mkdtempSync(path.join(os.tmpdir(), 'optin-e2e-replicas-'));
  const integrations = writeIntegrationsFile(dir);
  for (const id of ['cp-r1', 'cp-r2']) {
    const port = await freePort();
    const proc = spawnControlPlane({
      OPTIN_CONTROL_SECRET: TEST_SECRET,
      OPTIN_DATABASE_URL: db.url,
      OPTIN_CONTROL_PORT: String(port),
      OPTIN_CONTROL_REPLICA_ID: id,
      OPTIN_CONTROL_HEARTBEAT_MS: '100',
      OPTIN_CONTROL_INTEGRATIONS_FILE: integrations.file,
      OPTIN_DATA_DIR: path.join(dir, id),
      OPTIN_LOG_LEVEL: 'info',
    });
    await proc.ready;
    replicas.push({ proc, port, id });
  }
  const t = integrations.token;
  survivor = new PolicyFacts({ url: `http://127.0.0.1:${replicas[1]!.port}`, tokens: { ivr: t, wfm: t, hr: t, ops: t } });
  balancer = await TcpFailover.start(replicas.map((r) => r.port));
  node = await startRecorderNode({ controlUrl: `ws://127.0.0.1:${balancer.port}/v1/stream`, secret: TEST_SECRET, bucketPrefix: buckets.prefix(), keyring, workerId: 'w-replicas', heartbeatTimeoutMs: 300 });
  await node.app.control.waitFresh(10_000);
}, 120_000);

afterAll(async () => {
  await node?.close();
  await balancer?.close();
  for (const r of replicas) r.proc.child.kill('SIGKILL');
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('two control replicas: kill -9 of the one the worker uses, mid-stream', () => {
  it('the worker reconnects to the other; no fact lost, repeated or reordered (sequence checked end to end); the recording goes on as a new run', async () => {
    const app = node!.app;
    expect(app.control.serverId).toBe('cp-r1');
    // What the worker saw, per stream session: the snapshot's seq, then each delta's seq.
    const sessions: { server: string; snapshotSeq: number; deltas: number[] }[] = [{ server: app.control.serverId, snapshotSeq: app.control.lastSeq, deltas: [] }];
    app.control.on('fresh', () => sessions.push({ server: app.control.serverId, snapshotSeq: app.control.lastSeq, deltas: [] }));
    app.control.on('fact', (_fact, seq) => sessions.at(-1)!.deltas.push(seq));

    const agent = 'ag-rep';
    await survivor.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startLiveCall(app, survivor, 'call-rep', agent);
    let from = call.states.length;
    await survivor.grantConsent(call.callId, `${call.callId}-c`, { method: 'dtmf', at: Date.now(), infoVersion: 'notice-v1' });
    await waitState(call, (s) => s.recording, 5000, 'recording', from);
    const recordingId = call.rec.recordingId!;
    const runBefore = call.rec.gate.runIndex;

    // Facts without pause through the survivor (other agents' caps): each acknowledged with its seq.
    const posted: { seq: number; agentId: string; monthlyCap: number }[] = [];
    let posting = true;
    const window = [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }];
    const poster = (async () => {
      for (let i = 0; posting; i++) {
        const agentId = `ag-rep-${i % 5}`;
        const answer = await survivor.setSchedule(agentId, window, i);
        posted.push({ seq: Number(answer.seq), agentId, monthlyCap: i });
      }
    })();
    await until(() => sessions[0]!.deltas.length >= 20, 10_000, 'deltas through the first replica');

    from = call.states.length;
    const killedPerf = performance.now();
    replicas[0]!.proc.child.kill('SIGKILL');
    await replicas[0]!.proc.exited;
    const stale = await waitState(call, (s) => !s.recording, 2000, 'gate closed after the kill', from);
    expect(stale.reasons).toContain('control-stale');
    const reopened = await waitState(call, (s) => s.recording, 15_000, 'gate reopened on the survivor', from);
    expect(app.control.serverId).toBe('cp-r2');
    expect(reopened.recordingId).toBe(recordingId);
    expect(call.rec.gate.runIndex).toBeGreaterThan(runBefore);
    await until(() => sessions.at(-1)!.deltas.length >= 20, 10_000, 'deltas through the survivor');
    posting = false;
    await poster;
    const lastPosted = Math.max(...posted.map((p) => p.seq));
    await until(() => app.control.lastSeq >= lastPosted, 5000, `the worker reached seq ${lastPosted}`);
    await sleep(1000);

    // End to end: each number covered once, in order, from the first snapshot to the last post.
    expect(sessions.map((s) => s.server)).toEqual(['cp-r1', 'cp-r2']);
    let known = sessions[0]!.snapshotSeq;
    for (const [k, s] of sessions.entries()) {
      expect(s.snapshotSeq, `session ${k} snapshot goes back`).toBeGreaterThanOrEqual(known);
      known = s.snapshotSeq;
      for (const seq of s.deltas) {
        expect(seq, `session ${k}: delta after ${known}`).toBe(known + 1);
        known = seq;
      }
    }
    expect(known).toBeGreaterThanOrEqual(lastPosted);
    const allDeltas = sessions.flatMap((s) => s.deltas);
    expect(new Set(allDeltas).size).toBe(allDeltas.length);
    expect(new Set(posted.map((p) => p.seq)).size).toBe(posted.length);
    // Every acknowledged fact is in the worker's state: the last cap posted for each agent.
    const lastCap = new Map<string, number>();
    for (const p of posted) lastCap.set(p.agentId, p.monthlyCap);
    for (const [agentId, cap] of lastCap) expect(app.state.schedule(agentId)?.monthlyCap, agentId).toBe(cap);

    await call.stop();
    await survivor.endCall(call.callId);
    await app.store.drained(30_000);
    // Nothing sent while the gate was closed is recorded (the worker's own closing and reopening instants).
    const runs = new Set<number>();
    for (const leg of call.legs) {
      for (const seg of await readTaggedTrack(app.store, recordingId, leg.participantId)) {
        runs.add(seg.run);
        for (const id of seg.ids) {
          const sentAt = call.sender.sentAt.get(id)!.ms;
          if (sentAt > stale.at && sentAt < reopened.at - 30) throw new Error(`packet ${id} sent ${sentAt - stale.at} ms after the gate closed is recorded (run ${seg.run})`);
        }
      }
    }
    expect(runs.has(runBefore)).toBe(true);
    expect([...runs].some((r) => r > runBefore)).toBe(true);
    console.log(
      `replica failover: ${posted.length} facts posted (seq ${posted[0]!.seq}..${lastPosted}); gate closed ${(stale.perf - killedPerf).toFixed(0)} ms after the kill, ` +
        `reopened on the survivor ${(reopened.perf - killedPerf).toFixed(0)} ms after it; deltas ${sessions.map((s) => s.deltas.length).join(' + ')}, snapshots at ${sessions.map((s) => s.snapshotSeq).join(', ')}`,
    );
  }, 120_000);
});
