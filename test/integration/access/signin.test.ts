/**
 * Sign-in, sessions and request protection on the control plane (issue 14 §2), with a real
 * OpenID provider (oidc-provider) and PostgreSQL:
 * - the authorization request uses PKCE (S256), state and nonce; a callback not started in this
 *   browser is refused;
 * - cookies are __Host-, httpOnly, Secure, SameSite=Lax; sessions live in the database and are
 *   revocable (sign-out, an operator revoking a subject);
 * - every state-changing request with the session needs its CSRF token and a same-site origin;
 * - a person without exactly one optin role is refused;
 * - security headers and a strict CSP on every page; a provider that is down answers 503.
 */
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OidcRelyingParty } from '../../../src/identity/oidc.ts';
import { SessionStore } from '../../../src/identity/sessions.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { startWebStack, type WebStack } from '../../support/webapp.ts';

let s: WebStack;
const R1 = 'r_a1a1a1a1a1a1a1a1';

beforeAll(async () => {
  s = await startWebStack();
  await s.addRecording({ recordingId: R1, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c1', seconds: 2 });
}, 120_000);

afterAll(async () => {
  await s?.close();
});

function cookieAttrs(setCookie: string[], name: string): string | undefined {
  return setCookie.find((c) => c.startsWith(`${name}=`));
}

describe('the authorization code flow', () => {
  it('asks the provider with PKCE (S256), state and nonce, and binds the flow to the browser', async () => {
    const res = await fetch(`${s.url}/auth/login?returnTo=%2Frecordings`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    const to = new URL(res.headers.get('location')!);
    expect(to.origin).toBe(s.idp.issuer);
    expect(to.searchParams.get('code_challenge_method')).toBe('S256');
    expect(to.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(to.searchParams.get('state')).toBeTruthy();
    expect(to.searchParams.get('nonce')).toBeTruthy();
    expect(to.searchParams.get('redirect_uri')).toBe(`${s.url}/auth/callback`);
    expect(to.searchParams.get('scope')).toBe('openid profile');
    const login = cookieAttrs(res.headers.getSetCookie(), '__Host-optin-login')!;
    expect(login).toMatch(/; HttpOnly/);
    expect(login).toMatch(/; Secure/);
    expect(login).toMatch(/; SameSite=Lax/);
    expect(login).toMatch(/; Path=\//);
    expect(login).not.toMatch(/Domain=/i);
    // The provider's answer reaching another browser (no login cookie) is refused: login CSRF.
    const stolen = await fetch(`${s.url}/auth/callback?code=x&state=${to.searchParams.get('state')}`, { redirect: 'manual' });
    expect(stolen.status).toBe(400);
    expect(await stolen.text()).toContain('not started in this browser');
  });

  it('issues an httpOnly, Secure, SameSite=Lax __Host- session cookie; the session is in the database', async () => {
    const a = await s.signIn('agent');
    expect(a.cookie).toMatch(/^__Host-optin-session=[A-Za-z0-9_-]{43}$/);
    const { rows } = await s.t.cp.db.query<{ subject: string; role: string; id_sha256: string }>('SELECT subject, role, id_sha256 FROM web_sessions WHERE subject = $1', ['agent-a1']);
    expect(rows[0]).toMatchObject({ subject: 'agent-a1', role: 'agent' });
    // Only the token's digest is stored.
    expect(rows.some((r) => r.id_sha256 === a.cookie.split('=')[1])).toBe(false);
    expect((await a.fetch('/api/recordings')).status).toBe(200);
  });

  it('refuses a person with several optin roles or none, and audits it', async () => {
    await expect(s.signIn('twohats')).rejects.toThrow(/several optin roles/);
    await expect(s.signIn('norole')).rejects.toThrow(/no optin role/);
    const denials = await s.t.cp.store!.trail!.list({ type: 'access.denied' });
    expect(denials.filter((e) => e.details.route === 'GET /auth/callback').map((e) => e.details.reason)).toEqual(expect.arrayContaining(['several-roles', 'no-role']));
  });
});

describe('CSRF protection of every state-changing request', () => {
  it('refuses a POST with the session but no token, a wrong token, or another site\u2019s origin; accepts the token', async () => {
    const a = await s.signIn('agent');
    const url = `/api/recordings/${R1}/deletion-requests`;
    const noToken = await a.fetch(url, { method: 'POST', csrf: false });
    expect(noToken.status).toBe(403);
    expect(await noToken.json()).toMatchObject({ error: 'forbidden' });
    expect((await a.fetch(url, { method: 'POST', csrf: false, headers: { 'x-csrf-token': 'x'.repeat(43) } })).status).toBe(403);
    expect((await a.fetch(url, { method: 'POST', headers: { origin: 'https://evil.example' } })).status).toBe(403);
    expect((await a.fetch(url, { method: 'POST', headers: { 'sec-fetch-site': 'cross-site' } })).status).toBe(403);
    // A form post carries the token in its body.
    const form = await a.fetch(`/recordings/${R1}/deletion-request`, { method: 'POST', csrf: false, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `_csrf=${encodeURIComponent(a.csrf)}` });
    expect(form.status).toBe(303);
    expect(form.headers.get('location')).toBe('/recordings?done=requested');
    expect((await a.fetch(url, { method: 'POST' })).status).toBe(200);
    const reasons = (await s.t.cp.store!.trail!.list({ type: 'access.denied' })).filter((e) => e.actor === 'agent-a1').map((e) => e.details.reason);
    expect(reasons).toEqual(expect.arrayContaining(['csrf-token', 'cross-site-request']));
  });
});

describe('sessions end', () => {
  it('at sign-out: revoked in the database, the cookie cleared, the browser sent to the provider', async () => {
    const l = await s.signIn('lead');
    const out = await l.fetch('/signout', { method: 'POST', csrf: false, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `_csrf=${encodeURIComponent(l.csrf)}` });
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toMatch(new RegExp(`^${s.idp.issuer}/session/end`));
    expect(cookieAttrs(out.headers.getSetCookie(), '__Host-optin-session')).toMatch(/Expires=Thu, 01 Jan 1970|Max-Age=0/);
    expect((await l.fetch('/api/recordings')).status).toBe(401);
    const page = await l.fetch('/recordings');
    expect(page.status).toBe(303);
    expect(page.headers.get('location')).toBe('/signin?returnTo=%2Frecordings');
  });

  it('when an operator revokes every session of a subject, at once, on every replica (the database decides)', async () => {
    const d1 = await s.signIn('dpo');
    const d2 = await s.signIn('dpo');
    expect((await d1.fetch('/api/audit/verify')).status).toBe(200);
    expect(await s.t.cp.sessions.revokeSubject('dpo-1', 'operator: laptop lost')).toBeGreaterThanOrEqual(2);
    expect((await d1.fetch('/api/audit/verify')).status).toBe(401);
    expect((await d2.fetch('/api/audit/verify')).status).toBe(401);
  });

  it('after the idle time and at the absolute end', async () => {
    let now = Date.now();
    const store = new SessionStore({ db: s.t.cp.db, idleMs: 60_000, absoluteMs: 3_600_000, now: () => now });
    const { token } = await store.create({ sub: 'agent-a1', role: 'agent' });
    expect(await store.lookup(token)).toBeDefined();
    now += 59_000;
    expect(await store.lookup(token)).toBeDefined(); // activity refreshes the idle clock
    now += 59_000;
    expect(await store.lookup(token)).toBeDefined();
    now += 61_000;
    expect(await store.lookup(token)).toBeUndefined();
    const again = await store.create({ sub: 'agent-a1', role: 'agent' });
    for (let i = 0; i < 70; i++) {
      now += 55_000;
      if (i < 64) expect(await store.lookup(again.token), `minute ${i}`).toBeDefined();
    }
    expect(await store.lookup(again.token)).toBeUndefined();
  });
});

describe('service tokens', () => {
  it('refuses a symmetric (HS256) token even with the right claims', async () => {
    const hs = await new SignJWT({ optin_roles: ['dpo'] }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setIssuer(s.idp.issuer).setAudience('optin-api').setSubject('dpo-1').setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode('a-shared-secret-nobody-should-hold-000000'));
    const res = await fetch(`${s.url}/api/audit/verify`, { headers: { authorization: `Bearer ${hs}` } });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ reason: 'invalid-signature' });
  });
});

describe('headers of every page', () => {
  it('a strict CSP (scripts from this origin only, styles by nonce), no sniffing, no framing, no referrer to other sites, no caching', async () => {
    const a = await s.signIn('agent');
    const res = await a.fetch(`/recordings/${R1}?purpose=coaching`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self';");
    expect(csp).toMatch(/style-src 'self' 'nonce-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain(`form-action 'self' ${s.idp.issuer}`);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(res.headers.get('referrer-policy')).toBe('same-origin');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('permissions-policy')).toContain('microphone=()');
    const body = await res.text();
    const nonce = /'nonce-([^']+)'/.exec(csp)![1]!;
    expect(body).toContain(`data-style-nonce="${nonce}"`);
    expect(body).not.toMatch(/<script(?![^>]*(type="module" src="\/assets\/|type="application\/json"))/);
    const asset = /src="(\/assets\/app\.[0-9a-f]{16}\.js)"/.exec(body)![1]!;
    const js = await fetch(`${s.url}${asset}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${s.url}/static/app.css`)).status).toBe(200);
  });
});

describe('the identity provider down', () => {
  it('existing sessions keep working; a provider that cannot be discovered makes sign-in answer 503 with Retry-After', async () => {
    const a = await s.signIn('agent');
    await s.idp.close();
    expect((await a.fetch('/api/recordings')).status).toBe(200);
    const rp = new OidcRelyingParty({ issuer: s.idp.issuer, clientId: 'x', publicUrl: () => s.url, scopes: 'openid', allowInsecure: true }, createLogger('silent'));
    await expect(rp.start()).rejects.toMatchObject({ code: 'IDP_UNAVAILABLE', retryable: true });
  });
});
