import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ApiErrorSchema } from './errors.ts';
import { BEARER, type ApiContext } from './context.ts';
import { docSchema, zodSchema } from './zodSchema.ts';
import { FactRefused } from '../facts/FactRefused.ts';
import { IdSchema } from '../ids/ids.ts';
import { RECORDING_STATES, getRecording, listRecordings } from '../catalogue/Catalogue.ts';

export const ListQuerySchema = z
  .strictObject({
    teamLeadId: IdSchema.optional(),
    agentId: IdSchema.optional(),
    from: z.coerce.number().int().min(0).optional().describe('started at or after (ms since the epoch)'),
    to: z.coerce.number().int().min(0).optional().describe('started before (ms since the epoch)'),
    limit: z.coerce.number().int().min(1).max(500).default(50),
    cursor: z.string().max(256).optional().describe('nextCursor of the previous page'),
    state: z.enum(RECORDING_STATES).optional().describe('only this state (default: recording, complete, interrupted)'),
  })
  .refine((q) => (q.teamLeadId === undefined) !== (q.agentId === undefined), { message: 'give exactly one of teamLeadId or agentId', path: ['teamLeadId'] });

const Row = z.object({
  recordingId: IdSchema,
  callId: IdSchema,
  agentIds: z.array(IdSchema),
  teamLeadIds: z.array(IdSchema),
  startedAt: z.int(),
  endedAt: z.int().nullable(),
  tracks: z.int(),
  segments: z.int(),
  bytes: z.int(),
  expiresAt: z.int(),
  state: z.enum(RECORDING_STATES),
});

/** Catalogue reads for operators and (issue 14) the access API. */
export async function catalogueRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get(
    '/v1/recordings',
    {
      config: { scopes: ['ops'] },
      schema: {
        tags: ['catalogue'],
        summary: "A team's (teamLeadId) or an agent's (agentId) recordings, newest first, keyset-paginated",
        security: BEARER,
        querystring: zodSchema(ListQuerySchema),
        response: { 200: docSchema(z.object({ recordings: z.array(Row), nextCursor: z.string().optional() })), 400: docSchema(ApiErrorSchema) },
      },
    },
    async (req, reply) => {
      const q = req.query as z.infer<typeof ListQuerySchema>;
      const page = await listRecordings(ctx.db, {
        by: q.teamLeadId !== undefined ? 'lead' : 'agent',
        key: (q.teamLeadId ?? q.agentId)!,
        limit: q.limit,
        ...(q.from === undefined ? {} : { from: q.from }),
        ...(q.to === undefined ? {} : { to: q.to }),
        ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
        ...(q.state === undefined ? {} : { states: [q.state] }),
      });
      await reply.send({
        recordings: page.recordings.map((r) => ({
          recordingId: r.recordingId,
          callId: r.callId,
          agentIds: r.agentIds,
          teamLeadIds: r.teamLeadIds,
          startedAt: r.startedAt,
          endedAt: r.endedAt,
          tracks: r.tracks,
          segments: r.segments,
          bytes: r.bytes,
          expiresAt: r.expiresAt,
          state: r.state,
        })),
        ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }),
      });
    },
  );

  app.get(
    '/v1/recordings/:recordingId',
    {
      config: { scopes: ['ops'] },
      schema: {
        tags: ['catalogue'],
        summary: 'One catalogue row',
        security: BEARER,
        params: zodSchema(z.strictObject({ recordingId: IdSchema })),
        response: { 200: docSchema(Row), 404: docSchema(ApiErrorSchema) },
      },
    },
    async (req, reply) => {
      const row = await getRecording(ctx.db, (req.params as { recordingId: string }).recordingId);
      if (row === undefined) throw new FactRefused('RECORDING_NOT_FOUND', 'not-found', 'no such recording in the catalogue', { field: 'recordingId' });
      await reply.send(row);
    },
  );
}
