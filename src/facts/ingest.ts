import { z } from 'zod';
import { CallStartedSchema, ConsentEvidenceSchema, MAX_MONTHLY_CAP, MAX_PARTICIPANTS, MAX_WINDOWS, ParticipantSchema, ParticipantsChangedSchema, WindowSchema, type ConsentEvidence, type Participant, type Window } from '../gate/facts.ts';
import type { FactV2 } from '../control/protocolV2.ts';
import type { Tx } from '../db/Database.ts';
import { requestErasure } from '../erasure/ledger.ts';
import { checkSchedule } from '../gate/schedule.ts';
import { IdSchema } from '../ids/ids.ts';
import { appendFacts } from '../db/factLog.ts';
import { FactRefused } from './FactRefused.ts';

/**
 * The facts the integrations post, as state changes of the database. Each function runs inside
 * the caller's single transaction (FactIngest.write), validates against the current state,
 * changes the state tables and appends the facts the workers see. Throwing FactRefused rolls
 * everything back: a refused fact changes nothing.
 *
 * Request bodies are the v1 fact fields minus what the URL says (`callId`, `agentId`).
 */

// -- request bodies -------------------------------------------------------------------------------

export const StartCallBody = CallStartedSchema.omit({ type: true });
/** `participants.changed` without what the URL says; the fact's own rules are checked in changeParticipants. */
export const ParticipantsBody = z.strictObject({
  joined: z.array(ParticipantSchema).max(MAX_PARTICIPANTS).optional(),
  left: z.array(IdSchema).max(MAX_PARTICIPANTS).optional(),
});
export const CONSENT_DECISIONS = ['granted', 'declined', 'withdrawn'] as const;
export const ConsentBody = z
  .strictObject({
    participantId: IdSchema,
    decision: z.enum(CONSENT_DECISIONS),
    /** R9: with `withdrawn` only: also delete what was recorded of this participant. */
    erase: z.boolean().optional(),
    evidence: ConsentEvidenceSchema,
  })
  .refine((b) => b.erase === undefined || b.decision === 'withdrawn', { message: 'erase is only valid with decision "withdrawn"', path: ['erase'] });
export const ScheduleBody = z.strictObject({
  windows: z.array(WindowSchema).max(MAX_WINDOWS),
  monthlyCap: z.int().min(0).max(MAX_MONTHLY_CAP),
});
export const MonthlyCapBody = z.strictObject({ monthlyCap: z.int().min(0).max(MAX_MONTHLY_CAP) });
export const TeamLeadBody = z.strictObject({ teamLeadId: IdSchema });

export type StartCallInput = z.infer<typeof StartCallBody>;
export type ConsentInput = z.infer<typeof ConsentBody>;
export type ParticipantsInput = z.infer<typeof ParticipantsBody>;
export type ScheduleInput = z.infer<typeof ScheduleBody>;

/** What an accepted write answers (stored for idempotent replay). */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
}

export interface IngestContext {
  nowMs: number;
  integrationId: string;
  /** R6: windows closer than this count as one run (default 1 h, as the worker). */
  contiguityToleranceMs: number;
  /** Evidence further in the future than this is refused (clock skew allowance). */
  maxEvidenceSkewMs: number;
}

// -- calls ----------------------------------------------------------------------------------------

/** A participant as the calls table keeps it: `leftAtMs` once they left the call (`participants.changed`). */
export type StoredParticipant = Participant & { leftAtMs?: number };

interface CallRow {
  participants: StoredParticipant[];
  state: 'active' | 'ended';
  paused: boolean;
}

async function lockCall(tx: Tx, callId: string): Promise<CallRow | undefined> {
  const { rows } = await tx.query<CallRow>('SELECT participants, state, paused FROM calls WHERE call_id = $1 FOR UPDATE', [callId]);
  return rows[0];
}

function unknownCall(callId: string): FactRefused {
  return new FactRefused('FACT_UNKNOWN_CALL', 'unknown-call', `call ${callId} was never started here; post POST /v1/calls first (a webhook that arrived early can be retried)`, { field: 'callId' });
}

function callEnded(callId: string): FactRefused {
  return new FactRefused('FACT_CALL_ENDED', 'call-ended', `call ${callId} has ended; facts about it are refused (an erase is still accepted)`, { field: 'callId' });
}

