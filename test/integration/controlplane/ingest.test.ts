import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAY_MS } from '../../../src/gate/schedule.ts';
import { callBody, dtmfEvidence, startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { buildSnapshot } from '../../../src/stream/snapshot.ts';
import { CallSnapshotSchema } from '../../../src/gate/policySnapshot.ts';

/**
 * The fact-ingest API against real PostgreSQL: every route refuses bad input with a 4xx naming
 * the field and changes nothing; an idempotent retry applies once.
 */

let db: TestDatabase;
let t: TestControlPlane;

beforeAll(async () => {
  db = await createTestDatabase();
  t = await startTestControlPlane({ databaseUrl: db.url });
});

afterAll(async () => {
  await t?.close();
  await db?.drop();
});

/** Everything a write could change. */
async function state(): Promise<Record<string, unknown>> {
  const { rows } = await t.cp.db.query<Record<string, unknown>>(
    `SELECT (SELECT seq FROM stream_head) AS seq,
            (SELECT count(*)::int FROM facts) AS facts,
            (SELECT count(*)::int FROM calls) AS calls,
            (SELECT coalesce(json_agg(c ORDER BY call_id), '[]') FROM (SELECT call_id, state, paused FROM calls) c) AS call_rows,
            (SELECT coalesce(json_agg(k ORDER BY call_id, participant_id), '[]') FROM (SELECT call_id, participant_id, status FROM consents) k) AS consents,
            (SELECT coalesce(json_agg(s ORDER BY agent_id), '[]') FROM (SELECT agent_id, windows, monthly_cap FROM schedules) s) AS schedules,
            (SELECT coalesce(json_agg(m ORDER BY agent_id), '[]') FROM (SELECT agent_id, team_lead_id FROM teams) m) AS teams,
            (SELECT count(*)::int FROM erasures) AS erasures,
            (SELECT count(*)::int FROM idempotency) AS keys`,
  );
  return rows[0]!;
}

const hour = 3600_000;
const future = (offsetMs: number, lengthMs: number) => ({ start: Date.now() + offsetMs, end: Date.now() + offsetMs + lengthMs });

describe('fact ingest API: refusals change nothing and name the field', () => {
  beforeAll(async () => {
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-live') })).status).toBe(201);
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-ended') })).status).toBe(201);
    expect((await t.api('POST', '/v1/calls/c-ended/end', { token: t.tokens.ivr })).status).toBe(200);
    const declined = await t.api('POST', '/v1/calls/c-live/consent', {
      token: t.tokens.ivr,
      body: { participantId: 'c-live-c', decision: 'declined', evidence: dtmfEvidence(Date.now() - 500) },
    });
    expect(declined.status).toBe(200);
  });

  const big = 'x'.repeat(70 * 1024);
  const cases: Array<{ name: string; method: string; path: string; token: keyof TestControlPlane['tokens'] | 'none' | 'bad'; body?: unknown; raw?: string; key?: string | null; status: number; error: string; field?: string; rule?: string }> = [
    { name: 'no token', method: 'POST', path: '/v1/calls', token: 'none', body: callBody('c-x'), status: 401, error: 'unauthenticated', field: 'Authorization' },
    { name: 'forged token', method: 'POST', path: '/v1/calls', token: 'bad', body: callBody('c-x'), status: 401, error: 'unauthenticated', field: 'Authorization' },
    { name: 'wrong scope (wfm on calls)', method: 'POST', path: '/v1/calls', token: 'wfm', body: callBody('c-x'), status: 403, error: 'forbidden', field: 'Authorization' },
    { name: 'wrong scope (ivr on schedules)', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'ivr', body: { windows: [], monthlyCap: 1 }, status: 403, error: 'forbidden' },
    { name: 'no Idempotency-Key', method: 'POST', path: '/v1/calls', token: 'ivr', body: callBody('c-x'), key: null, status: 400, error: 'invalid-input', field: 'Idempotency-Key' },
    { name: 'malformed Idempotency-Key', method: 'POST', path: '/v1/calls', token: 'ivr', body: callBody('c-x'), key: 'short', status: 400, error: 'invalid-input', field: 'Idempotency-Key' },
    { name: 'calls: participants of the wrong type', method: 'POST', path: '/v1/calls', token: 'ivr', body: { callId: 'c-x', participants: 'two people' }, status: 400, error: 'invalid-input', field: 'participants' },
    { name: 'calls: unknown top-level field', method: 'POST', path: '/v1/calls', token: 'ivr', body: { ...callBody('c-x'), recordAnyway: true }, status: 400, error: 'invalid-input', field: 'recordAnyway' },
    {
      name: 'calls: unknown participant field',
      method: 'POST',
      path: '/v1/calls',
      token: 'ivr',
      body: { callId: 'c-x', participants: [{ participantId: 'a', role: 'agent', subjectId: 's', name: 'Ann' }, { participantId: 'b', role: 'customer', subjectId: 't' }] },
      status: 400,
      error: 'invalid-input',
      field: 'participants.0.name',
    },
    { name: 'calls: bad call id', method: 'POST', path: '/v1/calls', token: 'ivr', body: callBody('c x'), status: 400, error: 'invalid-input', field: 'callId' },
    { name: 'calls: no customer', method: 'POST', path: '/v1/calls', token: 'ivr', body: { callId: 'c-x', participants: [{ participantId: 'a', role: 'agent', subjectId: 's' }, { participantId: 'b', role: 'agent', subjectId: 't' }] }, status: 400, error: 'invalid-input', field: 'participants' },
    { name: 'calls: duplicate call', method: 'POST', path: '/v1/calls', token: 'ivr', body: callBody('c-live'), status: 409, error: 'duplicate-call', field: 'callId' },
    { name: 'calls: ended call id reused', method: 'POST', path: '/v1/calls', token: 'ivr', body: callBody('c-ended'), status: 409, error: 'duplicate-call', field: 'callId' },
    { name: 'calls: oversized body', method: 'POST', path: '/v1/calls', token: 'ivr', raw: JSON.stringify({ ...callBody('c-x'), pad: big }), status: 413, error: 'too-large', field: 'body' },
    { name: 'calls: not JSON', method: 'POST', path: '/v1/calls', token: 'ivr', raw: '{"callId": "c-x", ', status: 400, error: 'invalid-input', field: 'body' },
    { name: 'end: unknown call', method: 'POST', path: '/v1/calls/c-nope/end', token: 'ivr', status: 404, error: 'unknown-call', field: 'callId' },
    { name: 'end: already ended', method: 'POST', path: '/v1/calls/c-ended/end', token: 'ivr', status: 409, error: 'call-ended', field: 'callId' },
    { name: 'end: a body with fields', method: 'POST', path: '/v1/calls/c-live/end', token: 'ivr', body: { reason: 'hangup' }, status: 400, error: 'invalid-input', field: 'reason' },
    { name: 'end: bad call id in the path', method: 'POST', path: '/v1/calls/c%20x/end', token: 'ivr', status: 400, error: 'invalid-input', field: 'callId' },
    { name: 'pause: unknown call', method: 'POST', path: '/v1/calls/c-nope/pause', token: 'ivr', status: 404, error: 'unknown-call', field: 'callId' },
    { name: 'resume: ended call', method: 'POST', path: '/v1/calls/c-ended/resume', token: 'ivr', status: 409, error: 'call-ended', field: 'callId' },
    { name: 'consent: unknown call', method: 'POST', path: '/v1/calls/c-nope/consent', token: 'ivr', body: { participantId: 'p', decision: 'granted', evidence: dtmfEvidence() }, status: 404, error: 'unknown-call', field: 'callId' },
    { name: 'consent: for an agent', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-a', decision: 'granted', evidence: dtmfEvidence() }, status: 422, error: 'not-a-customer', field: 'participantId' },
    { name: 'consent: unknown participant', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'someone', decision: 'granted', evidence: dtmfEvidence() }, status: 404, error: 'unknown-participant', field: 'participantId' },
    { name: 'consent: decision of the wrong value', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'maybe', evidence: dtmfEvidence() }, status: 400, error: 'invalid-input', field: 'decision' },
    { name: 'consent: silence is not a method', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', evidence: { ...dtmfEvidence(), method: 'silence' } }, status: 400, error: 'invalid-input', field: 'evidence.method' },
    { name: 'consent: evidence.at of the wrong type', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', evidence: { ...dtmfEvidence(), at: 'yesterday' } }, status: 400, error: 'invalid-input', field: 'evidence.at' },
    { name: 'consent: unknown evidence field', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', evidence: { ...dtmfEvidence(), phone: '555' } }, status: 400, error: 'invalid-input', field: 'evidence.phone' },
    { name: 'consent: no evidence', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted' }, status: 400, error: 'invalid-input', field: 'evidence' },
    { name: 'consent: erase with a grant', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', erase: true, evidence: dtmfEvidence() }, status: 400, error: 'invalid-input', field: 'erase' },
    { name: 'consent: evidence in the future', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', evidence: dtmfEvidence(Date.now() + hour) }, status: 400, error: 'invalid-input', field: 'evidence.at' },
    { name: 'consent: grant older than the decline', method: 'POST', path: '/v1/calls/c-live/consent', token: 'ivr', body: { participantId: 'c-live-c', decision: 'granted', evidence: dtmfEvidence(Date.now() - 60_000) }, status: 409, error: 'stale-evidence', field: 'evidence.at' },
    { name: 'consent: grant on an ended call', method: 'POST', path: '/v1/calls/c-ended/consent', token: 'ivr', body: { participantId: 'c-ended-c', decision: 'granted', evidence: dtmfEvidence() }, status: 409, error: 'call-ended', field: 'callId' },
    { name: 'participants: unknown call', method: 'POST', path: '/v1/calls/c-nope/participants', token: 'ivr', body: { joined: [], left: ['x'] }, status: 404, error: 'unknown-call', field: 'callId' },
    { name: 'participants: ended call', method: 'POST', path: '/v1/calls/c-ended/participants', token: 'ivr', body: { left: ['c-ended-a'] }, status: 409, error: 'call-ended', field: 'callId' },
    { name: 'participants: joined id already in the call', method: 'POST', path: '/v1/calls/c-live/participants', token: 'ivr', body: { joined: [{ participantId: 'c-live-a', role: 'agent', subjectId: 'agent-2' }] }, status: 409, error: 'duplicate-participant', field: 'joined' },
    { name: 'participants: left id not in the call', method: 'POST', path: '/v1/calls/c-live/participants', token: 'ivr', body: { left: ['someone'] }, status: 404, error: 'unknown-participant', field: 'left' },
    { name: 'participants: nothing changes', method: 'POST', path: '/v1/calls/c-live/participants', token: 'ivr', body: {}, status: 400, error: 'invalid-input' },
    { name: 'participants: wrong scope (wfm)', method: 'POST', path: '/v1/calls/c-live/participants', token: 'wfm', body: { left: ['c-live-a'] }, status: 403, error: 'forbidden' },
    { name: 'schedule: a 7-day window', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [future(hour, 7 * DAY_MS)], monthlyCap: 5 }, status: 422, error: 'schedule-rejected', field: 'windows.0', rule: 'window-too-long' },
    {
      name: 'schedule: touching windows covering 7 days',
      method: 'PUT',
      path: '/v1/agents/agent-1/schedule',
      token: 'wfm',
      body: { windows: [future(hour, 4 * DAY_MS), future(hour + 4 * DAY_MS + 60_000, 4 * DAY_MS)], monthlyCap: 5 },
      status: 422,
      error: 'schedule-rejected',
      field: 'windows.1',
      rule: 'continuous-recording',
    },
    { name: 'schedule: a window in the past', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [future(-3 * hour, hour)], monthlyCap: 5 }, status: 422, error: 'schedule-rejected', field: 'windows.0', rule: 'window-in-past' },
    { name: 'schedule: overlapping windows', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [future(hour, 2 * hour), future(2 * hour, 2 * hour)], monthlyCap: 5 }, status: 422, error: 'schedule-rejected', rule: 'window-overlap', field: 'windows.1' },
    { name: 'schedule: negative cap', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [], monthlyCap: -1 }, status: 400, error: 'invalid-input', field: 'monthlyCap' },
    { name: 'schedule: cap of the wrong type', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [], monthlyCap: '10' }, status: 400, error: 'invalid-input', field: 'monthlyCap' },
    { name: 'schedule: window end before start', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [{ start: Date.now() + 2 * hour, end: Date.now() + hour }], monthlyCap: 1 }, status: 400, error: 'invalid-input', field: 'windows.0' },
    { name: 'schedule: unknown field', method: 'PUT', path: '/v1/agents/agent-1/schedule', token: 'wfm', body: { windows: [], monthlyCap: 1, timezone: 'UTC' }, status: 400, error: 'invalid-input', field: 'timezone' },
    { name: 'monthly-cap: wrong type', method: 'PUT', path: '/v1/agents/agent-1/monthly-cap', token: 'wfm', body: { monthlyCap: 1.5 }, status: 400, error: 'invalid-input', field: 'monthlyCap' },
    { name: 'team-lead: wrong type', method: 'PUT', path: '/v1/agents/agent-1/team-lead', token: 'hr', body: { teamLeadId: 7 }, status: 400, error: 'invalid-input', field: 'teamLeadId' },
    { name: 'team-lead: unknown field', method: 'PUT', path: '/v1/agents/agent-1/team-lead', token: 'hr', body: { teamLeadId: 'lead-1', email: 'x@y' }, status: 400, error: 'invalid-input', field: 'email' },
    { name: 'team-lead: wrong scope', method: 'PUT', path: '/v1/agents/agent-1/team-lead', token: 'wfm', body: { teamLeadId: 'lead-1' }, status: 403, error: 'forbidden' },
    { name: 'deletion: unknown recording', method: 'POST', path: '/v1/recordings/r-nope/deletion', token: 'ops', body: { actor: 'lead-1', reason: 'team-lead' }, status: 404, error: 'unknown-recording', field: 'recordingId' },
    { name: 'deletion: reason not allowed', method: 'POST', path: '/v1/recordings/r-nope/deletion', token: 'ops', body: { actor: 'lead-1', reason: 'expiry' }, status: 400, error: 'invalid-input', field: 'reason' },
  ];

  for (const c of cases) {
    it(`${c.name}: ${c.status} ${c.error}${c.field ? ` (${c.field})` : ''}, nothing applied`, async () => {
      const before = await state();
      const token = c.token === 'none' ? undefined : c.token === 'bad' ? `ivr.${'A'.repeat(43)}` : t.tokens[c.token];
      const res = await t.api(c.method, c.path, { ...(token ? { token } : {}), ...(c.body !== undefined ? { body: c.body } : {}), ...(c.raw !== undefined ? { raw: c.raw } : {}), ...(c.key !== undefined ? { key: c.key } : {}) });
      expect(res.status, JSON.stringify(res.body)).toBe(c.status);
      expect(res.body.error).toBe(c.error);
      expect(typeof res.body.message).toBe('string');
      if (c.field !== undefined) expect(res.body.field).toBe(c.field);
      if (c.rule !== undefined) expect(res.body.rule).toBe(c.rule);
      expect(await state()).toEqual(before);
    });
  }

  it('the same Idempotency-Key with another body: 422 idempotency-key-reused, nothing applied', async () => {
    const key = 'reuse-key-0001';
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-reuse-1'), key })).status).toBe(201);
    const before = await state();
    const res = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-reuse-2'), key });
    expect(res.status).toBe(422);
    expect(res.body).toMatchObject({ error: 'idempotency-key-reused', field: 'Idempotency-Key' });
    expect(await state()).toEqual(before);
  });
});

