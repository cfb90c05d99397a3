import { html, type Html } from '../html.ts';

/** Sign-in, signed-out and error pages. */

export function signInPage(o: { returnTo: string; message?: string; configured: boolean }): Html {
  return html`<h1>Sign in</h1>
${o.message === undefined ? '' : html`<p class="error" role="alert">${o.message}</p>`}
${
  o.configured
    ? html`<p class="lead">Sign in with your contact centre account. Your role (agent, team lead, data-protection officer, extract operator) comes from it.</p>
<p><a class="button" href="/auth/login?returnTo=${encodeURIComponent(o.returnTo)}">Sign in with your organisation</a></p>`
    : html`<p class="lead">Sign-in is not configured on this control plane (OPTIN_OIDC_ISSUER, OPTIN_OIDC_CLIENT_ID).</p>`
}`;
}

export function signedOutPage(): Html {
  return html`<h1>Signed out</h1><p class="lead">Your session has ended.</p><p><a class="button" href="/signin">Sign in again</a></p>`;
}

export function errorPage(o: { status: number; title: string; message: string }): Html {
  return html`<h1>${o.title}</h1><p class="lead" data-status="${o.status}">${o.message}</p><p><a href="/">Back to the start</a></p>`;
}
