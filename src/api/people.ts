import type {} from '@fastify/cookie';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AccessService } from '../access/AccessService.ts';
import { authorizeRoute, type Action } from '../access/policy.ts';
import type { Principal } from '../access/roles.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { OidcRelyingParty } from '../identity/oidc.ts';
import { AuthError, bearerToken, type ServiceTokenVerifier } from '../identity/serviceTokens.ts';
import { sameToken, type Session, type SessionStore } from '../identity/sessions.ts';
import type { Logger } from '../log/logger.ts';
import type { FfmpegPool } from '../media/ffmpeg.ts';
import type { WebAssets } from '../web/assets.ts';

/**
 * Who is calling, for the people's side of the control plane (issue 14 §1-2): the web app's pages
 * and the access API. One hook resolves the caller before anything else runs:
 *
 * - `Authorization: Bearer <JWT>`: a service (the extract service's client-credentials token),
 *   verified against the identity provider's JWKS (src/identity/serviceTokens.ts);
 * - else the session cookie: a person signed in through the provider (src/identity/sessions.ts);
 * - else nobody: the API answers 401, a page redirects to the sign-in.
 *
 * Then the route's action is checked against the role (the policy's route-level rule, 403),
 * before the handler runs; the handler's use case checks the recording itself (404). Every
 * refusal is audited (`access.denied`) and thrown: the route scope's error handler answers in
 * its kind (JSON for the API, a page for pages). State-changing requests made with the session cookie
 * carry the session's CSRF token (form field `_csrf` or `X-CSRF-Token`) and, when the browser
 * says where they come from (Origin, Sec-Fetch-Site), come from this site; bearer requests carry
 * no ambient credential and need neither.
 */

export interface PeopleRoute {
  kind: 'api' | 'page';
  /** The policy action the route serves; absent: any signed-in person (or, with `open`, anyone). */
  action?: Action;
  /** Served without a caller (the sign-in pages). */
  open?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller on people routes (set by the hook). */
    principal?: Principal;
    /** The browser session, when the caller came with the cookie. */
    session?: Session;
    /** A per-response nonce for inline <style> elements of wavesurfer's shadow DOM (CSP style-src). */
    styleNonce: string;
  }
  interface FastifyContextConfig {
    people?: PeopleRoute;
  }
}

export interface PeopleContext {
  access: AccessService;
  sessions: SessionStore;
  /** Undefined: sign-in not configured (people routes answer 503). */
  oidc: OidcRelyingParty | undefined;
  /** The service-token verifier (built from the provider's discovery on first use). */
  serviceTokens: () => Promise<ServiceTokenVerifier | undefined>;
  assets: WebAssets;
  pool: FfmpegPool;
  /** The URL people reach us at (redirects, the Origin check); known once the server listens. */
  publicUrl: () => string;
  logger: Logger;
  now: () => number;
}

export const SESSION_COOKIE = '__Host-optin-session';
export const LOGIN_COOKIE = '__Host-optin-login';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** `/recordings/:recordingId` -> `GET /recordings/{recordingId}`: what a denial records. */
export function routeTemplate(request: FastifyRequest): string {
  return `${request.method} ${(request.routeOptions.url ?? request.url.split('?')[0] ?? '').replace(/:([A-Za-z]+)/g, '{$1}')}`;
}

/** The content security policy of every answer: scripts only from this origin, never inline. */
export function contentSecurityPolicy(o: { styleNonce: string; formTargets: readonly string[]; tls: boolean }): string {
  const directives = [
    "default-src 'self'",
    "script-src 'self'",
    "script-src-attr 'none'",
    // wavesurfer.js puts one <style> in its shadow root: allowed by this response's nonce only.
    `style-src 'self' 'nonce-${o.styleNonce}'`,
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    // Sign-out redirects to the identity provider: a form's redirect target must be allowed.
    `form-action 'self'${o.formTargets.map((t) => ` ${t}`).join('')}`,
  ];
  if (o.tls) directives.push('upgrade-insecure-requests');
  return directives.join('; ');
}

