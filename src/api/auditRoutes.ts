import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { listAuditStreams, recordAnchor, registerAuditStream } from '../audit/anchors.ts';
import { FactRefused } from '../facts/FactRefused.ts';
import { IdSchema } from '../ids/ids.ts';
import { BEARER, WRITE_HEADERS, write, type ApiContext } from './context.ts';
import { ApiErrorSchema } from './errors.ts';
import { docSchema, zodSchema } from './zodSchema.ts';

const Hash = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits');

const StreamRow = z.object({
  streamId: IdSchema,
  registeredAt: z.int(),
  registeredBy: z.string(),
  anchor: z.object({ seq: z.int(), hash: Hash, headAt: z.string(), anchoredAt: z.int() }).nullable(),
});

const RegisterBody = z.strictObject({ streamId: IdSchema.describe('the writer id of an audit stream (a worker id, a replica id, a CLI writer)') });
const AnchorBody = z.strictObject({
  streamId: IdSchema,
  seq: z.int().min(0),
  hash: Hash,
  at: z.string().max(64).describe("the head's own `at`"),
});

const errors = docSchema(ApiErrorSchema);

/**
 * The audit trail's registry (docs/rules.md "Audit", src/audit/anchors.ts): the writer streams
 * that must exist and the head hashes anchored for them. `optin audit verify --control-url` reads
 * it; the anchoring pass and the policy stream fill it; these routes let other writers register
 * and push their heads.
 */
export async function auditRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get(
    '/v1/audit/streams',
    {
      config: { scopes: ['ops'] },
      schema: {
        tags: ['audit'],
        summary: 'Registered audit writer streams and the latest head anchored for each',
        security: BEARER,
        response: { 200: docSchema(z.object({ streams: z.array(StreamRow) })), 401: errors, 403: errors },
      },
    },
    async (_req, reply) => {
      const streams = await listAuditStreams(ctx.db);
      await reply.send({
        streams: streams.map((s) => ({
          streamId: s.streamId,
          registeredAt: s.registeredAtMs,
          registeredBy: s.registeredBy,
          anchor: s.anchor === null ? null : { seq: s.anchor.seq, hash: s.anchor.hash, headAt: s.anchor.headAt, anchoredAt: s.anchor.anchoredAtMs },
        })),
      });
    },
  );

  app.post(
    '/v1/audit/streams',
    {
      config: { scopes: ['ops'], operation: 'audit.stream-registered' },
      schema: {
        tags: ['audit'],
        summary: 'Register an audit writer stream (verify then reports it if it is ever deleted)',
        security: BEARER,
        headers: WRITE_HEADERS,
        body: zodSchema(RegisterBody),
        response: { 200: docSchema(z.object({ streamId: IdSchema, registered: z.boolean() })), ...Object.fromEntries([400, 401, 403, 429].map((c) => [c, errors])) },
      },
    },
    (req, reply) =>
      write(ctx, req, reply, async (tx, ic) => {
        const { streamId } = req.body as z.infer<typeof RegisterBody>;
        const registered = await registerAuditStream(tx, streamId, `api:${ic.integrationId}`, ic.nowMs);
        return { status: 200, body: { streamId, registered } };
      }),
  );

  app.post(
    '/v1/audit/anchors',
    {
      config: { scopes: ['ops'], operation: 'audit.anchored' },
      schema: {
        tags: ['audit'],
        summary: "Anchor a stream's head (seq, hash): refused if it is behind, or differs from, what was anchored",
        security: BEARER,
        headers: WRITE_HEADERS,
        body: zodSchema(AnchorBody),
        response: {
          200: docSchema(z.object({ streamId: IdSchema, outcome: z.enum(['anchored', 'unchanged']) })),
          ...Object.fromEntries([400, 401, 403, 409, 429].map((c) => [c, errors])),
        },
      },
    },
    (req, reply) =>
      write(ctx, req, reply, async (tx, ic) => {
        const body = req.body as z.infer<typeof AnchorBody>;
        const outcome = await recordAnchor(tx, { stream: body.streamId, seq: body.seq, hash: body.hash, at: body.at }, ic.nowMs, `api:${ic.integrationId}`);
        if (outcome === 'behind' || outcome === 'forked') {
          throw new FactRefused(
            'AUDIT_ANCHOR_REFUSED',
            `anchor-${outcome}`,
            outcome === 'behind'
              ? `stream ${body.streamId} was anchored further than seq ${body.seq}: its tail was cut (run optin audit verify)`
              : `stream ${body.streamId} was anchored at seq ${body.seq} with another hash: it was rewritten (run optin audit verify)`,
            { field: 'seq' },
          );
        }
        return { status: 200, body: { streamId: body.streamId, outcome } };
      }),
  );
}