describe('fact ingest API: idempotent retries', () => {
  it('a retried webhook applies once and gets the first answer', async () => {
    const before = await state();
    const key = 'retry-key-0001';
    const first = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-retry'), key });
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBe('false');
    // Same body with its keys in another order: the same request.
    const body = callBody('c-retry');
    const reordered = { participants: body.participants, callId: body.callId };
    const second = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: reordered, key });
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(second.body).toEqual(first.body);
    const after = await state();
    expect(after.seq).toBe((before.seq as number) + 1);
    expect(after.calls).toBe((before.calls as number) + 1);
  });

  it('five concurrent deliveries of one webhook apply once', async () => {
    const before = await state();
    const key = 'concurrent-key-01';
    const answers = await Promise.all(Array.from({ length: 5 }, () => t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-concurrent'), key })));
    expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201, 201]);
    for (const a of answers) expect(a.body).toEqual(answers[0]!.body);
    expect(answers.filter((a) => a.headers.get('idempotent-replayed') === 'false')).toHaveLength(1);
    const after = await state();
    expect(after.seq).toBe((before.seq as number) + 1);
  });

  it('a refused write stores no key: its retry is judged afresh (consent before call.started, then after)', async () => {
    const key = 'early-consent-01';
    const body = { participantId: 'c-late-c', decision: 'granted', evidence: dtmfEvidence() };
    const early = await t.api('POST', '/v1/calls/c-late/consent', { token: t.tokens.ivr, body, key });
    expect(early.status).toBe(404);
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-late') })).status).toBe(201);
    const retry = await t.api('POST', '/v1/calls/c-late/consent', { token: t.tokens.ivr, body, key });
    expect(retry.status).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBe('false');
  });

  it('keys are per integration: the same key from another integration is another request', async () => {
    const key = 'shared-key-00001';
    const a = await t.api('PUT', '/v1/agents/agent-k/team-lead', { token: t.tokens.hr, body: { teamLeadId: 'lead-k' }, key });
    const b = await t.api('PUT', '/v1/agents/agent-k/monthly-cap', { token: t.tokens.wfm, body: { monthlyCap: 3 }, key });
    expect([a.status, b.status]).toEqual([200, 200]);
  });
});

