import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SECRET, callBody, dtmfEvidence } from '../../support/controlPlane.ts';
import { controlProcessSetup, spawnControlPlane, type ControlProcess } from '../../support/controlProcess.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';

/**
 * kill -9 of the control plane: nothing acknowledged is lost (every answer follows a commit),
 * a worker goes stale while it is down (no heartbeats, socket gone), and the restarted process
 * continues the same stream: a fresh snapshot with every consent, window and cap, and the next
 * fact numbered after the last one.
 */

let db: TestDatabase;
let dir: string;
let port: number;
let token: string;
let env: Record<string, string>;
let proc: ControlProcess | undefined;

beforeAll(async () => {
  db = await createTestDatabase();
  ({ dir, port, token, env } = await controlProcessSetup(db.url, TEST_SECRET, 'optin-cp-restart-', { OPTIN_CONTROL_HEARTBEAT_MS: '100' }));
});

afterAll(async () => {
  proc?.child.kill('SIGKILL');
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

async function api(method: string, p: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'idempotency-key': `k-${Math.random().toString(36).slice(2)}-${Date.now()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('control plane restart (kill -9)', () => {
  it('keeps consents, windows and caps, continues the seq, and the worker is stale while it is down', async () => {
    proc = spawnControlPlane(env);
    await proc.ready;
    const url = `ws://127.0.0.1:${port}/v1/stream`;
    const worker = await StreamClientV2.connect(url, { secret: TEST_SECRET, workerId: 'w-restart' });
    await worker.waitSnapshot();

    const hour = 3600_000;
    const window = { start: Date.now() - hour, end: Date.now() + hour };
    expect((await api('PUT', '/v1/agents/agent-r/schedule', { windows: [window], monthlyCap: 1 })).status).toBe(200);
    expect((await api('POST', '/v1/calls', callBody('call-r', 'agent-r'))).status).toBe(201);
    const granted = await api('POST', '/v1/calls/call-r/consent', { participantId: 'call-r-c', decision: 'granted', evidence: dtmfEvidence() });
    expect(granted.status).toBe(200);
    const lastSeq = granted.body.seq as number;
    await worker.waitSeq(lastSeq);
    worker.send({ v: 2, type: 'cap.request', requestId: 'q-before', recordingId: 'r-before', callId: 'call-r', agentIds: ['agent-r'], at: Date.now() });
    await worker.waitFor(() => worker.capDecisions.length === 1, 5000, 'a cap decision');
    expect(worker.capDecisions[0]!.admitted).toBe(true);

    // Mid-call, the control plane dies without a chance to flush or say goodbye.
    proc.child.kill('SIGKILL');
    await proc.exited;
    await worker.waitFor(() => worker.stale !== undefined, 5000, 'the worker noticing');
    expect(worker.stale).toBe('closed');
    const beats = worker.heartbeats;

    proc = spawnControlPlane(env);
    await proc.ready;
    expect(worker.heartbeats).toBe(beats);
    const again = await StreamClientV2.connect(url, { secret: TEST_SECRET, workerId: 'w-restart' });
    await again.waitSnapshot();
    const snap = again.snapshot!;
    expect(snap.seq).toBe(lastSeq);
    expect(snap.calls).toEqual([
      expect.objectContaining({ callId: 'call-r', consents: [expect.objectContaining({ participantId: 'call-r-c', status: 'granted' })] }),
    ]);
    expect(snap.agents).toEqual([{ agentId: 'agent-r', windows: [window], monthlyCap: 1 }]);
    // The month's count survived: the cap of 1 is used up; the admitted recording stays admitted.
    again.send({ v: 2, type: 'cap.request', requestId: 'q-after', recordingId: 'r-after', callId: 'call-r', agentIds: ['agent-r'], at: Date.now() });
    again.send({ v: 2, type: 'cap.request', requestId: 'q-retry', recordingId: 'r-before', callId: 'call-r', agentIds: ['agent-r'], at: Date.now() });
    await again.waitFor(() => again.capDecisions.length === 2, 5000, 'two cap decisions');
    // Cap questions are handled side by side: their answers may come in either order.
    expect(Object.fromEntries(again.capDecisions.map((d) => [d.requestId, d.admitted]))).toEqual({ 'q-after': false, 'q-retry': true });

    const paused = await api('POST', '/v1/calls/call-r/pause');
    expect(paused.body.seq).toBe(lastSeq + 1);
    await again.waitSeq(lastSeq + 1);
    expect(again.deltas.map((d) => [d.seq, d.fact.type])).toEqual([[lastSeq + 1, 'call.paused']]);
    again.close();
    proc.child.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
    proc = undefined;
  });
});
