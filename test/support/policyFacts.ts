import { randomBytes } from 'node:crypto';
import { requestJson } from '../../src/cli/http.ts';
import { routeOf } from '../../src/cli/facts.ts';
import type { Queryable } from '../../src/db/Database.ts';
import type { ConsentEvidence, Participant, Window } from '../../src/gate/facts.ts';

/**
 * The facts of a test, posted to the real control plane's ingest API as an integration would
 * (one credential per scope, an Idempotency-Key per request). Every method resolves once the
 * control plane committed the fact, with its answer; a refused fact rejects with FactRefusedError
 * (status and `error`), use `tryFact` to look at a refusal instead.
 */

export interface FactTokens {
  ivr: string;
  wfm: string;
  hr: string;
  ops: string;
}

export interface ApiAnswer {
  status: number;
  body: Record<string, unknown>;
}

export class FactRefusedError extends Error {
  readonly status: number;
  readonly body: Record<string, unknown>;
  constructor(what: string, answer: ApiAnswer) {
    super(`${what} refused: ${answer.status} ${String(answer.body.error ?? '')} ${String(answer.body.message ?? '')}`.trim());
    this.status = answer.status;
    this.body = answer.body;
  }
}

export class PolicyFacts {
  url: string;
  readonly #tokens: FactTokens;
  readonly #ca: Buffer | undefined;

  constructor(options: { url: string; tokens: FactTokens; ca?: Buffer }) {
    this.url = options.url;
    this.#tokens = options.tokens;
    this.#ca = options.ca;
  }

  /** Any API call, with the token of the scope the path needs. */
  async request(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
    const token =
      /^\/v1\/agents\/[^/]+\/team-lead$/.test(path) ? this.#tokens.hr
      : path.startsWith('/v1/agents/') ? this.#tokens.wfm
      : path.startsWith('/v1/calls') || path.startsWith('/v1/erasures') ? this.#tokens.ivr
      : this.#tokens.ops;
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (method !== 'GET') headers['idempotency-key'] = `t-${randomBytes(9).toString('hex')}`;
    const res = await requestJson(`${this.url}${path}`, { method, headers, ...(body === undefined ? {} : { body }), ...(this.#ca ? { ca: this.#ca } : {}) });
    return { status: res.status, body: (typeof res.body === 'object' && res.body !== null ? res.body : { text: res.body }) as Record<string, unknown> };
  }

  /** A fact in the policy stream's format (plus `team.set`, `monthly-cap.set`), as `optin facts` posts it. */
  tryFact(fact: Record<string, unknown>): Promise<ApiAnswer> {
    const route = routeOf(fact);
    return this.request(route.method, route.path, route.body);
  }

  async fact(fact: Record<string, unknown>): Promise<Record<string, unknown>> {
    const answer = await this.tryFact(fact);
    if (answer.status >= 300) throw new FactRefusedError(String(fact.type), answer);
    return answer.body;
  }

  startCall(callId: string, participants: Participant[]): Promise<Record<string, unknown>> {
    return this.fact({ type: 'call.started', callId, participants });
  }

  endCall(callId: string): Promise<Record<string, unknown>> {
    return this.fact({ type: 'call.ended', callId });
  }

  grantConsent(callId: string, participantId: string, evidence: ConsentEvidence): Promise<Record<string, unknown>> {
    return this.fact({ type: 'consent.granted', callId, participantId, evidence });
  }

  declineConsent(callId: string, participantId: string, evidence: ConsentEvidence): Promise<Record<string, unknown>> {
    return this.fact({ type: 'consent.declined', callId, participantId, evidence });
  }

  /** With `erase`, answers 202 with the erasure's id (`erasureId`). */
  withdrawConsent(callId: string, participantId: string, o: { erase: boolean; evidence: ConsentEvidence }): Promise<Record<string, unknown>> {
    return this.fact({ type: 'consent.withdrawn', callId, participantId, erase: o.erase, evidence: o.evidence });
  }

  /** A transfer: `joined` come in, `left` go, in one fact. */
  changeParticipants(callId: string, change: { joined?: Participant[]; left?: string[] }): Promise<Record<string, unknown>> {
    return this.fact({ type: 'participants.changed', callId, joined: change.joined ?? [], left: change.left ?? [] });
  }

  pause(callId: string): Promise<Record<string, unknown>> {
    return this.fact({ type: 'call.paused', callId });
  }

  resume(callId: string): Promise<Record<string, unknown>> {
    return this.fact({ type: 'call.resumed', callId });
  }

  setSchedule(agentId: string, windows: Window[], monthlyCap: number): Promise<Record<string, unknown>> {
    return this.fact({ type: 'schedule.set', agentId, windows, monthlyCap });
  }

  setTeamLead(agentId: string, teamLeadId: string): Promise<Record<string, unknown>> {
    return this.fact({ type: 'team.set', agentId, teamLeadId });
  }

  /** A deletion by the team lead (or an operator): 202 with `deletionId`. */
  async deleteRecording(recordingId: string, o: { actor?: string; reason?: 'team-lead' | 'operator'; participantId?: string } = {}): Promise<string> {
    const answer = await this.request('POST', `/v1/recordings/${recordingId}/deletion`, {
      actor: o.actor ?? 'lead-test',
      reason: o.reason ?? 'team-lead',
      ...(o.participantId === undefined ? {} : { participantId: o.participantId }),
    });
    if (answer.status >= 300) throw new FactRefusedError('deletion', answer);
    return String(answer.body.deletionId);
  }

  async erasure(erasureId: string): Promise<Record<string, unknown>> {
    return (await this.request('GET', `/v1/erasures/${erasureId}`)).body;
  }

  async deletion(deletionId: string): Promise<Record<string, unknown>> {
    return (await this.request('GET', `/v1/deletions/${deletionId}`)).body;
  }

  async recording(recordingId: string): Promise<ApiAnswer> {
    return this.request('GET', `/v1/recordings/${recordingId}`);
  }
}

/** An agent schedule window around now (R6) with a generous cap. */
export function openSchedule(policy: PolicyFacts, agentId: string, cap = 50): Promise<Record<string, unknown>> {
  const now = Date.now();
  return policy.setSchedule(agentId, [{ start: now - 60_000, end: now + 3_600_000 }], cap);
}

/** The latest R7 state the control plane holds for a call (call_recording_states), or undefined. */
export async function storedRecordingState(
  db: Queryable,
  callId: string,
): Promise<{ recording: boolean; reasons: string[]; workerId: string; recordingId: string | null; at: number } | undefined> {
  const { rows } = await db.query<{ recording: boolean; reasons: string[]; worker_id: string; recording_id: string | null; at_ms: string | number }>(
    'SELECT recording, reasons, worker_id, recording_id, at_ms FROM call_recording_states WHERE call_id = $1',
    [callId],
  );
  const r = rows[0];
  return r === undefined ? undefined : { recording: r.recording, reasons: r.reasons, workerId: r.worker_id, recordingId: r.recording_id, at: Number(r.at_ms) };
}
