import type { AuditEntry, AuditVerifyResult } from '../../audit/AuditTrail.ts';
import type { RuleSection } from '../../compliance/byRule.ts';
import type { SpotCheckItem } from '../../access/spotCheck.ts';
import { html, type Html } from '../html.ts';
import { time, verdictBadge } from './format.ts';

/** The DPO's pages: the compliance report per rule, one rule's violations, audit verification, the spot check, a recording's access log. */

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function evidence(e: { [k: string]: Json }): Html {
  return html`<dl class="evidence">${Object.entries(e).map(([k, v]) => html`<dt>${k}</dt><dd>${typeof v === 'object' && v !== null ? html`<code>${JSON.stringify(v)}</code>` : String(v)}</dd>`)}</dl>`;
}

export function compliancePage(o: { generatedAt: string; ok: boolean; scope: Record<string, number>; sections: RuleSection[]; notes: string[] }): Html {
  return html`<h1>Compliance report</h1>
<p class="lead">Generated ${time(Date.parse(o.generatedAt))} over ${o.scope.recordings ?? 0} recording(s) and ${o.scope.auditEntries ?? 0} audit entries.
${o.ok ? 'Every checked rule holds.' : html`<strong>Some rules are violated: open them for the evidence.</strong>`}</p>
<table class="list rules"><caption>Rules R3 to R11</caption>
<thead><tr><th scope="col">Rule</th><th scope="col">What it requires</th><th scope="col">Status</th><th scope="col">Violations</th></tr></thead>
<tbody>${o.sections.map(
    (s) => html`<tr data-rule="${s.rule}" data-status="${s.status}"><th scope="row"><a href="/compliance/${s.rule}">${s.rule}</a></th><td>${s.title}</td><td>${verdictBadge(s.status)}</td><td>${s.checks.reduce((n, c) => n + c.violations.length, 0)}</td></tr>`,
  )}</tbody></table>
${o.notes.length === 0 ? '' : html`<h2>Notes</h2><ul>${o.notes.map((n) => html`<li>${n}</li>`)}</ul>`}`;
}

export function complianceRulePage(o: { section: RuleSection }): Html {
  const s = o.section;
  return html`<p><a href="/compliance">All rules</a></p>
<h1>${s.rule}: ${s.title}</h1>
<p class="lead">${verdictBadge(s.status)}</p>
${s.note === undefined ? '' : html`<p>${s.note}</p>`}
${s.checks.map(
  (c) => html`<section class="check" data-check="${c.check}" aria-labelledby="c-${c.check}">
  <h2 id="c-${c.check}">${c.description} ${verdictBadge(c.status)}</h2>
  ${c.violations.length === 0 ? html`<p>No violations.</p>` : ''}
  ${c.violations.map(
    (v, i) => html`<article class="violation" aria-labelledby="v-${c.check}-${i}">
    <h3 id="v-${c.check}-${i}">${v.recordingId === undefined ? 'Violation' : html`Recording <a href="/recordings/${v.recordingId}">${v.recordingId}</a>`}</h3>
    <p>${v.message}</p>
    ${evidence(v.evidence)}
  </article>`,
  )}
  ${c.unverifiable.length === 0 ? '' : html`<h3>Could not be verified</h3><ul>${c.unverifiable.map((u) => html`<li>${u.recordingId === undefined ? '' : html`<code>${u.recordingId}</code>: `}${u.reason}</li>`)}</ul>`}
</section>`,
)}`;
}

type StreamLine = Omit<AuditVerifyResult['streams'][number], 'brokenAt'> & { brokenAt?: AuditVerifyResult['streams'][number]['brokenAt'] & { explanation?: string } };
type Verify = Omit<AuditVerifyResult, 'streams'> & { streams: StreamLine[] };