/** Installs the security headers and the caller hook (call once on the app, before the routes). */
export function installPeople(app: FastifyInstance, ctx: PeopleContext | undefined, o: { tls: boolean; idpOrigin?: string }): void {
  app.decorateRequest('styleNonce', '');
  app.addHook('onRequest', async (request, reply) => {
    request.styleNonce = randomBytes(16).toString('base64');
    reply.header('content-security-policy', contentSecurityPolicy({ styleNonce: request.styleNonce, formTargets: o.idpOrigin === undefined ? [] : [o.idpOrigin], tls: o.tls }));
    reply.header('permissions-policy', 'camera=(), microphone=(), geolocation=(), payment=(), usb=()');
    const people = request.routeOptions.config.people;
    if (people === undefined) return undefined;
    // Pages and API answers about people are never cached by anyone.
    reply.header('cache-control', 'no-store');
    if (ctx === undefined || ctx.oidc === undefined) {
      if (people.open) return undefined;
      throw new OptinError('SIGN_IN_NOT_CONFIGURED', 'sign-in is not configured on this control plane: set OPTIN_OIDC_ISSUER and OPTIN_OIDC_CLIENT_ID (docs/control-plane.md)');
    }
    try {
      await resolveCaller(request, ctx);
    } catch (err) {
      if (err instanceof AuthError) {
        await ctx.access.recordDenial(undefined, routeTemplate(request), 401, err.reason);
        throw err;
      }
      throw err;
    }
    if (people.open) return undefined;
    if (request.principal === undefined) {
      if (people.kind === 'page') {
        await reply.redirect(`/signin?returnTo=${encodeURIComponent(request.url)}`, 303);
        return reply;
      }
      await ctx.access.recordDenial(undefined, routeTemplate(request), 401, 'missing-credentials');
      throw new AuthError('missing-token', 'sign in (session cookie) or send a bearer token: Authorization: Bearer <JWT access token>');
    }
    if (people.action !== undefined) {
      const d = authorizeRoute(request.principal, people.action);
      if (!d.allow) {
        await ctx.access.recordDenial(request.principal, routeTemplate(request), d.status, d.reason, (request.params as { recordingId?: string } | undefined)?.recordingId);
        throw new OptinError('ACCESS_DENIED', `your role (${request.principal.role}) may not use this`);
      }
    }
    return undefined;
  });
  // CSRF: after the body is parsed (forms carry the token in it).
  app.addHook('preHandler', async (request) => {
    const people = request.routeOptions.config.people;
    if (people === undefined || ctx === undefined || !UNSAFE.has(request.method) || request.session === undefined) return undefined;
    const site = request.headers['sec-fetch-site'];
    const origin = request.headers.origin;
    const fromBody = (request.body as { _csrf?: unknown } | undefined)?._csrf;
    const header = request.headers['x-csrf-token'];
    const token = typeof header === 'string' ? header : typeof fromBody === 'string' ? fromBody : undefined;
    // Origin "null" is what a browser sends when a referrer policy withholds it; Sec-Fetch-Site still says where the request came from.
    const sameSiteFetch = site === 'same-origin';
    const crossSite =
      (typeof site === 'string' && site !== 'same-origin' && site !== 'none') || (typeof origin === 'string' && origin !== new URL(ctx.publicUrl()).origin && !(origin === 'null' && sameSiteFetch));
    if (token === undefined || crossSite || !sameToken(token, request.session.csrfToken)) {
      await ctx.access.recordDenial(request.principal, routeTemplate(request), 403, crossSite ? 'cross-site-request' : 'csrf-token');
      throw new OptinError('CSRF_REJECTED', 'this request lacks a valid CSRF token (reload the page and try again)');
    }
    return undefined;
  });
}

async function resolveCaller(request: FastifyRequest, ctx: PeopleContext): Promise<void> {
  const token = bearerToken(request.headers.authorization);
  if (token !== undefined) {
    const verifier = await ctx.serviceTokens();
    if (verifier === undefined) throw new OptinError('SIGN_IN_NOT_CONFIGURED', 'service tokens are not configured');
    request.principal = await verifier.verify(token);
    return;
  }
  if (typeof request.headers.authorization === 'string') throw new AuthError('missing-token', 'only bearer tokens are accepted: Authorization: Bearer <JWT access token>');
  const session = await ctx.sessions.lookup(request.cookies[SESSION_COOKIE]);
  if (session !== undefined) {
    request.session = session;
    request.principal = session.principal;
  }
}

/** Retry-After for a refusal that may succeed later (a full ffmpeg pool, a dependency down). */
export function retryAfterSeconds(err: unknown, pool: FfmpegPool | undefined): number | undefined {
  if (!isOptinError(err) || !err.retryable) return undefined;
  if (err.code === 'FFMPEG_BUSY') return pool?.retryAfterSeconds() ?? 5;
  return err.kind === 'unavailable' || err.kind === 'timeout' ? 10 : undefined;
}
