/**
 * Sign-in to the web app with fetch alone (no browser): follows the app's redirect to the OpenID
 * provider, posts the provider's login form, follows the code back to the app and keeps the
 * session cookie. No vitest imports, so benchmarks can use it too.
 */

export interface WebSession {
  cookie: string;
  csrf: string;
  fetch(path: string, init?: RequestInit & { csrf?: boolean }): Promise<Response>;
}

/** Follows a sign-in with fetch: the app, the provider's login form, back to the app. */
export async function fetchSignIn(appUrl: string, login: string, password: string): Promise<WebSession> {
  const jars = new Map<string, Map<string, string>>();
  const jar = (u: URL): Map<string, string> => {
    let j = jars.get(u.host);
    if (j === undefined) jars.set(u.host, (j = new Map()));
    return j;
  };
  const cookieHeader = (u: URL): string => [...jar(u)].map(([k, v]) => `${k}=${v}`).join('; ');
  const keep = (u: URL, res: Response): void => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = pair!.slice(i + 1).trim();
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(c)) jar(u).delete(name);
      else jar(u).set(name, value);
    }
  };
  let url = new URL('/auth/login?returnTo=%2F', appUrl);
  let method = 'GET';
  let body: string | undefined;
  for (let hop = 0; hop < 20; hop++) {
    const res = await fetch(url, { method, redirect: 'manual', headers: { cookie: cookieHeader(url), ...(body === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded' }) }, ...(body === undefined ? {} : { body }) });
    keep(url, res);
    method = 'GET';
    body = undefined;
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location')!, url);
      continue;
    }
    const text = await res.text();
    const form = /<form method="post" action="([^"]+)"/.exec(text);
    if (res.status === 200 && form !== null && url.origin !== new URL(appUrl).origin) {
      url = new URL(form[1]!.replace(/&amp;/g, '&'), url);
      method = 'POST';
      body = new URLSearchParams({ login, password }).toString();
      continue;
    }
    if (url.origin === new URL(appUrl).origin && jar(url).has('__Host-optin-session')) break;
    const why = /role="alert">([^<]*)</.exec(text)?.[1] ?? text.slice(0, 300);
    throw new Error(`sign-in of ${login} stopped at ${url.pathname} with ${res.status}: ${why}`);
  }
  const app = new URL(appUrl);
  const cookie = `__Host-optin-session=${jar(app).get('__Host-optin-session')}`;
  const me = (await (await fetch(new URL('/api/me', appUrl), { headers: { cookie } })).json()) as { csrfToken: string };
  return {
    cookie,
    csrf: me.csrfToken,
    fetch(path, init = {}) {
      const headers = new Headers(init.headers);
      headers.set('cookie', cookie);
      if (init.csrf !== false && init.method !== undefined && init.method !== 'GET') headers.set('x-csrf-token', me.csrfToken);
      return fetch(new URL(path, appUrl), { ...init, headers, redirect: 'manual' });
    },
  };
}

