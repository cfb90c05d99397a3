import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Database, Tx } from '../db/Database.ts';
import { FactRefused } from '../facts/FactRefused.ts';
import { IDEMPOTENCY_KEY_PATTERN, idempotentWrite, requestHash } from '../facts/idempotency.ts';
import type { Answer, IngestContext } from '../facts/ingest.ts';
import type { Integration, IntegrationAuth, Scope } from '../facts/integrations.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook on routes that declare scopes. */
    integration?: Integration;
  }
  interface FastifyContextConfig {
    /** Any one of these scopes admits the caller; absent: no authentication (health, docs). */
    scopes?: readonly Scope[];
    /** Label for metrics: the fact or operation the route ingests. */
    operation?: string;
  }
}

/** What the API's route plugins share. */
export interface ApiContext {
  db: Database;
  auth: IntegrationAuth;
  metrics: ControlPlaneMetrics;
  now: () => number;
  contiguityToleranceMs: number;
  maxEvidenceSkewMs: number;
}

/** Documentation of the headers every write takes (checked in `write`, see zodSchema.ts). */
export const WRITE_HEADERS = {
  type: 'object',
  properties: {
    'idempotency-key': {
      type: 'string',
      pattern: IDEMPOTENCY_KEY_PATTERN.source,
      description: 'Unique per distinct write (8..128 of A-Z a-z 0-9 _ . : -). A retry with the same key and body returns the first answer; with another body it is refused (422).',
    },
  },
  required: ['idempotency-key'],
} as const;

export const BEARER = [{ bearer: [] }];

/** Registers the authentication hook: routes with `config.scopes` need a bearer token with one of them. */
export function installAuth(app: FastifyInstance, ctx: ApiContext): void {
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const scopes = request.routeOptions.config.scopes;
    if (scopes === undefined) return;
    const integration = await ctx.auth.verify(request.headers.authorization);
    if (integration === undefined) {
      await reply
        .code(401)
        .header('www-authenticate', 'Bearer realm="optin-control", error="invalid_token"')
        .send({ error: 'unauthenticated', message: 'send Authorization: Bearer <integration token> (optin integrations add prints one)', field: 'Authorization' });
      return reply;
    }
    if (!scopes.some((s) => integration.scopes.includes(s))) {
      await reply.code(403).send({ error: 'forbidden', message: `this integration lacks the scope for this route (needs one of: ${scopes.join(', ')})`, field: 'Authorization' });
      return reply;
    }
    request.integration = integration;
    return undefined;
  });
}

/**
 * Runs one write: Idempotency-Key required, one transaction, the answer stored for replay.
 * A FactRefused from `fn` rolls the transaction back and becomes the 4xx answer.
 */
export async function write(
  ctx: ApiContext,
  request: FastifyRequest,
  reply: FastifyReply,
  fn: (tx: Tx, ingest: IngestContext) => Promise<Answer>,
): Promise<void> {
  const operation = request.routeOptions.config.operation ?? 'unknown';
  try {
    const header = request.headers['idempotency-key'];
    const key = Array.isArray(header) ? undefined : header;
    if (key === undefined || !IDEMPOTENCY_KEY_PATTERN.test(key)) {
      throw new FactRefused(
        'IDEMPOTENCY_KEY_MISSING',
        'invalid-input',
        key === undefined ? 'every POST/PUT needs an Idempotency-Key header (a unique id per distinct write)' : 'Idempotency-Key must be 8..128 of A-Z a-z 0-9 _ . : -',
        { field: 'Idempotency-Key' },
      );
    }
    const integration = request.integration!;
    const nowMs = ctx.now();
    const path = request.url.split('?')[0]!;
    const result = await idempotentWrite(ctx.db, { integrationId: integration.id, key, requestHash: requestHash(request.method, path, request.body), nowMs }, (tx) =>
      fn(tx, { nowMs, integrationId: integration.id, contiguityToleranceMs: ctx.contiguityToleranceMs, maxEvidenceSkewMs: ctx.maxEvidenceSkewMs }),
    );
    ctx.metrics.factsIngested.inc({ operation, result: result.replayed ? 'replayed' : 'accepted' });
    await reply.code(result.status).header('idempotent-replayed', String(result.replayed)).send(result.body);
  } catch (err) {
    ctx.metrics.factsIngested.inc({ operation, result: err instanceof FactRefused ? err.error : 'failed' });
    throw err;
  }
}