export function auditPage(o: { result: Verify }): Html {
  const r = o.result;
  return html`<h1>Audit trail</h1>
<p class="lead" data-audit-ok="${String(r.ok)}">${r.ok ? html`Every stream verifies: <strong>${r.entries}</strong> entries, unbroken from the first to the head.` : html`<strong>The trail is broken.</strong> The first break is shown below with its stream and position.`}</p>
<table class="list"><caption>Streams (one per writer)</caption>
<thead><tr><th scope="col">Stream</th><th scope="col">Entries verified</th><th scope="col">Last entry</th><th scope="col">Status</th><th scope="col">Where it breaks</th></tr></thead>
<tbody>${r.streams.map(
    (s) => html`<tr data-stream="${s.stream}" data-ok="${String(s.ok)}"><th scope="row"><code>${s.stream}</code></th><td>${s.entries}</td><td>${s.lastSeq}</td><td>${verdictBadge(s.ok ? 'holds' : 'violated')}</td>
<td>${s.brokenAt === undefined ? '' : html`entry <strong>${s.brokenAt.seq}</strong>: ${s.brokenAt.explanation ?? s.brokenAt.reason} <span class="detail">(${s.brokenAt.reason}; ${s.brokenAt.detail})</span>`}</td></tr>`,
  )}</tbody></table>
<p>Limits: a rollback to an older valid head with the newer entries deleted cannot be seen from the bucket alone; note the head hashes of each verification elsewhere.</p>`;
}

function row(label: string, v: { verdict: string; detail: string }, extra?: Html): Html {
  return html`<tr><th scope="row">${label}</th><td>${verdictBadge(v.verdict)}</td><td>${v.detail}${extra ?? ''}</td></tr>`;
}

export function spotCheckPage(o: { items: SpotCheckItem[]; n: number }): Html {
  return html`<h1>Spot check</h1>
<p class="lead">${o.items.length} recording(s) drawn at random. Metadata only: consent, window, cap and expiry, never audio.</p>
<form method="get" action="/spot-check" class="inline"><label>Sample size <input type="number" name="n" min="1" max="50" value="${o.n}"></label> <button type="submit">Draw again</button></form>
${o.items.map(
  (i) => html`<section class="spot" data-recording="${i.recordingId}" aria-labelledby="s-${i.recordingId}">
  <h2 id="s-${i.recordingId}">Recording <a href="/recordings/${i.recordingId}">${i.recordingId}</a>, ${time(Date.parse(i.startedAt))}</h2>
  <table class="list"><caption class="visually-hidden">Checks of ${i.recordingId}</caption>
  <thead><tr><th scope="col">Check</th><th scope="col">Verdict</th><th scope="col">Evidence</th></tr></thead>
  <tbody>
  ${row('Consent (R3, R4)', i.consent, html`${i.consent.words.map((w) => html`<br>${w}`)}`)}
  ${row('Training window (R6)', i.window, i.window.windows.length === 0 ? undefined : html`<br>Windows: ${i.window.windows.map((w) => `${w.start} to ${w.end}`).join('; ')}`)}
  ${row('Monthly cap (R6)', i.cap)}
  ${row('Expiry (R8)', i.expiry, html`<br>Expires ${time(Date.parse(i.expiry.expiresAt))}`)}
  </tbody></table>
  <p><a href="/recordings/${i.recordingId}/access-log">Access log</a></p>
</section>`,
)}`;
}

export function accessLogPage(o: { recordingId: string; entries: AuditEntry[]; state?: string }): Html {
  return html`<h1>Access log of ${o.recordingId}</h1>
<p class="lead">${o.state === undefined ? 'The catalogue no longer holds this recording; its trail remains.' : `Catalogue state: ${o.state}.`} ${o.entries.length} entr${o.entries.length === 1 ? 'y' : 'ies'} in the audit trail.</p>
<table class="list"><caption class="visually-hidden">Audit entries about ${o.recordingId}</caption>
<thead><tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Who</th><th scope="col">Role</th><th scope="col">Purpose</th><th scope="col">Entry</th></tr></thead>
<tbody>${o.entries.map((e) => html`<tr data-type="${e.type}"><td>${time(Date.parse(e.at))}</td><td>${e.type}</td><td>${e.actor}</td><td>${e.role}</td><td>${e.purpose}</td><td><code>${e.stream}#${e.seq}</code></td></tr>`)}</tbody></table>`;
}
