import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { principalFromClaims, type ClaimMapping } from '../identity/claims.ts';
import { randomToken } from '../identity/sessions.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { HOME, page } from '../web/layout.ts';
import { signInPage, signedOutPage } from '../web/pages/general.ts';
import { LOGIN_COOKIE, SESSION_COOKIE, type PeopleContext } from './people.ts';

/**
 * Sign-in and sign-out (issue 14 §2): OpenID Connect authorization code with PKCE against the
 * contact centre's provider (src/identity/oidc.ts).
 *
 *   GET  /signin          a page with the sign-in button (where pages send a signed-out caller)
 *   GET  /auth/login      starts: a login cookie binds the flow to this browser (login CSRF),
 *                         state, nonce and the PKCE verifier are stored server-side, the browser
 *                         goes to the provider
 *   GET  /auth/callback   the provider's answer: the code exchanged with the verifier, the ID
 *                         token verified, the role read from its claim; a session is created
 *                         (cookie: __Host-, httpOnly, Secure, SameSite=Lax) and the sign-in audited
 *   POST /signout         CSRF-checked: the session is revoked in the database, the cookie
 *                         cleared, the browser sent to the provider's end-session endpoint
 *   GET  /signed-out      where the provider sends the browser back
 *
 * SameSite=Lax, not Strict: the provider's redirect back is a cross-site navigation, and the
 * first page after it must see the session. State-changing requests are protected by the CSRF
 * token and the Origin check instead (src/api/people.ts).
 */

const ReturnQuery = z.object({ returnTo: z.string().max(512).optional() });
const CallbackQuery = z.object({ state: z.string().max(200).optional(), code: z.string().max(2048).optional(), error: z.string().max(200).optional(), iss: z.string().optional() });

/** Only a path of this app (no scheme, no host, no `//`, no backslash): never an open redirect. */
export function safeReturnTo(v: string | undefined): string | undefined {
  if (v === undefined || !/^\/[A-Za-z0-9/_.~?=&%-]*$/.test(v) || v.startsWith('//') || v.startsWith('/auth/') || v.startsWith('/signout')) return undefined;
  return v;
}

function cookieOptions(maxAgeSeconds: number) {
  // __Host- cookies must be Secure, Path=/ and carry no Domain (RFC 6265bis §4.1.3.2).
  return { httpOnly: true, secure: true, sameSite: 'lax' as const, path: '/', maxAge: maxAgeSeconds };
}

export async function signInRoutes(app: FastifyInstance, ctx: PeopleContext, mapping: ClaimMapping, logger: Logger): Promise<void> {
  const open = { people: { kind: 'page' as const, open: true } };
  const hidden = { hide: true } as const;
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))));

  const send = async (req: FastifyRequest, reply: FastifyReply, title: string, body: ReturnType<typeof signInPage>, status = 200): Promise<void> => {
    const doc = page({ title, path: req.url.split('?')[0] ?? '/', scriptUrl: ctx.assets.scriptUrl, body });
    await reply.code(status).type('text/html; charset=utf-8').send(doc.value);
  };
  app.setErrorHandler(async (err: unknown, req, reply) => {
    const status = isOptinError(err) && err.kind === 'unavailable' ? 503 : isOptinError(err, 'CSRF_REJECTED') ? 403 : 400;
    if (status === 503) void reply.header('retry-after', '10');
    const message = isOptinError(err) ? err.message : 'the sign-in could not be completed; start again';
    if (!isOptinError(err)) logger.warn({ err: (err as Error).message }, 'sign-in: unexpected error');
    await send(req, reply, 'Sign in', signInPage({ returnTo: '/', message, configured: ctx.oidc !== undefined }), status);
  });

  app.get('/signin', { config: open, schema: hidden }, async (req, reply) => {
    if (req.principal !== undefined) {
      await reply.redirect(HOME[req.principal.role], 303);
      return;
    }
    const q = ReturnQuery.safeParse(req.query);
    await send(req, reply, 'Sign in', signInPage({ returnTo: safeReturnTo(q.success ? q.data.returnTo : undefined) ?? '/', configured: ctx.oidc !== undefined }), ctx.oidc === undefined ? 503 : 200);
  });

  app.get('/auth/login', { config: open, schema: hidden }, async (req, reply) => {
    if (ctx.oidc === undefined) throw new OptinError('SIGN_IN_NOT_CONFIGURED', 'sign-in is not configured on this control plane');
    const q = ReturnQuery.safeParse(req.query);
    const started = await ctx.oidc.start();
    const binding = randomToken();
    await ctx.sessions.saveLogin(binding, { state: started.state, nonce: started.nonce, codeVerifier: started.codeVerifier, returnTo: safeReturnTo(q.success ? q.data.returnTo : undefined) ?? '/' });
    void reply.setCookie(LOGIN_COOKIE, binding, cookieOptions(600));
    await reply.redirect(started.url.href, 303);
  });

  app.get('/auth/callback', { config: open, schema: hidden }, async (req, reply) => {
    if (ctx.oidc === undefined) throw new OptinError('SIGN_IN_NOT_CONFIGURED', 'sign-in is not configured on this control plane');
    const q = CallbackQuery.safeParse(req.query);
    if (!q.success || q.data.state === undefined) throw new OptinError('SIGN_IN_FAILED', 'the identity provider sent the browser back without a sign-in; start again');
    const tx = await ctx.sessions.takeLogin(q.data.state, req.cookies[LOGIN_COOKIE]);
    void reply.clearCookie(LOGIN_COOKIE, { path: '/', secure: true, httpOnly: true, sameSite: 'lax' });
    if (tx === undefined) throw new OptinError('SIGN_IN_FAILED', 'this sign-in was not started in this browser, or it took longer than ten minutes; start again');
    const url = new URL(req.url, ctx.publicUrl());
    const claims = await ctx.oidc.finish(url, tx);
    const who = principalFromClaims(claims, mapping);
    if (!who.ok) {
      await ctx.access.recordDenial(undefined, 'GET /auth/callback', 403, who.reason);
      throw new OptinError('SIGN_IN_FAILED', who.message);
    }
    const { token, session } = await ctx.sessions.create(who.principal);
    void reply.setCookie(SESSION_COOKIE, token, cookieOptions(Math.floor((session.expiresAt - ctx.now()) / 1000)));
    logger.info({ role: who.principal.role }, 'sign-in');
    await ctx.access.recordSignIn(who.principal);
    await reply.redirect(tx.returnTo === '/' ? HOME[who.principal.role] : tx.returnTo, 303);
  });

  app.post('/signout', { config: { people: { kind: 'page' as const } }, schema: hidden }, async (req, reply) => {
    if (req.session !== undefined) await ctx.sessions.revoke(req.session.idSha256, 'signed-out');
    void reply.clearCookie(SESSION_COOKIE, { path: '/', secure: true, httpOnly: true, sameSite: 'lax' });
    const end = await ctx.oidc?.endSessionUrl();
    await reply.redirect(end?.href ?? '/signed-out', 303);
  });

  app.get('/signed-out', { config: open, schema: hidden }, async (req, reply) => {
    await send(req, reply, 'Signed out', signedOutPage());
  });
}
