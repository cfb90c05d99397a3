import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createNonce, createWorkerToken, NONCE_HEADER } from '../../../src/control/auth.ts';
import { PROTOCOL_VERSION_2 } from '../../../src/control/protocolV2.ts';
import { DAY_MS } from '../../../src/gate/schedule.ts';
import { callBody, dtmfEvidence, startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { TamperProxy, wsTextFrame } from '../../support/tamperProxy.ts';

/**
 * The policy stream v2 served from PostgreSQL: snapshot + ordered deltas + heartbeats, worker
 * frames (cap, reports, confirmations), per-frame MACs against a man in the middle, heartbeats
 * stopping while the database is unreachable, and two replicas on one database.
 */

let db: TestDatabase;
let t: TestControlPlane;
const clients: StreamClientV2[] = [];
const hour = 3600_000;

async function connect(url: string, workerId = 'w1'): Promise<StreamClientV2> {
  const c = await StreamClientV2.connect(url, { secret: t.secret, workerId });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  db = await createTestDatabase();
  t = await startTestControlPlane({ databaseUrl: db.url });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await t?.close();
  await db?.drop();
});

describe('policy stream v2', () => {
  it('hello, a snapshot from the database, then every fact in order, and heartbeats', async () => {
    await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('s-1', 'agent-s') });
    await t.api('POST', '/v1/calls/s-1/consent', { token: t.tokens.ivr, body: { participantId: 's-1-c', decision: 'granted', evidence: dtmfEvidence() } });
    await t.api('PUT', '/v1/agents/agent-s/schedule', { token: t.tokens.wfm, body: { windows: [{ start: Date.now() - hour, end: Date.now() + hour }], monthlyCap: 2 } });
    const c = await connect(t.cp.streamUrl);
    await c.waitSnapshot();
    const snap = c.snapshot!;
    expect(snap.calls).toEqual([
      expect.objectContaining({ callId: 's-1', paused: false, consents: [expect.objectContaining({ participantId: 's-1-c', status: 'granted' })] }),
    ]);
    expect(snap.agents).toEqual([expect.objectContaining({ agentId: 'agent-s', monthlyCap: 2 })]);
    expect(c.serverId).toBe(t.cp.config.replicaId);
    const base = snap.seq;
    await t.api('POST', '/v1/calls/s-1/pause', { token: t.tokens.ivr });
    await t.api('POST', '/v1/calls/s-1/resume', { token: t.tokens.ivr });
    await t.api('POST', '/v1/calls/s-1/end', { token: t.tokens.ivr });
    await c.waitSeq(base + 3);
    expect(c.deltas.map((d) => [d.seq, d.fact.type])).toEqual([
      [base + 1, 'call.paused'],
      [base + 2, 'call.resumed'],
      [base + 3, 'call.ended'],
    ]);
    const beats = c.heartbeats;
    await c.waitFor(() => c.heartbeats >= beats + 3, 5000, 'heartbeats');
    expect(c.stale).toBeUndefined();
  });

  it('refuses an upgrade without the v2 subprotocol (426) or with a bad token (401)', async () => {
    await expect(StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId: 'w1', protocols: ['optin-control.v1'] })).rejects.toThrow(/426 protocol-version/);
    await expect(StreamClientV2.connect(t.cp.streamUrl, { secret: `${t.secret}-wrong`, workerId: 'w1' })).rejects.toThrow(/401 bad-signature/);
    // A replayed upgrade (same nonce and token) is refused.
    const nonce = createNonce();
    const headers = { authorization: `Bearer ${createWorkerToken(t.secret, 'w1', nonce)}`, [NONCE_HEADER]: nonce };
    const first = new WebSocket(t.cp.streamUrl, ['optin-control.v2'], { headers });
    await new Promise((r) => first.once('open', r));
    first.close();
    const replay = new WebSocket(t.cp.streamUrl, ['optin-control.v2'], { headers });
    const status = await new Promise<number>((resolve) => replay.once('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0)));
    expect(status).toBe(401);
  });

  it('cap.request is answered by cap.decision, never over the cap, idempotent per recording', async () => {
    await t.api('PUT', '/v1/agents/agent-cap/schedule', { token: t.tokens.wfm, body: { windows: [{ start: Date.now() - hour, end: Date.now() + hour }], monthlyCap: 2 } });
    const c = await connect(t.cp.streamUrl, 'w-cap');
    await c.waitSnapshot();
    const ask = (requestId: string, recordingId: string, agentIds = ['agent-cap']) =>
      c.send({ v: PROTOCOL_VERSION_2, type: 'cap.request', requestId, recordingId, callId: 'call-cap', agentIds, at: Date.now() });
    // Questions are handled side by side (up to four at once): which of two racing recordings
    // takes the last place is not fixed, so the two that fill the cap are answered first.
    ask('q1', 'r-cap-1');
    ask('q2', 'r-cap-2');
    await c.waitFor(() => c.capDecisions.length === 2, 5000, 'two decisions');
    ask('q3', 'r-cap-3');
    ask('q1b', 'r-cap-1'); // a retry of q1
    ask('q4', 'r-cap-4', ['agent-without-schedule']);
    await c.waitFor(() => c.capDecisions.length === 5, 5000, 'five decisions');
    const byId = Object.fromEntries(c.capDecisions.map((d) => [d.requestId, d]));
    expect(byId.q1!.admitted).toBe(true);
    expect(byId.q2!.admitted).toBe(true);
    expect(byId.q3).toMatchObject({ admitted: false, reason: 'cap-reached' });
    expect(byId.q1b!.admitted).toBe(true);
    expect(byId.q4).toMatchObject({ admitted: false, reason: 'no-schedule' });
  });

  it('recording.report upserts the catalogue (monotonic); recording-state is kept per call', async () => {
    const c = await connect(t.cp.streamUrl, 'w-rep');
    await c.waitSnapshot();
    const base = {
      v: PROTOCOL_VERSION_2,
      type: 'recording.report' as const,
      recordingId: 'r-rep',
      callId: 'call-rep',
      participants: [
        { participantId: 'pa', role: 'agent' as const, subjectId: 'agent-rep', teamLeadId: 'lead-rep' },
        { participantId: 'pc', role: 'customer' as const, subjectId: 'cust-rep' },
      ],
      startedAt: Date.now() - 60_000,
      expiresAt: Date.now() + 30 * DAY_MS,
    };
    c.send({ ...base, event: 'begun', tracks: 0, segments: 0, bytes: 0 });
    c.send({ ...base, event: 'segment', tracks: 2, segments: 4, bytes: 4000 });
    c.send({ ...base, event: 'ended', endedAt: Date.now(), tracks: 2, segments: 6, bytes: 6000 });
    c.send({ ...base, event: 'segment', tracks: 2, segments: 5, bytes: 5000 }); // late, out of order
    c.send({ v: PROTOCOL_VERSION_2, type: 'recording-state', callId: 'call-rep', recording: false, reasons: ['deleted'], at: Date.now() });
    await expect
      .poll(async () => (await t.api('GET', '/v1/recordings/r-rep', { token: t.tokens.ops })).body, { timeout: 5000 })
      .toMatchObject({ state: 'complete', segments: 6, bytes: 6000, tracks: 2, workerId: 'w-rep', agentIds: ['agent-rep'], teamLeadIds: ['lead-rep'] });
    const list = await t.api('GET', '/v1/recordings?teamLeadId=lead-rep', { token: t.tokens.ops });
    expect((list.body.recordings as Array<{ recordingId: string }>).map((r) => r.recordingId)).toEqual(['r-rep']);
    await expect.poll(async () => (await t.cp.db.query('SELECT reasons FROM call_recording_states WHERE call_id = $1', ['call-rep'])).rows[0]).toEqual({ reasons: ['deleted'] });
  });

  it('a burst of cap questions from one worker, handled side by side: never over the cap, each recording counted once', async () => {
    const cap = 5;
    await t.api('PUT', '/v1/agents/agent-cap-burst/schedule', { token: t.tokens.wfm, body: { windows: [{ start: Date.now() - hour, end: Date.now() + hour }], monthlyCap: cap } });
    const c = await connect(t.cp.streamUrl, 'w-cap-burst');
    await c.waitSnapshot();
    const n = 40;
    const ask = (requestId: string, recordingId: string) =>
      c.send({ v: PROTOCOL_VERSION_2, type: 'cap.request', requestId, recordingId, callId: `call-${recordingId}`, agentIds: ['agent-cap-burst'], at: Date.now() });
    // Every recording asked twice in the same burst (a worker's retry racing its first question).
    for (let i = 0; i < n; i++) {
      ask(`qb${i}`, `r-burst-${i}`);
      ask(`qb${i}-again`, `r-burst-${i}`);
    }
    await c.waitFor(() => c.capDecisions.filter((d) => d.requestId.startsWith('qb')).length === 2 * n, 20_000, 'every decision');
    const byId = new Map(c.capDecisions.map((d) => [d.requestId, d.admitted]));
    const admitted = Array.from({ length: n }, (_, i) => i).filter((i) => byId.get(`qb${i}`));
    expect(admitted).toHaveLength(cap);
    // A question and its retry get the same answer: the recording was counted once, or refused.
    for (let i = 0; i < n; i++) expect(byId.get(`qb${i}-again`), `r-burst-${i}`).toBe(byId.get(`qb${i}`));
    const { rows } = await t.cp.db.query<{ count: number }>("SELECT count FROM cap_counts WHERE agent_id = 'agent-cap-burst'");
    expect(rows[0]!.count).toBe(cap);
    c.close();
  }, 60_000);

  it('a cap question waiting on a locked counter does not hold up the questions behind it', async () => {
    for (const agent of ['agent-locked', 'agent-free']) {
      await t.api('PUT', `/v1/agents/${agent}/schedule`, { token: t.tokens.wfm, body: { windows: [{ start: Date.now() - hour, end: Date.now() + hour }], monthlyCap: 3 } });
    }
    const c = await connect(t.cp.streamUrl, 'w-cap-lanes');
    await c.waitSnapshot();
    const ask = (requestId: string, agentId: string) =>
      c.send({ v: PROTOCOL_VERSION_2, type: 'cap.request', requestId, recordingId: `r-${requestId}`, callId: `call-${requestId}`, agentIds: [agentId], at: Date.now() });
    // Create agent-locked's counter row, then hold its lock (another replica admitting for them).
    ask('ql0', 'agent-locked');
    await c.waitFor(() => c.capDecisions.some((d) => d.requestId === 'ql0'), 5000, 'first decision');
    await t.cp.db.transaction(async (tx) => {
      await tx.query("SELECT count FROM cap_counts WHERE agent_id = 'agent-locked' FOR UPDATE");
      ask('ql1', 'agent-locked');
      ask('qf1', 'agent-free');
      await c.waitFor(() => c.capDecisions.some((d) => d.requestId === 'qf1'), 5000, "the free agent's decision while the other waits");
      expect(c.capDecisions.some((d) => d.requestId === 'ql1')).toBe(false);
    });
    await c.waitFor(() => c.capDecisions.some((d) => d.requestId === 'ql1'), 5000, 'the locked agent decided once the lock is gone');
    expect(c.capDecisions.find((d) => d.requestId === 'ql1')!.admitted).toBe(true);
    c.close();
  });

  it('a burst of worker frames (every call reporting at once) is slowed by backpressure, not cut off: all handled, the session lives', async () => {
    const c = await connect(t.cp.streamUrl, 'w-burst');
    await c.waitSnapshot();
    const n = 1500; // a busy recorder's R7 reports when its stream turns fresh again
    for (let i = 0; i < n; i++) c.send({ v: PROTOCOL_VERSION_2, type: 'recording-state', callId: `burst-${i}`, recording: false, reasons: ['no-consent'], at: Date.now() });
    await expect
      .poll(async () => Number((await t.cp.db.query("SELECT count(*)::int AS n FROM call_recording_states WHERE call_id LIKE 'burst-%'")).rows[0]!.n), { timeout: 60_000, interval: 250 })
      .toBe(n);
    expect(c.closeCode).toBeUndefined();
    const seq = c.lastSeq;
    await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('after-burst', 'agent-burst') });
    await c.waitSeq(seq + 1);
    c.close();
  }, 90_000);

  it('a worker frame with a bad MAC ends the session (4001); an invalid but authentic frame gets an error reply', async () => {
    const c = await connect(t.cp.streamUrl, 'w-mac');
    await c.waitSnapshot();
    c.send({ v: PROTOCOL_VERSION_2, type: 'cap.request', requestId: 'bad id!', recordingId: 'r', callId: 'c', agentIds: ['a'], at: 1 } as never);
    await c.waitFor(() => c.errors.length > 0, 5000, 'an error reply');
    expect(c.errors[0]).toMatchObject({ code: 'invalid-message' });
    c.sendRaw(`${'A'.repeat(43)} {"v":2,"type":"recording-state","callId":"x","recording":true,"reasons":[],"at":1}`);
    await c.waitFor(() => c.closeCode !== undefined, 5000, 'the close');
    expect(c.closeCode).toBe(4001);
  });
});