export async function startCall(tx: Tx, input: StartCallInput, ctx: IngestContext): Promise<Answer> {
  // Team leads come from HR (PUT /v1/agents/{id}/team-lead) when the IVR does not know them.
  const participants = await withTeamLeads(tx, input.participants);
  const inserted = await tx.query(
    "INSERT INTO calls (call_id, participants, paused, state, started_at_ms) VALUES ($1, $2::jsonb, false, 'active', $3) ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
    [input.callId, JSON.stringify(participants), ctx.nowMs],
  );
  if (inserted.rowCount === 0) {
    throw new FactRefused('FACT_DUPLICATE_CALL', 'duplicate-call', `call ${input.callId} already exists or existed; use a fresh call id`, { field: 'callId' });
  }
  const [seq] = await appendFacts(tx, [{ type: 'call.started', callId: input.callId, participants }], ctx.nowMs, ctx.integrationId);
  return { status: 201, body: { callId: input.callId, seq } };
}

/** Agents without a teamLeadId get the one HR set (PUT /v1/agents/{id}/team-lead), if any. */
async function withTeamLeads(tx: Tx, participants: readonly Participant[]): Promise<Participant[]> {
  const agentIds = participants.filter((p) => p.role === 'agent' && p.teamLeadId === undefined).map((p) => p.subjectId);
  if (agentIds.length === 0) return [...participants];
  const { rows: teams } = await tx.query<{ agent_id: string; team_lead_id: string }>('SELECT agent_id, team_lead_id FROM teams WHERE agent_id = ANY($1)', [agentIds]);
  const leadOf = new Map(teams.map((t) => [t.agent_id, t.team_lead_id]));
  return participants.map((p) => {
    if (p.role !== 'agent' || p.teamLeadId !== undefined) return p;
    const lead = leadOf.get(p.subjectId);
    return lead === undefined ? p : { ...p, teamLeadId: lead };
  });
}

/**
 * Who is in the call changed (a transfer: the new agent joins, the first one leaves, in one
 * fact). Joined ids must be new to the call (a participant who comes back gets a new id: their
 * earlier part of a recording stays theirs); left ids must be in it now.
 */
export async function changeParticipants(tx: Tx, callId: string, input: ParticipantsInput, ctx: IngestContext): Promise<Answer> {
  const joinedIn = input.joined ?? [];
  const left = input.left ?? [];
  const check = ParticipantsChangedSchema.safeParse({ type: 'participants.changed', callId, joined: joinedIn, left });
  if (!check.success) throw new FactRefused('FACT_INVALID', 'invalid-input', check.error.issues[0]?.message ?? 'invalid participants change', { field: 'joined' });
  const call = await lockCall(tx, callId);
  if (call === undefined) throw unknownCall(callId);
  if (call.state === 'ended') throw callEnded(callId);
  for (const p of joinedIn) {
    if (call.participants.some((q) => q.participantId === p.participantId)) {
      throw new FactRefused('FACT_DUPLICATE_PARTICIPANT', 'duplicate-participant', `participant ${p.participantId} was already in call ${callId}; a participant who comes back needs a new id`, { field: 'joined' });
    }
  }
  for (const id of left) {
    const p = call.participants.find((q) => q.participantId === id);
    if (p === undefined || p.leftAtMs !== undefined) {
      throw new FactRefused('FACT_UNKNOWN_PARTICIPANT', 'unknown-participant', `participant ${id} is not in call ${callId} (never joined, or already left)`, { field: 'left' });
    }
  }
  if (call.participants.length + joinedIn.length > MAX_PARTICIPANTS) {
    throw new FactRefused('FACT_INVALID', 'invalid-input', `call ${callId} would have more than ${MAX_PARTICIPANTS} participants over its life`, { field: 'joined' });
  }
  const joined = await withTeamLeads(tx, joinedIn);
  const leaving = new Set(left);
  const stored: StoredParticipant[] = [...call.participants.map((p) => (leaving.has(p.participantId) ? { ...p, leftAtMs: ctx.nowMs } : p)), ...joined];
  await tx.query('UPDATE calls SET participants = $2::jsonb WHERE call_id = $1', [callId, JSON.stringify(stored)]);
  const [seq] = await appendFacts(tx, [{ type: 'participants.changed', callId, joined, left }], ctx.nowMs, ctx.integrationId);
  return { status: 200, body: { callId, seq } };
}

