import type { ExtractJob } from '../../access/ExtractJobs.ts';
import { html, type Html } from '../html.ts';
import { time } from './format.ts';

/** The extract operator's pages: a subject-access request becomes a job; a job's progress and its package. */

const STATE_WORDS: Record<string, string> = {
  queued: 'Queued',
  running: 'Running',
  ready: 'Ready to download',
  failed: 'Failed',
  expired: 'Expired: start it again',
  withdrawn: 'Withdrawn: a recording in it was deleted or its subject erased',
};

export function extractsPage(o: { jobs: ExtractJob[]; csrfToken: string; error?: string; values?: { subjectId?: string; caseRef?: string } }): Html {
  return html`<h1>Subject-access extracts</h1>
<p class="lead">One person's own voice from their recordings, with a manifest of what was processed, when, why and until when (R12). Nothing of any other speaker.</p>
<form method="post" action="/extracts" class="stack" novalidate>
  <input type="hidden" name="_csrf" value="${o.csrfToken}">
  ${o.error === undefined ? '' : html`<p class="error" role="alert" id="extract-error">${o.error}</p>`}
  <p><label for="subjectId">Subject id (the person's pseudonymous id)</label>
  <input id="subjectId" name="subjectId" required pattern="[A-Za-z0-9_-]{1,64}" autocomplete="off" value="${o.values?.subjectId ?? ''}"${o.error === undefined ? '' : html` aria-describedby="extract-error"`}></p>
  <p><label for="caseRef">Case reference of the request</label>
  <input id="caseRef" name="caseRef" required pattern="[A-Za-z0-9_-]{1,64}" autocomplete="off" value="${o.values?.caseRef ?? ''}"></p>
  <fieldset><legend>Audio format</legend>
    <label><input type="radio" name="format" value="ogg" checked> Ogg Opus (as recorded)</label>
    <label><input type="radio" name="format" value="wav"> WAV</label>
  </fieldset>
  <p><button type="submit">Start the extract</button></p>
</form>
<h2>My extracts</h2>
${
  o.jobs.length === 0
    ? html`<p class="empty">None yet.</p>`
    : html`<table class="list"><caption class="visually-hidden">My extracts</caption>
<thead><tr><th scope="col">Started</th><th scope="col">Case</th><th scope="col">Subject</th><th scope="col">Status</th></tr></thead>
<tbody>${o.jobs.map((j) => html`<tr data-job="${j.id}"><td>${time(j.createdAt)}</td><td><a href="/extracts/${j.id}">${j.caseRef}</a></td><td>${j.subjectId}</td><td>${STATE_WORDS[j.state] ?? j.state}</td></tr>`)}</tbody></table>`
}`;
}

export function extractJobPage(o: { job: ExtractJob; nowMs: number }): Html {
  const j = o.job;
  const pct = j.progress.total === 0 ? (j.state === 'ready' ? 100 : 0) : Math.round((100 * j.progress.done) / j.progress.total);
  return html`<p><a href="/extracts">All extracts</a></p>
<h1>Extract for case ${j.caseRef}</h1>
<section data-extract="${j.id}" data-state="${j.state}" data-case-ref="${j.caseRef}">
<dl class="facts">
  <dt>Subject</dt><dd>${j.subjectId}</dd>
  <dt>Format</dt><dd>${j.format === 'wav' ? 'WAV' : 'Ogg Opus'}</dd>
  <dt>Started</dt><dd>${time(j.createdAt)}</dd>
  <dt>Status</dt><dd data-job-state aria-live="polite">${STATE_WORDS[j.state] ?? j.state}${j.error === undefined ? '' : html`: ${j.error}`}</dd>
</dl>
<p><label for="progress">Progress</label> <progress id="progress" max="100" value="${pct}" data-progress>${pct}%</progress> <span data-progress-text>${j.progress.done} of ${j.progress.total} segments</span></p>
<div data-files>${j.state === 'ready' ? filesList(j, o.nowMs) : ''}</div>
</section>`;
}

export function filesList(j: ExtractJob, nowMs: number): Html {
  return html`<h2>Package</h2>
<p>Download each file; the package ${j.expiresAt === undefined ? 'expires soon' : html`expires ${time(j.expiresAt)} (in ${Math.max(0, Math.round((j.expiresAt - nowMs) / 60_000))} min)`} and is withdrawn at once if a recording in it is deleted or its subject erased.</p>
<ul class="files">${j.files.map(
    (f) => html`<li><a href="/api/extracts/${j.id}/files/${encodeURIComponent(f.name)}?caseRef=${encodeURIComponent(j.caseRef)}" download="${f.name}">${f.name}</a> (${f.bytes} bytes, sha256 <code>${f.sha256.slice(0, 16)}…</code>)</li>`,
  )}</ul>`;
}