describe('policy stream v2: a man in the middle', () => {
  let proxy: TamperProxy;

  beforeAll(async () => {
    proxy = await TamperProxy.start({ host: '127.0.0.1', port: t.cp.port });
  });

  afterAll(async () => {
    await proxy.close();
  });

  const viaProxy = (): string => `ws://127.0.0.1:${proxy.port}/v1/stream`;

  it('a forged consent.granted injected into a live stream is refused: the worker goes stale, nothing applied', async () => {
    await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('m-1', 'agent-m') });
    const c = await connect(viaProxy(), 'w-mitm');
    await c.waitSnapshot();
    await c.waitFor(() => c.heartbeats >= 1, 5000, 'a heartbeat');
    // The attacker read the seq from a heartbeat and sends the next delta, with a made-up MAC.
    const forged = {
      v: 2,
      type: 'delta',
      seq: c.lastSeq + 1,
      at: Date.now(),
      fact: { type: 'consent.granted', callId: 'm-1', participantId: 'm-1-c', evidence: dtmfEvidence() },
    };
    proxy.inject('down', wsTextFrame(`${'x'.repeat(43)} ${JSON.stringify(forged)}`));
    await c.waitFor(() => c.stale !== undefined, 5000, 'stale');
    expect(c.stale).toBe('bad-frame-mac');
    expect(c.deltas.some((d) => d.fact.type === 'consent.granted')).toBe(false);
    await c.waitFor(() => c.closeCode !== undefined, 5000, 'the close');
    expect(c.closeCode).toBe(4001);
  });

  it('a real frame with one byte flipped is detected', async () => {
    const c = await connect(viaProxy(), 'w-flip');
    await c.waitSnapshot();
    let flipped = false;
    proxy.transform = (direction, chunk) => {
      if (direction !== 'down' || flipped || chunk.length < 20) return chunk;
      flipped = true;
      const copy = Buffer.from(chunk);
      copy[copy.length - 3] = copy[copy.length - 3]! ^ 0x01; // inside the JSON of the last frame in this chunk
      return copy;
    };
    try {
      await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('m-2') });
      await c.waitFor(() => c.stale !== undefined, 5000, 'stale');
      expect(c.stale).toBe('bad-frame-mac');
    } finally {
      proxy.transform = undefined;
    }
  });

  it('a worker frame modified on the way is detected by the server (4001)', async () => {
    const c = await connect(viaProxy(), 'w-flip-up');
    await c.waitSnapshot();
    proxy.transform = (direction, chunk) => {
      if (direction !== 'up') return chunk;
      const copy = Buffer.from(chunk);
      copy[copy.length - 2] = copy[copy.length - 2]! ^ 0x01; // masked payload: flipping a masked bit flips the clear bit
      return copy;
    };
    try {
      c.send({ v: PROTOCOL_VERSION_2, type: 'recording-state', callId: 'm-2', recording: false, reasons: ['no-consent'], at: Date.now() });
      await c.waitFor(() => c.closeCode !== undefined, 5000, 'the close');
      expect(c.closeCode).toBe(4001);
    } finally {
      proxy.transform = undefined;
    }
  });
});

