import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { DELETION_REASONS } from '../control/protocolV2.ts';
import { ApiErrorSchema } from './errors.ts';
import { BEARER, WRITE_HEADERS, write, type ApiContext } from './context.ts';
import { docSchema, zodSchema } from './zodSchema.ts';
import { FactRefused } from '../facts/FactRefused.ts';
import { IdSchema } from '../ids/ids.ts';
import { getDeletion, getErasure, requestDeletion } from '../erasure/ledger.ts';

const IdParams = z.strictObject({ id: IdSchema });
const RecordingParams = z.strictObject({ recordingId: IdSchema });
export const DeletionBody = z.strictObject({
  /** Only this participant's part (their track and subject ids); absent: the whole recording. */
  participantId: IdSchema.optional(),
  /** Who asked, pseudonymous (a team lead's id, an operator's id). */
  actor: IdSchema,
  reason: z.enum(DELETION_REASONS.filter((r) => r !== 'erasure' && r !== 'expiry') as ['team-lead', 'operator']),
});

const LedgerStatus = z.object({
  id: IdSchema,
  state: z.enum(['pending', 'done']),
  requestedAt: z.int(),
  completedAt: z.int().nullable(),
  recordingIds: z.array(IdSchema),
  confirmedBy: z.array(z.string()),
  receipt: z.unknown().describe('when done: storeReceipts (the store deletion receipts), confirmedBy (workers and their receipts), unconfirmedHolders'),
});

const notFound = docSchema(ApiErrorSchema);

/** Erasure and deletion receipts, and deletion requests (team leads through the access API, operators). */
export async function ledgerRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get(
    '/v1/erasures/:id',
    {
      config: { scopes: ['ivr', 'ops'] },
      schema: {
        tags: ['erasures'],
        summary: 'Status and receipt of an erasure (the erasureId a 202 returned)',
        security: BEARER,
        params: zodSchema(IdParams),
        response: { 200: docSchema(LedgerStatus), 404: notFound },
      },
    },
    async (req, reply) => {
      const row = await getErasure(ctx.db, (req.params as { id: string }).id);
      if (row === undefined) throw new FactRefused('ERASURE_NOT_FOUND', 'not-found', 'no erasure with this id', { field: 'id' });
      await reply.send({
        id: row.id,
        callId: row.call_id,
        participantId: row.participant_id,
        state: row.state,
        requestedAt: row.requested_at_ms,
        completedAt: row.completed_at_ms,
        recordingIds: row.recording_ids,
        confirmedBy: row.confirmed_by,
        receipt: row.receipt,
      });
    },
  );

  app.get(
    '/v1/deletions/:id',
    {
      config: { scopes: ['ops'] },
      schema: {
        tags: ['deletions'],
        summary: 'Status and receipt of a deletion',
        security: BEARER,
        params: zodSchema(IdParams),
        response: { 200: docSchema(LedgerStatus), 404: notFound },
      },
    },
    async (req, reply) => {
      const row = await getDeletion(ctx.db, (req.params as { id: string }).id);
      if (row === undefined) throw new FactRefused('DELETION_NOT_FOUND', 'not-found', 'no deletion with this id', { field: 'id' });
      await reply.send({
        id: row.id,
        recordingId: row.recording_id,
        participantId: row.participant_id,
        reason: row.reason,
        state: row.state,
        requestedAt: row.requested_at_ms,
        completedAt: row.completed_at_ms,
        recordingIds: [row.recording_id],
        confirmedBy: row.confirmed_by,
        receipt: row.receipt,
      });
    },
  );

  app.post(
    '/v1/recordings/:recordingId/deletion',
    {
      config: { scopes: ['ops'], operation: 'recording.deleted' },
      schema: {
        tags: ['deletions'],
        summary: 'Delete a recording (or one participant\'s part): durable now, carried out by the holding workers and the control plane',
        security: BEARER,
        headers: WRITE_HEADERS,
        params: zodSchema(RecordingParams),
        body: zodSchema(DeletionBody),
        response: {
          202: docSchema(z.object({ deletionId: IdSchema, recordingId: IdSchema, seq: z.int().nullable(), status: z.literal('pending'), statusUrl: z.string() })),
          ...Object.fromEntries([400, 401, 403, 404, 422, 429].map((c) => [c, notFound])),
        },
      },
    },
    (req, reply) =>
      write(ctx, req, reply, async (tx, ic) => {
        const { recordingId } = req.params as { recordingId: string };
        const body = req.body as z.infer<typeof DeletionBody>;
        const { rows } = await tx.query('SELECT 1 FROM recordings WHERE recording_id = $1', [recordingId]);
        if (rows.length === 0) {
          throw new FactRefused('RECORDING_NOT_FOUND', 'unknown-recording', `recording ${recordingId} is not in the catalogue (optin catalogue rebuild reconciles it with the store)`, { field: 'recordingId' });
        }
        const d = await requestDeletion(tx, { recordingId, actor: body.actor, reason: body.reason, nowMs: ic.nowMs, integration: ic.integrationId, ...(body.participantId === undefined ? {} : { participantId: body.participantId }) });
        return { status: 202, body: { deletionId: d.deletionId, recordingId, seq: d.seq, status: 'pending', statusUrl: `/v1/deletions/${d.deletionId}` } };
      }),
  );
}
