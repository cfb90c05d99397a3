/**
 * The people's side of `npm run demo`: a local OpenID provider (scripts/devIdp, oidc-provider)
 * with one demo user per role, and the settings that put the control plane's web app and access
 * API behind it. The demo's control plane takes `controlPlaneOverrides`; when the call is
 * recorded, `serve` prints where to sign in and, in a terminal, keeps everything up until Ctrl-C.
 *
 * Open the app at http://localhost:<port>, not 127.0.0.1: the session cookie is `__Host-` and
 * Secure, which browsers accept over plain HTTP only for localhost (a potentially trustworthy
 * origin); production serves HTTPS.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { DEMO_PASSWORD, DEMO_USERS, startDevIdp, type DevIdp, type DevUser } from '../scripts/devIdp/devIdp.ts';
import { getRecording } from '../src/catalogue/Catalogue.ts';
import type { ControlPlane } from '../src/controlplane/ControlPlane.ts';

export interface WebDemo {
  appUrl: string;
  idp: DevIdp;
  users: readonly DevUser[];
  /** For loadControlPlaneConfig: the app's public URL and port, and the provider as its OpenID issuer. */
  controlPlaneOverrides: Record<string, unknown>;
  close(): Promise<void>;
}

const ROLE_WORDS: Record<string, string> = {
  agent: 'agent: my recordings, the coaching player, ask my team lead to delete',
  'team-lead': "team lead: my team's recordings, the coaching player (a purpose first), the deletion queue",
  dpo: 'DPO: the compliance report per rule, audit verification, spot check, access logs',
  'extract-operator': 'extract operator: subject-access extracts (one speaker, with its manifest)',
};

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the provider. `agentSubject` and `leadSubject` are the pseudonymous ids the demo's call
 * carries, so the demo agent and team lead see the recording the demo makes.
 */
export async function startWebDemo(o: { port?: number; agentSubject: string; leadSubject: string }): Promise<WebDemo> {
  const port = o.port ?? (await freePort());
  const appUrl = `http://localhost:${port}`;
  const users = DEMO_USERS.map((u) => (u.login === 'agent' ? { ...u, sub: o.agentSubject } : u.login === 'lead' ? { ...u, sub: o.leadSubject } : u));
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startDevIdp({ users, clients: [{ clientId: 'optin-web', clientSecret, appUrl }] });
  return {
    appUrl,
    idp,
    users,
    controlPlaneOverrides: {
      'http.port': port,
      'access.publicUrl': appUrl,
      'access.oidc.issuer': idp.issuer,
      'access.oidc.clientId': 'optin-web',
      'access.oidc.clientSecret': clientSecret,
    },
    close: () => idp.close(),
  };
}

/** Waits until the recorder's `recording.report` has listed the recording in the catalogue (what the web app lists). */
export async function waitForCatalogue(cp: ControlPlane, recordingId: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await getRecording(cp.db, recordingId)) !== undefined) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/**
 * Prints where to sign in as each role; in a terminal, waits for Ctrl-C (else holds `holdSeconds`,
 * default 0). `wait: false` only prints (another part of the demo waits).
 */
export async function serveWebDemo(web: WebDemo, say: (s: string) => void, o: { holdSeconds?: number; wait?: boolean } = {}): Promise<void> {
  say(`web app: ${web.appUrl}/  (open it as localhost; the OpenID provider runs at ${web.idp.issuer})`);
  say(`sign in with one of these demo users, password "${DEMO_PASSWORD}":`);
  for (const u of web.users) say(`  ${u.login.padEnd(8)} ${u.roles.map((r) => ROLE_WORDS[r] ?? r).join('; ')}`);
  say(`API documentation (OpenAPI): ${web.appUrl}/v1/openapi.json`);
  if (o.wait === false) return;
  if (process.stdin.isTTY) {
    say('Ctrl-C to stop');
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  } else if ((o.holdSeconds ?? 0) > 0) {
    await new Promise((resolve) => setTimeout(resolve, o.holdSeconds! * 1000));
  }
}