export async function endCall(tx: Tx, callId: string, ctx: IngestContext): Promise<Answer> {
  const call = await lockCall(tx, callId);
  if (call === undefined) throw unknownCall(callId);
  if (call.state === 'ended') throw callEnded(callId);
  await tx.query("UPDATE calls SET state = 'ended', ended_at_ms = $2, paused = false WHERE call_id = $1", [callId, ctx.nowMs]);
  const [seq] = await appendFacts(tx, [{ type: 'call.ended', callId }], ctx.nowMs, ctx.integrationId);
  return { status: 200, body: { callId, seq } };
}

export async function setPaused(tx: Tx, callId: string, paused: boolean, ctx: IngestContext): Promise<Answer> {
  const call = await lockCall(tx, callId);
  if (call === undefined) throw unknownCall(callId);
  if (call.state === 'ended') throw callEnded(callId);
  await tx.query('UPDATE calls SET paused = $2 WHERE call_id = $1', [callId, paused]);
  const fact: FactV2 = paused ? { type: 'call.paused', callId } : { type: 'call.resumed', callId };
  const [seq] = await appendFacts(tx, [fact], ctx.nowMs, ctx.integrationId);
  return { status: 200, body: { callId, paused, seq } };
}

// -- consent (R3, R5, R9) ---------------------------------------------------------------------------

export async function recordConsent(tx: Tx, callId: string, input: ConsentInput, ctx: IngestContext): Promise<Answer> {
  if (input.evidence.at > ctx.nowMs + ctx.maxEvidenceSkewMs) {
    throw new FactRefused('FACT_INVALID', 'invalid-input', 'evidence.at is in the future: it is when the customer acted, in ms since the epoch (check the sender clock)', { field: 'evidence.at' });
  }
  const call = await lockCall(tx, callId);
  if (call === undefined) throw unknownCall(callId);
  const participant = call.participants.find((p) => p.participantId === input.participantId);
  if (participant === undefined) {
    throw new FactRefused('FACT_UNKNOWN_PARTICIPANT', 'unknown-participant', `participant ${input.participantId} is not in call ${callId}`, { field: 'participantId' });
  }
  if (participant.role !== 'customer') {
    throw new FactRefused('FACT_NOT_A_CUSTOMER', 'not-a-customer', `participant ${input.participantId} is an agent; consent facts are for customers (agents are recorded under R6 schedules)`, { field: 'participantId' });
  }
  const erase = input.decision === 'withdrawn' && input.erase === true;
  if (call.state === 'ended') {
    // After the call, the only act that still means something is an erase (R9).
    if (!erase) throw callEnded(callId);
    const erasure = await requestErasure(tx, { callId, participantId: input.participantId, nowMs: ctx.nowMs, integration: ctx.integrationId });
    return { status: 202, body: { callId, erasureId: erasure.erasureId, seq: erasure.seq, status: 'pending', statusUrl: `/v1/erasures/${erasure.erasureId}` } };
  }
  const { rows } = await tx.query<{ status: string; evidence: ConsentEvidence }>(
    'SELECT status, evidence FROM consents WHERE call_id = $1 AND participant_id = $2',
    [callId, input.participantId],
  );
  const previous = rows[0];
  // An old grant retransmitted after a refusal is not a new act (v1 rule `stale-evidence`).
  if (input.decision === 'granted' && previous !== undefined && previous.status !== 'granted' && input.evidence.at < previous.evidence.at) {
    throw new FactRefused(
      'FACT_STALE_EVIDENCE',
      'stale-evidence',
      `this grant (evidence.at ${input.evidence.at}) is older than the ${previous.status} it would replace (evidence.at ${previous.evidence.at})`,
      { field: 'evidence.at' },
    );
  }
  const facts: FactV2[] =
    input.decision === 'withdrawn'
      ? [{ type: 'consent.withdrawn', callId, participantId: input.participantId, erase, evidence: input.evidence }]
      : [{ type: input.decision === 'granted' ? 'consent.granted' : 'consent.declined', callId, participantId: input.participantId, evidence: input.evidence }];
  await tx.query(
    `INSERT INTO consents (call_id, participant_id, status, evidence, erase) VALUES ($1, $2, $3, $4::jsonb, $5)
     ON CONFLICT (call_id, participant_id) DO UPDATE SET status = EXCLUDED.status, evidence = EXCLUDED.evidence, erase = EXCLUDED.erase`,
    [callId, input.participantId, input.decision, JSON.stringify(input.evidence), input.decision === 'withdrawn' ? erase : null],
  );
  const [seq] = await appendFacts(tx, facts, ctx.nowMs, ctx.integrationId);
  if (!erase) return { status: 200, body: { callId, seq } };
  const erasure = await requestErasure(tx, { callId, participantId: input.participantId, nowMs: ctx.nowMs, integration: ctx.integrationId });
  return { status: 202, body: { callId, seq: erasure.seq, erasureId: erasure.erasureId, status: 'pending', statusUrl: `/v1/erasures/${erasure.erasureId}` } };
}

