import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type InteractionDetails } from 'oidc-provider';

/**
 * A real OpenID provider on this machine (panva's oidc-provider, certified) for the tests and
 * `npm run demo`: the contact centre's identity provider stands in here, so the control plane
 * signs people in exactly as it would in production (authorization code + PKCE, ID token signed
 * with ES256/RS256, JWKS published) and services get JWT access tokens by client credentials.
 * Nothing here ships: production points OPTIN_OIDC_ISSUER at the real provider.
 *
 * Demo users, one per role (password `demo` for all): the role travels in the `optin_roles`
 * claim (the control plane's default OPTIN_OIDC_ROLE_CLAIM). The login page is plain HTML (no
 * script), usable with the keyboard alone.
 */

export interface DevUser {
  /** The pseudonymous subject id (`sub`): what recordings carry for agents and team leads. */
  sub: string;
  /** What to type at the login page. */
  login: string;
  name: string;
  roles: string[];
}

export interface DevClient {
  clientId: string;
  clientSecret: string;
  /** The control plane's public URL: redirects go to <url>/auth/callback and <url>/signed-out. */
  appUrl: string;
}

export interface DevService {
  clientId: string;
  clientSecret: string;
  /** Role claim values of the service's tokens. */
  roles: string[];
}

export const DEMO_PASSWORD = 'demo';

export const DEMO_USERS: readonly DevUser[] = Object.freeze([
  { sub: 'agent-a1', login: 'agent', name: 'Alex Agent', roles: ['agent'] },
  { sub: 'lead-l1', login: 'lead', name: 'Lee Lead', roles: ['team-lead'] },
  { sub: 'dpo-1', login: 'dpo', name: 'Dana DPO', roles: ['dpo'] },
  { sub: 'xop-1', login: 'extract', name: 'Eli Extract', roles: ['extract-operator'] },
]);

/** The resource indicator (RFC 8707) services ask tokens for; its tokens carry `aud` = the API audience. */
export const API_RESOURCE = 'urn:optin:api';

export interface DevIdp {
  issuer: string;
  users: readonly DevUser[];
  /** A client-credentials access token (JWT) for a service. */
  serviceToken(clientId: string, clientSecret: string): Promise<string>;
  close(): Promise<void>;
}