describe('policy stream v2: database unreachable', () => {
  it('no database read, no heartbeat (unreachable or hung); heartbeats resume when it answers again', async () => {
    const target = new URL(db.url);
    const dbProxy = await TamperProxy.start({ host: target.hostname, port: Number(target.port) });
    const viaUrl = new URL(db.url);
    viaUrl.port = String(dbProxy.port);
    const replica = await startTestControlPlane({ databaseUrl: viaUrl.toString(), createTokens: false });
    try {
      const c = await StreamClientV2.connect(replica.cp.streamUrl, { secret: replica.secret, workerId: 'w-db' });
      clients.push(c);
      await c.waitSnapshot();
      await c.waitFor(() => c.heartbeats >= 2, 5000, 'heartbeats');
      dbProxy.down();
      // Heartbeats in flight may still land; after that, silence.
      await new Promise((r) => setTimeout(r, 400));
      const during = c.heartbeats;
      await new Promise((r) => setTimeout(r, 1500)); // 15 heartbeat periods
      expect(c.heartbeats).toBe(during);
      expect((await replica.api('GET', '/readyz')).status).toBe(503);
      dbProxy.up();
      await c.waitFor(() => c.heartbeats > during + 2, 10_000, 'heartbeats after the database returned');
      expect(c.stale).toBeUndefined();

      // A hung database (connections open, nothing answers): the tick's read never completes,
      // so no heartbeat either.
      dbProxy.transform = (direction, chunk) => (direction === 'up' ? Buffer.alloc(0) : chunk);
      await new Promise((r) => setTimeout(r, 400));
      const hung = c.heartbeats;
      await new Promise((r) => setTimeout(r, 1500));
      expect(c.heartbeats).toBe(hung);
      dbProxy.transform = undefined;
      dbProxy.down(); // drop the stuck connections; the pool and the listener reconnect
      dbProxy.up();
      await c.waitFor(() => c.heartbeats > hung + 2, 15_000, 'heartbeats after the database answered again');
      expect(c.stale).toBeUndefined();
    } finally {
      await replica.close();
      await dbProxy.close();
    }
  });
});

