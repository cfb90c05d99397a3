import type { DeletionStatus } from '../../access/AccessService.ts';
import type { DeletionRequest } from '../../access/DeletionRequests.ts';
import type { Principal } from '../../access/roles.ts';
import { html, type Html } from '../html.ts';
import { time, when } from './format.ts';

/** Deletion requests (the team lead's queue, the agent's own, the DPO's view) and a deletion's receipt. */

const STATE_WORDS: Record<string, string> = { pending: 'Waiting for the team lead', deleted: 'Deleted', closed: 'Closed: the recording expired or was deleted another way' };

export function deletionRequestsPage(o: { principal: Principal; requests: DeletionRequest[]; csrfToken: string }): Html {
  const p = o.principal;
  if (p.role === 'agent') {
    return html`<h1>My deletion requests</h1>
<p class="lead">Recordings you asked your team lead to delete, and what became of each request.</p>
${
  o.requests.length === 0
    ? html`<p class="empty">You have not asked for any deletion.</p>`
    : html`<table class="list"><caption class="visually-hidden">My deletion requests</caption>
<thead><tr><th scope="col">Asked</th><th scope="col">Recording</th><th scope="col">Status</th><th scope="col">Closed</th></tr></thead>
<tbody>${o.requests.map(
        (r) => html`<tr data-recording="${r.recordingId}"><td>${time(r.requestedAt)}</td><td><code>${r.recordingId}</code></td><td class="status" data-state="${r.state}">${STATE_WORDS[r.state] ?? r.state}</td><td>${r.closedAt === undefined ? '' : time(r.closedAt)}</td></tr>`,
      )}</tbody></table>`
}`;
  }
  const title = p.role === 'team-lead' ? 'Deletion requests from your agents' : 'Pending deletion requests';
  return html`<h1>${title}</h1>
<p class="lead">${p.role === 'team-lead' ? 'An agent asked you to delete each of these recordings (R9). Deleting takes one click; the receipt follows.' : 'Requests agents have made and their team leads have not yet carried out.'}</p>
${
  o.requests.length === 0
    ? html`<p class="empty">No pending requests.</p>`
    : html`<table class="list"><caption class="visually-hidden">${title}</caption>
<thead><tr><th scope="col">Asked</th><th scope="col">Agent</th><th scope="col">Recording</th>${p.role === 'team-lead' ? html`<th scope="col">Action</th>` : html`<th scope="col">Team leads</th>`}</tr></thead>
<tbody>${o.requests.map(
        (r) => html`<tr data-recording="${r.recordingId}"><td>${time(r.requestedAt)}</td><td>${r.requestedBy}</td><td><a href="/recordings/${r.recordingId}">${r.recordingId}</a></td>
${
  p.role === 'team-lead'
    ? html`<td><form method="post" action="/recordings/${r.recordingId}/delete" class="inline"><input type="hidden" name="_csrf" value="${o.csrfToken}"><button type="submit" class="danger" aria-label="Delete: the recording ${r.recordingId}, asked for by ${r.requestedBy} on ${when(r.requestedAt)}">Delete</button></form></td>`
    : html`<td>${r.teamLeadIds.join(', ')}</td>`
}</tr>`,
      )}</tbody></table>`
}`;
}

export function deletionReceiptPage(o: { status: DeletionStatus }): Html {
  const s = o.status;
  const r = s.receipt;
  return html`<h1>Deletion of ${s.recordingId}</h1>
<section data-deletion="${s.deletionId}" data-state="${s.state}" aria-live="polite">
<p class="status" data-deletion-state>${s.state === 'done' ? 'Done: the recording, its keys and every copy are gone.' : 'Accepted: the recording is no longer listed or playable. The store deletion is being carried out; this page updates by itself.'}</p>
<dl class="facts">
  <dt>Deletion id</dt><dd><code>${s.deletionId}</code></dd>
  <dt>Asked</dt><dd>${time(s.requestedAt)}</dd>
  <dt>Completed</dt><dd data-completed>${s.completedAt === null ? 'not yet' : time(s.completedAt)}</dd>
</dl>
<h2>Receipt</h2>
<div data-receipt>${r === null ? html`<p>The receipt appears when the deletion is complete.</p>` : receiptTable(r)}</div>
</section>
<p><a href="/deletion-requests">Back to the deletion requests</a></p>`;
}

export function receiptTable(r: NonNullable<DeletionStatus['receipt']>): Html {
  return html`<table class="list"><caption class="visually-hidden">Store receipts</caption>
<thead><tr><th scope="col">Receipt</th><th scope="col">Data keys destroyed</th><th scope="col">Media objects deleted</th><th scope="col">Manifest</th><th scope="col">Nothing left</th></tr></thead>
<tbody>${r.storeReceipts.map((x) => html`<tr><td><code>${x.receiptId}</code></td><td>${x.dataKeysDestroyed}</td><td>${x.mediaObjects}</td><td>${String(x.manifest)}</td><td>${x.nothingLeft ? 'yes' : 'no'}</td></tr>`)}</tbody></table>
<p>Confirmed by ${r.confirmedBy.length === 0 ? 'the control plane alone (no recorder held the recording)' : r.confirmedBy.map((c) => c.workerId).join(', ')}; completed by ${r.completedBy}.</p>`;
}
