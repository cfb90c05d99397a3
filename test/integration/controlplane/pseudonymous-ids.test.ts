/**
 * Ids enter the control plane pseudonymous or not at all (docs/rules.md, "Ids"): a phone number
 * or an e-mail address as a subject, participant, call, agent or team-lead id is refused at
 * ingest with a 400 that names the field and the rule, and changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callBody, startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';

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

describe('control-plane ingest refuses personal data as ids', () => {
  it('a phone number as subject id', async () => {
    const body = callBody('c-phone') as { participants: Array<Record<string, unknown>> };
    body.participants[1]!.subjectId = '46701234567';
    const res = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid-input', field: 'participants.1.subjectId' });
    expect(String(res.body.message)).toMatch(/must be a pseudonymous id, not a phone number or an e-mail address/);
    expect(String(res.body.message)).not.toContain('46701234567');
    const { rows } = await t.cp.db.query<{ n: number }>('SELECT count(*)::int AS n FROM calls');
    expect(rows[0]!.n).toBe(0);
  });

  it('a phone number as call id (path) and an e-mail-like team lead', async () => {
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('0701234567') })).status).toBe(400);
    expect((await t.api('PUT', '/v1/agents/agent-1/team-lead', { token: t.tokens.hr, body: { teamLeadId: '+46 70 123 45 67' } })).status).toBe(400);
    expect((await t.api('PUT', '/v1/agents/0701234567/team-lead', { token: t.tokens.hr, body: { teamLeadId: 'lead-1' } })).status).toBe(400);
    // A prefixed reference is an id.
    expect((await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: callBody('call-20240605123456') })).status).toBe(201);
  });
});