function escape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function loginPage(uid: string, users: readonly DevUser[], error?: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in · contact centre (demo provider)</title></head>
<body>
<main>
<h1>Contact centre sign-in (demo provider)</h1>
<p>Demo accounts, password <code>${DEMO_PASSWORD}</code>: ${users.map((u) => `<code>${escape(u.login)}</code> (${escape(u.roles.join(', '))})`).join(', ')}.</p>
${error === undefined ? '' : `<p role="alert"><strong>${escape(error)}</strong></p>`}
<form method="post" action="/interaction/${escape(uid)}/login">
<p><label for="login">User name</label><br><input id="login" name="login" autocomplete="username" required autofocus></p>
<p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
</main>
</body></html>`;
}

/**
 * The provider's state (sessions, codes, grants, tokens) in this process's memory: a dev
 * provider forgets everything when it stops, which is what the tests and the demo want.
 * (oidc-provider's adapter interface: upsert/find/findByUid/findByUserCode/consume/destroy/revokeByGrantId.)
 */
function memoryAdapter() {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  return class MemoryAdapter {
    readonly #name: string;
    constructor(name: string) {
      this.#name = name;
    }
    #key(id: string): string {
      return `${this.#name}:${id}`;
    }
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
      store.set(this.#key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Number.POSITIVE_INFINITY });
    }
    async find(id: string): Promise<Record<string, unknown> | undefined> {
      const e = store.get(this.#key(id));
      if (e === undefined || e.expiresAt <= Date.now()) return undefined;
      return e.payload;
    }
    async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
      for (const [k, e] of store) if (k.startsWith(`${this.#name}:`) && e.payload.uid === uid && e.expiresAt > Date.now()) return e.payload;
      return undefined;
    }
    async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
      for (const [k, e] of store) if (k.startsWith(`${this.#name}:`) && e.payload.userCode === userCode && e.expiresAt > Date.now()) return e.payload;
      return undefined;
    }
    async consume(id: string): Promise<void> {
      const e = store.get(this.#key(id));
      if (e !== undefined) e.payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string): Promise<void> {
      store.delete(this.#key(id));
    }
    async revokeByGrantId(grantId: string): Promise<void> {
      for (const [k, e] of store) if (e.payload.grantId === grantId) store.delete(k);
    }
  };
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 16 * 1024) break;
    chunks.push(c as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export async function startDevIdp(o: { port?: number; host?: string; clients: DevClient[]; services?: DevService[]; users?: readonly DevUser[]; audience?: string; roleClaim?: string }): Promise<DevIdp> {
  const users = o.users ?? DEMO_USERS;
  const roleClaim = o.roleClaim ?? 'optin_roles';
  const audience = o.audience ?? 'optin-api';
  const services = o.services ?? [];
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(o.port ?? 0, o.host ?? '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://localhost:${port}`;

  const es = await generateKeyPair('ES256', { extractable: true });
  const rs = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
  const keys = [
    { ...(await exportJWK(es.privateKey)), kid: `es-${randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' },
    { ...(await exportJWK(rs.privateKey)), kid: `rs-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' },
  ];

  const provider = new Provider(issuer, {
    adapter: memoryAdapter(),
    clients: [
      ...o.clients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.clientSecret,
        redirect_uris: [new URL('/auth/callback', c.appUrl).href],
        post_logout_redirect_uris: [new URL('/signed-out', c.appUrl).href],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
      })),
      ...services.map((s) => ({
        client_id: s.clientId,
        client_secret: s.clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      })),
    ],
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: { openid: ['sub'], profile: ['name', roleClaim] },
    // The ID token carries the scopes' claims (the control plane reads the role from it).
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => API_RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'optin', audience, accessTokenTTL: 300, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    extraTokenClaims: (_ctx: unknown, token: { kind?: string; clientId?: string }) => {
      if (token.kind !== 'ClientCredentials') return undefined;
      const s = services.find((x) => x.clientId === token.clientId);
      return s === undefined ? undefined : { [roleClaim]: s.roles };
    },
    findAccount: (_ctx: unknown, id: string) => {
      const u = users.find((x) => x.sub === id);
      if (u === undefined) return undefined;
      return { accountId: u.sub, claims: async () => ({ sub: u.sub, name: u.name, [roleClaim]: u.roles }) };
    },
    ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 600, AccessToken: 600, AuthorizationCode: 60, ClientCredentials: 300 },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    renderError: async (ctx: { type: string; body: string }, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in error</title></head><body><main><h1>Sign-in error</h1><p>${escape(out.error ?? '')}: ${escape(out.error_description ?? '')}</p></main></body></html>`;
    },
  } as Record<string, unknown>);
  const handle = provider.callback();

  const interaction = async (req: IncomingMessage, res: ServerResponse, uid: string, action: string | undefined): Promise<void> => {
    let details: InteractionDetails;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('This sign-in has expired; start again from the application.');
      return;
    }
    if (details.prompt.name === 'consent') {
      // First-party application: consent is implied by the contact centre's contract, not asked.
      const grant = new provider.Grant({ accountId: details.session!.accountId!, clientId: String(details.params.client_id) });
      grant.addOIDCScope(String(details.params.scope ?? 'openid'));
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (action === 'login' && req.method === 'POST') {
      const form = await readForm(req);
      const user = users.find((u) => u.login === form.get('login'));
      if (user === undefined || form.get('password') !== DEMO_PASSWORD) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginPage(uid, users, 'Unknown user name or wrong password.'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(loginPage(uid, users));
  };

  server.on('request', (req, res) => {
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?$/.exec((req.url ?? '').split('?')[0] ?? '');
    if (m !== null) {
      interaction(req, res, m[1]!, m[2]).catch(() => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('sign-in failed');
      });
      return;
    }
    handle(req, res);
  });

  return {
    issuer,
    users,
    async serviceToken(clientId, clientSecret) {
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: API_RESOURCE, scope: 'optin' }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!res.ok || body.access_token === undefined) throw new Error(`client credentials refused: ${body.error ?? res.status} ${body.error_description ?? ''}`);
      return body.access_token;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
