import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import helmet from '@fastify/helmet';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import { auditRoutes } from '../api/auditRoutes.ts';
import { catalogueRoutes } from '../api/catalogueRoutes.ts';
import { ledgerRoutes } from '../api/erasureRoutes.ts';
import { factRoutes } from '../api/factRoutes.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneConfig } from './config.ts';
import { healthRoutes } from './healthRoutes.ts';
import { installAuth, type ApiContext } from '../api/context.ts';
import { installErrorHandler } from '../api/errors.ts';
import { zodValidatorCompiler } from '../api/zodSchema.ts';

/**
 * The control plane's HTTP application: one fastify instance, the routes registered as one
 * plugin per concern (facts, ledger, catalogue, operations; issue 14 adds the access API the
 * same way). Route schemas are zod (validation) turned into JSON Schema (the OpenAPI document
 * served at /v1/openapi.json and committed as docs/control-plane-openapi.json).
 */

export const API_VERSION = '2.0.0';

export async function buildApiApp(config: ControlPlaneConfig, ctx: ApiContext, logger: Logger): Promise<FastifyInstance> {
  const tls = config.http.tlsCertFile !== undefined && config.http.tlsKeyFile !== undefined;
  const app = Fastify({
    bodyLimit: config.http.bodyLimitBytes,
    // The stream's upgrade requests are handled beside fastify on the same server.
    ...(tls
      ? {
          https: {
            cert: readFileSync(config.http.tlsCertFile!),
            key: readFileSync(config.http.tlsKeyFile!),
            ...(config.http.clientCaFile === undefined
              ? {}
              : // Asked for, verified, but enforced only on the stream: integrations use bearer tokens.
                { ca: readFileSync(config.http.clientCaFile), requestCert: true, rejectUnauthorized: false }),
          },
        }
      : {}),
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(zodValidatorCompiler);
  // Responses are written as they are; the response schemas only document them.
  app.setSerializerCompiler(() => (data: unknown) => JSON.stringify(data));
  installErrorHandler(app, logger);
  await app.register(helmet, { global: true });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'optin control plane',
        version: API_VERSION,
        description:
          'Fact ingest (calls, consent, pauses, schedules, teams), erasure and deletion receipts, and the catalogue. ' +
          'Every POST/PUT needs Idempotency-Key; refusals are {error, message, field?, rule?} and change nothing. See docs/control-plane.md.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: '<integrationId>.<secret> (optin integrations add)' } } },
    },
  });
  installAuth(app, ctx);
  await app.register(rateLimit, {
    global: true,
    max: config.http.rateLimitPerMinute,
    timeWindow: 60_000,
    // After authentication: a busy integration is limited by its own name, not its address.
    hook: 'preValidation',
    keyGenerator: (req) => (req.integration !== undefined ? `i:${req.integration.id}` : `a:${req.ip}`),
    errorResponseBuilder: (_req, c) => ({ statusCode: 429, error: 'rate-limited', message: `rate limit of ${c.max} requests per minute exceeded; retry in ${Math.ceil(c.ttl / 1000)} s` }),
  });
  await app.register(async (scope) => factRoutes(scope, ctx));
  await app.register(async (scope) => ledgerRoutes(scope, ctx));
  await app.register(async (scope) => catalogueRoutes(scope, ctx));
  await app.register(async (scope) => auditRoutes(scope, ctx));
  await app.register(async (scope) => healthRoutes(scope, { db: ctx.db, metrics: ctx.metrics }));
  app.get('/v1/openapi.json', { config: { rateLimit: false }, schema: { hide: true } }, async () => app.swagger());
  return app;
}
