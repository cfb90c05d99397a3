import { ROLE_NAMES, type Principal, type Role } from '../access/roles.ts';
import { html, type Html } from './html.ts';

/**
 * The frame of every page: a skip link, the role's navigation (only the pages that role may
 * open), who is signed in and the sign-out button (a POST with the CSRF token), then the page.
 * No inline script or style anywhere (the CSP forbids them): behaviour comes from /assets/app.js,
 * looks from /static/app.css.
 */

export interface PageFrame {
  title: string;
  principal?: Principal;
  csrfToken?: string;
  /** The current path, to mark the navigation entry. */
  path: string;
  /** The hashed URL of the client bundle. */
  scriptUrl: string;
  body: Html;
  /** A notice shown above the page (after a form), politely announced. */
  flash?: string;
}

export const NAV: Readonly<Record<Role, ReadonlyArray<{ href: string; label: string }>>> = Object.freeze({
  agent: [
    { href: '/recordings', label: 'My recordings' },
    { href: '/deletion-requests', label: 'My deletion requests' },
  ],
  'team-lead': [
    { href: '/recordings', label: "My team's recordings" },
    { href: '/deletion-requests', label: 'Deletion requests' },
  ],
  dpo: [
    { href: '/compliance', label: 'Compliance report' },
    { href: '/spot-check', label: 'Spot check' },
    { href: '/audit', label: 'Audit trail' },
    { href: '/recordings', label: 'Recordings' },
  ],
  'extract-operator': [{ href: '/extracts', label: 'Subject-access extracts' }],
});

/** Where each role starts after signing in. */
export const HOME: Readonly<Record<Role, string>> = Object.freeze({ agent: '/recordings', 'team-lead': '/recordings', dpo: '/compliance', 'extract-operator': '/extracts' });

export function page(f: PageFrame): Html {
  const nav = f.principal === undefined ? [] : NAV[f.principal.role];
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${f.title} · optin</title>
<link rel="stylesheet" href="/static/app.css">
<script type="module" src="${f.scriptUrl}"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <p class="brand"><a href="/">optin</a> <span class="tagline">training recordings</span></p>
  ${
    f.principal === undefined
      ? ''
      : html`<nav aria-label="Main">
    <ul>${nav.map((n) => html`<li><a href="${n.href}"${f.path === n.href || f.path.startsWith(`${n.href}/`) ? html` aria-current="page"` : ''}>${n.label}</a></li>`)}</ul>
  </nav>
  <form class="who" method="post" action="/signout">
    <span>Signed in as <strong>${f.principal.sub}</strong> (${ROLE_NAMES[f.principal.role]})</span>
    <input type="hidden" name="_csrf" value="${f.csrfToken ?? ''}">
    <button type="submit">Sign out</button>
  </form>`
  }
</header>
<main id="main" tabindex="-1">
${f.flash === undefined ? '' : html`<p class="flash" role="status">${f.flash}</p>`}
${f.body}
</main>
<footer class="foot"><p>Recordings serve agent training and coaching only. Every access is recorded in the audit trail.</p></footer>
</body>
</html>`;
}