describe('policy stream v2: two replicas on one database', () => {
  it('deliver the same deltas in the same order, whichever replica a fact was posted to', async () => {
    const second = await startTestControlPlane({ databaseUrl: db.url, createTokens: false });
    try {
      const a = await connect(t.cp.streamUrl, 'w-a');
      const b = await StreamClientV2.connect(second.cp.streamUrl, { secret: second.secret, workerId: 'w-b' });
      clients.push(b);
      await Promise.all([a.waitSnapshot(), b.waitSnapshot()]);
      const posts: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) {
        const via = i % 2 === 0 ? t : second;
        posts.push(via.api('PUT', `/v1/agents/agent-r${i}/monthly-cap`, { token: t.tokens.wfm, body: { monthlyCap: i } }));
      }
      await Promise.all(posts);
      const { rows } = await t.cp.db.query<{ seq: number }>('SELECT seq FROM stream_head');
      const head = rows[0]!.seq;
      await Promise.all([a.waitSeq(head), b.waitSeq(head)]);
      const seen = (c: StreamClientV2) => c.deltas.filter((d) => d.seq > Math.max(a.snapshot!.seq, b.snapshot!.seq)).map((d) => `${d.seq}:${JSON.stringify(d.fact)}`);
      expect(seen(a)).toEqual(seen(b));
      expect(seen(a)).toHaveLength(head - Math.max(a.snapshot!.seq, b.snapshot!.seq));
      expect([a.stale, b.stale]).toEqual([undefined, undefined]);
    } finally {
      await second.close();
    }
  });

  it('kill the replica a worker uses mid-stream: it reconnects to the other and the sequence continues, nothing lost or repeated', async () => {
    const doomed = await startTestControlPlane({ databaseUrl: db.url, createTokens: false });
    const before = await StreamClientV2.connect(doomed.cp.streamUrl, { secret: doomed.secret, workerId: 'w-failover' });
    clients.push(before);
    await before.waitSnapshot();
    let posting = true;
    const posted: number[] = [];
    const poster = (async () => {
      for (let i = 0; posting; i++) {
        const res = await t.api('PUT', `/v1/agents/agent-f${i % 7}/monthly-cap`, { token: t.tokens.wfm, body: { monthlyCap: i % 9 } });
        posted.push(res.body.seq as number);
      }
    })();
    await before.waitFor(() => before.deltas.length >= 10, 10_000, 'deltas before the kill');
    doomed.cp.stream.dropAll();
    await doomed.close();
    await before.waitFor(() => before.stale !== undefined, 5000, 'stale');
    const seenBefore = before.lastSeq;
    const after = await connect(t.cp.streamUrl, 'w-failover');
    await after.waitSnapshot();
    await after.waitFor(() => after.deltas.length >= 10, 10_000, 'deltas after reconnecting');
    posting = false;
    await poster;
    const last = Math.max(...posted);
    await after.waitSeq(last);
    // The new snapshot covers everything the dead replica had sent; deltas continue from it.
    expect(after.snapshot!.seq).toBeGreaterThanOrEqual(seenBefore);
    expect(after.deltas[0]!.seq).toBe(after.snapshot!.seq + 1);
    after.deltas.forEach((d, k) => expect(d.seq).toBe(after.snapshot!.seq + 1 + k));
    before.deltas.forEach((d, k) => expect(d.seq).toBe(before.snapshot!.seq + 1 + k));
    expect([after.stale]).toEqual([undefined]);
    // Every acknowledged write is in the stream exactly once.
    expect(new Set(posted).size).toBe(posted.length);
    const { rows } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM facts WHERE seq = ANY($1)', [posted]);
    expect(rows[0]!.n).toBe(posted.length);
  });
});