describe('fact ingest API: accepted facts', () => {
  it('a call, consent, pause/resume, schedule, team lead, and an erase answered 202 with a receipt id', async () => {
    expect((await t.api('PUT', '/v1/agents/agent-9/team-lead', { token: t.tokens.hr, body: { teamLeadId: 'lead-9' } })).status).toBe(200);
    const start = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-ok', 'agent-9') });
    expect(start.status).toBe(201);
    // The HR team lead was filled in for the agent.
    const { rows } = await t.cp.db.query<{ participants: Array<{ teamLeadId?: string }> }>('SELECT participants FROM calls WHERE call_id = $1', ['c-ok']);
    expect(rows[0]!.participants[0]!.teamLeadId).toBe('lead-9');
    expect((await t.api('POST', '/v1/calls/c-ok/consent', { token: t.tokens.ivr, body: { participantId: 'c-ok-c', decision: 'granted', evidence: dtmfEvidence() } })).status).toBe(200);
    expect((await t.api('POST', '/v1/calls/c-ok/pause', { token: t.tokens.ivr })).status).toBe(200);
    expect((await t.api('POST', '/v1/calls/c-ok/resume', { token: t.tokens.ivr, body: {} })).status).toBe(200);
    const sched = await t.api('PUT', '/v1/agents/agent-9/schedule', { token: t.tokens.wfm, body: { windows: [future(-hour, 3 * hour), future(DAY_MS, 2 * hour)], monthlyCap: 10 } });
    expect(sched.status).toBe(200);
    const erase = await t.api('POST', '/v1/calls/c-ok/consent', { token: t.tokens.ivr, body: { participantId: 'c-ok-c', decision: 'withdrawn', erase: true, evidence: dtmfEvidence() } });
    expect(erase.status).toBe(202);
    expect(erase.body.erasureId).toMatch(/^e_[0-9a-f]{16}$/);
    const status = await t.api('GET', `/v1/erasures/${String(erase.body.erasureId)}`, { token: t.tokens.ivr });
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ id: erase.body.erasureId, callId: 'c-ok', participantId: 'c-ok-c' });
    // An erase after the call ended is still accepted (R9).
    expect((await t.api('POST', '/v1/calls/c-ok/end', { token: t.tokens.ivr })).status).toBe(200);
    const late = await t.api('POST', '/v1/calls/c-ok/consent', { token: t.tokens.ivr, body: { participantId: 'c-ok-c', decision: 'withdrawn', erase: true, evidence: dtmfEvidence() } });
    expect(late.status).toBe(202);
    const types = (await t.cp.db.query<{ type: string }>('SELECT type FROM facts WHERE seq > $1 ORDER BY seq', [(start.body.seq as number) - 1])).rows.map((r) => r.type);
    expect(types).toEqual(['call.started', 'consent.granted', 'call.paused', 'call.resumed', 'schedule.set', 'consent.withdrawn', 'erasure.requested', 'call.ended', 'erasure.requested']);
  });

  it('a transfer (participants.changed): the new agent gets the HR team lead, who left is marked, and the snapshot carries both', async () => {
    expect((await t.api('PUT', '/v1/agents/agent-8/team-lead', { token: t.tokens.hr, body: { teamLeadId: 'lead-8' } })).status).toBe(200);
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('c-tr') })).status).toBe(201);
    const change = await t.api('POST', '/v1/calls/c-tr/participants', { token: t.tokens.ivr, body: { joined: [{ participantId: 'c-tr-b', role: 'agent', subjectId: 'agent-8' }], left: ['c-tr-a'] } });
    expect(change.status).toBe(200);
    const fact = (await t.cp.db.query<{ body: Record<string, unknown> }>('SELECT body FROM facts WHERE seq = $1', [change.body.seq as number])).rows[0]!.body;
    expect(fact).toEqual({ type: 'participants.changed', callId: 'c-tr', joined: [{ participantId: 'c-tr-b', role: 'agent', subjectId: 'agent-8', teamLeadId: 'lead-8' }], left: ['c-tr-a'] });
    const snap = await buildSnapshot(t.cp.db, { nowMs: Date.now(), tombstoneHorizonMs: DAY_MS });
    const call = snap.calls.find((c) => c.callId === 'c-tr')!;
    expect(CallSnapshotSchema.parse(call)).toEqual(call);
    expect(call.participants.map((p) => p.participantId)).toEqual(['c-tr-a', 'c-tr-c', 'c-tr-b']);
    expect(call.left).toEqual(['c-tr-a']);
    // Leaving twice is refused; the customer who stays can still consent.
    expect((await t.api('POST', '/v1/calls/c-tr/participants', { token: t.tokens.ivr, body: { left: ['c-tr-a'] } })).status).toBe(404);
    expect((await t.api('POST', '/v1/calls/c-tr/consent', { token: t.tokens.ivr, body: { participantId: 'c-tr-c', decision: 'granted', evidence: dtmfEvidence() } })).status).toBe(200);
  });

  it('/healthz, /readyz and /metrics answer without a token', async () => {
    expect((await t.api('GET', '/healthz')).status).toBe(200);
    expect((await t.api('GET', '/readyz')).body).toEqual({ status: 'ready', database: 'ok' });
    const metrics = await fetch(`${t.cp.url}/metrics`).then((r) => r.text());
    expect(metrics).toContain('optin_control_facts_ingested_total');
  });
});

describe('fact ingest API: rate limit', () => {
  it('answers 429 rate-limited past the per-integration limit, and changes nothing', async () => {
    const limited = await startTestControlPlane({ databaseUrl: db.url, overrides: { 'http.rateLimitPerMinute': 3 } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await limited.api('PUT', '/v1/agents/agent-rl/team-lead', { token: limited.tokens.hr, body: { teamLeadId: `lead-${i}` } })).status);
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      const { rows } = await limited.cp.db.query<{ team_lead_id: string }>('SELECT team_lead_id FROM teams WHERE agent_id = $1', ['agent-rl']);
      expect(rows[0]!.team_lead_id).toBe('lead-2');
    } finally {
      await limited.close();
    }
  });
});
