import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { ApiErrorSchema } from './errors.ts';
import { BEARER, WRITE_HEADERS, write, type ApiContext } from './context.ts';
import { docSchema, zodSchema } from './zodSchema.ts';
import {
  ConsentBody,
  MonthlyCapBody,
  ParticipantsBody,
  ScheduleBody,
  StartCallBody,
  TeamLeadBody,
  changeParticipants,
  endCall,
  recordConsent,
  setMonthlyCap,
  setPaused,
  setSchedule,
  setTeamLead,
  startCall,
  type ConsentInput,
  type ParticipantsInput,
  type ScheduleInput,
  type StartCallInput,
} from '../facts/ingest.ts';

/**
 * The fact-ingest API (docs/control-plane.md, "API"): what the IVR, the workforce-management
 * system and HR tell the control plane. Every write: bearer token with the route's scope,
 * Idempotency-Key, one transaction, 4xx `{error, message, field?}` when refused.
 */

const CallParams = z.strictObject({ callId: IdSchema });
const AgentParams = z.strictObject({ agentId: IdSchema });
/** Routes whose URL says everything: a body, if sent, must be empty (`{}`). */
const NoBody = z.strictObject({}).optional();

const Accepted = docSchema(z.object({ seq: z.int().describe('sequence number of the fact on the policy stream') }).catchall(z.unknown()), 'accepted');
const ErasureAccepted = docSchema(
  z.object({
    callId: IdSchema,
    erasureId: IdSchema.describe('receipt id: GET /v1/erasures/{erasureId} for status and the deletion receipt'),
    seq: z.int(),
    status: z.literal('pending'),
    statusUrl: z.string(),
  }),
  'erase accepted: durable now, carried out asynchronously',
);
const errors = (...codes: number[]): Record<number, unknown> =>
  Object.fromEntries(codes.map((c) => [c, docSchema(ApiErrorSchema, 'refused: nothing was changed')]));

export async function factRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.post(
    '/v1/calls',
    {
      config: { scopes: ['ivr'], operation: 'call.started' },
      schema: {
        tags: ['calls'],
        summary: 'A call started (participants with roles and pseudonymous subject ids)',
        description: 'Agents without teamLeadId get the lead set by PUT /v1/agents/{agentId}/team-lead.',
        security: BEARER,
        headers: WRITE_HEADERS,
        body: zodSchema(StartCallBody),
        response: { 201: Accepted, ...errors(400, 401, 403, 409, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => startCall(tx, req.body as StartCallInput, ic)),
  );

  app.post(
    '/v1/calls/:callId/end',
    {
      config: { scopes: ['ivr'], operation: 'call.ended' },
      schema: {
        tags: ['calls'],
        summary: 'The call ended',
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(CallParams),
        body: zodSchema(NoBody),
        response: { 200: Accepted, ...errors(400, 401, 403, 404, 409, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => endCall(tx, (req.params as { callId: string }).callId, ic)),
  );

  app.post(
    '/v1/calls/:callId/participants',
    {
      config: { scopes: ['ivr'], operation: 'participants.changed' },
      schema: {
        tags: ['calls'],
        summary: 'Who is in the call changed: a transfer to another agent (joined and left in one request), a party joining or leaving',
        description:
          'The gate follows the participants in the call now: every agent present must be inside a window, every customer present must have consented. ' +
          'Joined ids must be new to the call; left ids must be in it.',
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(CallParams),
        body: zodSchema(ParticipantsBody),
        response: { 200: Accepted, ...errors(400, 401, 403, 404, 409, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => changeParticipants(tx, (req.params as { callId: string }).callId, req.body as ParticipantsInput, ic)),
  );

  for (const [suffix, paused] of [['pause', true], ['resume', false]] as const) {
    app.post(
      `/v1/calls/:callId/${suffix}`,
      {
        config: { scopes: ['ivr'], operation: paused ? 'call.paused' : 'call.resumed' },
        schema: {
          tags: ['calls'],
          summary: paused ? 'Pause recording of the call (e.g. card details being read)' : 'Lift the pause',
          security: BEARER,
          headers: WRITE_HEADERS,
          params: zodSchema(CallParams),
          body: zodSchema(NoBody),
          response: { 200: Accepted, ...errors(400, 401, 403, 404, 409, 422, 429) },
        },
      },
      (req, reply) => write(ctx, req, reply, (tx, ic) => setPaused(tx, (req.params as { callId: string }).callId, paused, ic)),
    );
  }

  app.post(
    '/v1/calls/:callId/consent',
    {
      config: { scopes: ['ivr'], operation: 'consent' },
      schema: {
        tags: ['consent'],
        summary: "A customer's consent act (R3): granted, declined or withdrawn, with evidence",
        description:
          'withdrawn + erase: true also deletes what was recorded of this customer (R9): answered 202 with an erasureId. ' +
          'After the call ended only an erase is accepted.',
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(CallParams),
        body: zodSchema(ConsentBody),
        response: { 200: Accepted, 202: ErasureAccepted, ...errors(400, 401, 403, 404, 409, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => recordConsent(tx, (req.params as { callId: string }).callId, req.body as ConsentInput, ic)),
  );

  app.put(
    '/v1/agents/:agentId/schedule',
    {
      config: { scopes: ['wfm'], operation: 'schedule.set' },
      schema: {
        tags: ['schedules'],
        summary: "Replace an agent's training windows and monthly cap (R6)",
        description:
          'Refused with 422 schedule-rejected, `rule` naming the R6 rule: window-empty, window-overlap, window-in-past, ' +
          'window-too-long (a window of seven days or more), continuous-recording (touching windows covering seven days or more), bad-cap.',
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(AgentParams),
        body: zodSchema(ScheduleBody),
        response: { 200: Accepted, ...errors(400, 401, 403, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => setSchedule(tx, (req.params as { agentId: string }).agentId, req.body as ScheduleInput, ic)),
  );

  app.put(
    '/v1/agents/:agentId/monthly-cap',
    {
      config: { scopes: ['wfm'], operation: 'schedule.cap' },
      schema: {
        tags: ['schedules'],
        summary: "Change only an agent's monthly cap (recordings per UTC month); the windows stay",
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(AgentParams),
        body: zodSchema(MonthlyCapBody),
        response: { 200: Accepted, ...errors(400, 401, 403, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => setMonthlyCap(tx, (req.params as { agentId: string }).agentId, (req.body as { monthlyCap: number }).monthlyCap, ic)),
  );

  app.put(
    '/v1/agents/:agentId/team-lead',
    {
      config: { scopes: ['hr'], operation: 'team.set' },
      schema: {
        tags: ['teams'],
        summary: "Set an agent's team lead (R10: the one other person who may hear the agent's recordings)",
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(AgentParams),
        body: zodSchema(TeamLeadBody),
        response: { 200: docSchema(z.object({ agentId: IdSchema, teamLeadId: IdSchema })), ...errors(400, 401, 403, 413, 422, 429) },
      },
    },
    (req, reply) => write(ctx, req, reply, (tx, ic) => setTeamLead(tx, (req.params as { agentId: string }).agentId, (req.body as { teamLeadId: string }).teamLeadId, ic)),
  );
}
