import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import helmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
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
import { accessRoutes } from '../api/accessRoutes.ts';
import { installPeople, type PeopleContext } from '../api/people.ts';
import { signInRoutes } from '../api/signInRoutes.ts';
import { webRoutes } from '../api/webRoutes.ts';
import type { ClaimMapping } from '../identity/claims.ts';
import { PUBLIC_DIR } from '../web/assets.ts';

/**
 * The control plane's HTTP application: one fastify instance, the routes registered as one
 * plugin per concern (facts, ledger, catalogue, operations, and the people's side of issue 14:
 * the access API, the web app's pages, sign-in). Route schemas are zod (validation) turned into
 * JSON Schema (the OpenAPI document served at /v1/openapi.json and committed as
 * docs/control-plane-openapi.json).
 *
 * Security headers on every answer (helmet), a strict content security policy set per response
 * (src/api/people.ts: scripts from this origin only, never inline), cookies, static files,
 * and one rate limit keyed by who calls (integration, person or service, else address).
 */

/** What the people's side needs besides its context: the identity provider's origin (CSP form-action) and the claim mapping. */
export interface PeopleWiring {
  ctx: PeopleContext;
  mapping: ClaimMapping;
  idpOrigin?: string;
}

export const API_VERSION = '2.0.0';

export async function buildApiApp(config: ControlPlaneConfig, ctx: ApiContext, logger: Logger, people?: PeopleWiring): Promise<FastifyInstance> {
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
  await app.register(cookie);
  // The CSP is set per response by installPeople (it carries a per-response style nonce).
  // Referrer: same-origin only (pages' URLs name recordings; and a same-origin form POST keeps its Origin header for the CSRF check).
  await app.register(helmet, { global: true, contentSecurityPolicy: false, referrerPolicy: { policy: 'same-origin' }, strictTransportSecurity: tls ? { maxAge: 31_536_000, includeSubDomains: true } : false });
  installPeople(app, people?.ctx, { tls, ...(people?.idpOrigin === undefined ? {} : { idpOrigin: people.idpOrigin }) });
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
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: '<integrationId>.<secret> (optin integrations add)' },
          session: { type: 'apiKey', in: 'cookie', name: '__Host-optin-session', description: 'a person signed in through the identity provider (GET /auth/login); state-changing requests also need X-CSRF-Token (GET /api/me)' },
          oauth2: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: "a service's JWT access token from the identity provider (client credentials; RFC 9068 at+jwt, asymmetric signature, aud = OPTIN_API_AUDIENCE, iat within OPTIN_TOKEN_MAX_AGE_SECONDS)" },
        },
      },
    },
  });
  installAuth(app, ctx);
  await app.register(rateLimit, {
    global: true,
    max: config.http.rateLimitPerMinute,
    timeWindow: 60_000,
    // After authentication: a busy integration is limited by its own name, not its address.
    hook: 'preValidation',
    keyGenerator: (req) => (req.integration !== undefined ? `i:${req.integration.id}` : req.principal !== undefined ? `p:${req.principal.sub}` : `a:${req.ip}`),
    errorResponseBuilder: (_req, c) => ({ statusCode: 429, error: 'rate-limited', message: `rate limit of ${c.max} requests per minute exceeded; retry in ${Math.ceil(c.ttl / 1000)} s` }),
  });
  await app.register(async (scope) => factRoutes(scope, ctx));
  await app.register(async (scope) => ledgerRoutes(scope, ctx));
  await app.register(async (scope) => catalogueRoutes(scope, ctx));
  await app.register(async (scope) => auditRoutes(scope, ctx));
  await app.register(async (scope) => healthRoutes(scope, { db: ctx.db, metrics: ctx.metrics }));
  if (people !== undefined) {
    await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/static/', decorateReply: false, cacheControl: true, maxAge: 3600_000, index: false });
    await app.register(async (scope) => signInRoutes(scope, people.ctx, people.mapping, logger));
    await app.register(async (scope) => accessRoutes(scope, people.ctx, logger));
    await app.register(async (scope) => webRoutes(scope, people.ctx, logger));
  }
  app.get('/v1/openapi.json', { config: { rateLimit: false }, schema: { hide: true } }, async () => app.swagger());
  return app;
}