// -- schedules and caps (R6) ----------------------------------------------------------------------

function refuseSchedule(agentId: string, windows: readonly Window[], monthlyCap: number, ctx: IngestContext, checkWindows: boolean): void {
  const problems = checkSchedule(checkWindows ? windows : [], monthlyCap, { nowMs: ctx.nowMs, contiguityToleranceMs: ctx.contiguityToleranceMs });
  const first = problems[0];
  if (first === undefined) return;
  throw new FactRefused(
    'SCHEDULE_REJECTED',
    'schedule-rejected',
    `schedule for agent ${agentId} refused (R6): ${problems.map((p) => `${p.code}: ${p.message}`).join('; ')}`,
    { rule: first.code, field: first.code === 'bad-cap' ? 'monthlyCap' : first.index === undefined ? 'windows' : `windows.${first.index}` },
  );
}

export async function setSchedule(tx: Tx, agentId: string, input: ScheduleInput, ctx: IngestContext): Promise<Answer> {
  refuseSchedule(agentId, input.windows, input.monthlyCap, ctx, true);
  const windows = [...input.windows].sort((a, b) => a.start - b.start);
  await tx.query(
    `INSERT INTO schedules (agent_id, windows, monthly_cap, updated_at_ms) VALUES ($1, $2::jsonb, $3, $4)
     ON CONFLICT (agent_id) DO UPDATE SET windows = EXCLUDED.windows, monthly_cap = EXCLUDED.monthly_cap, updated_at_ms = EXCLUDED.updated_at_ms`,
    [agentId, JSON.stringify(windows), input.monthlyCap, ctx.nowMs],
  );
  const [seq] = await appendFacts(tx, [{ type: 'schedule.set', agentId, windows, monthlyCap: input.monthlyCap }], ctx.nowMs, ctx.integrationId);
  return { status: 200, body: { agentId, seq } };
}

/** Changes only the cap; the windows stay (already accepted, so not re-checked against "now"). */
export async function setMonthlyCap(tx: Tx, agentId: string, monthlyCap: number, ctx: IngestContext): Promise<Answer> {
  refuseSchedule(agentId, [], monthlyCap, ctx, false);
  const { rows } = await tx.query<{ windows: Window[] }>('SELECT windows FROM schedules WHERE agent_id = $1 FOR UPDATE', [agentId]);
  const windows = rows[0]?.windows ?? [];
  await tx.query(
    `INSERT INTO schedules (agent_id, windows, monthly_cap, updated_at_ms) VALUES ($1, $2::jsonb, $3, $4)
     ON CONFLICT (agent_id) DO UPDATE SET monthly_cap = EXCLUDED.monthly_cap, updated_at_ms = EXCLUDED.updated_at_ms`,
    [agentId, JSON.stringify(windows), monthlyCap, ctx.nowMs],
  );
  const [seq] = await appendFacts(tx, [{ type: 'schedule.set', agentId, windows, monthlyCap }], ctx.nowMs, ctx.integrationId);
  return { status: 200, body: { agentId, monthlyCap, seq } };
}

// -- teams (R10) ------------------------------------------------------------------------------------

/** Not a stream fact: calls started later carry the lead in their agent participants. */
export async function setTeamLead(tx: Tx, agentId: string, teamLeadId: string, ctx: IngestContext): Promise<Answer> {
  await tx.query(
    `INSERT INTO teams (agent_id, team_lead_id, updated_at_ms) VALUES ($1, $2, $3)
     ON CONFLICT (agent_id) DO UPDATE SET team_lead_id = EXCLUDED.team_lead_id, updated_at_ms = EXCLUDED.updated_at_ms`,
    [agentId, teamLeadId, ctx.nowMs],
  );
  return { status: 200, body: { agentId, teamLeadId } };
}
