import type { ListEntry, RecordingDetail } from '../../access/AccessService.ts';
import { durationWords, expiresInWords } from '../../access/consentWords.ts';
import type { DeletionRequest } from '../../access/DeletionRequests.ts';
import type { Principal } from '../../access/roles.ts';
import { offsetWords } from '../../access/timeline.ts';
import { html, jsonBlock, type Html } from '../html.ts';
import { time, when } from './format.ts';

/**
 * The recordings pages: the list (an agent's own, a team lead's team, the DPO's metadata view)
 * and one recording (its facts, the consent evidence in words, the purpose question, and the
 * coaching player for the agent and their team lead).
 */

const REQUEST_WORDS: Record<string, string> = { pending: 'Deletion asked for: waiting for your team lead', deleted: 'Deleted at your request', closed: 'Request closed (the recording went another way)' };

function agentCell(e: ListEntry): Html {
  const agents = e.participants.filter((p) => p.role === 'agent');
  return html`${agents.map((a, i) => html`${i > 0 ? ', ' : ''}${a.erased ? 'erased agent' : (a.subjectId ?? 'agent')}`)}`;
}

function requestCell(p: Principal, e: ListEntry, csrf: string): Html {
  if (p.role !== 'agent') return html``;
  if (e.deletionRequest !== undefined) return html`<span class="status">${REQUEST_WORDS[e.deletionRequest.state] ?? e.deletionRequest.state}</span>`;
  return html`<form method="post" action="/recordings/${e.recordingId}/deletion-request" class="inline">
    <input type="hidden" name="_csrf" value="${csrf}">
    <button type="submit" aria-label="Ask my team lead to delete this: the recording of ${when(e.startedAt)}">Ask my team lead to delete this</button>
  </form>`;
}

export function recordingsPage(o: { principal: Principal; entries: ListEntry[]; nextCursor?: string; csrfToken: string; nowMs: number }): Html {
  const p = o.principal;
  const title = p.role === 'agent' ? 'My recordings' : p.role === 'team-lead' ? "My team's recordings" : 'Recordings (metadata)';
  const intro =
    p.role === 'agent'
      ? 'Your recorded training calls. Only you and your team lead can play them; each one is deleted automatically when it expires, or earlier if you ask.'
      : p.role === 'team-lead'
        ? 'Recorded training calls of the agents you coach. Playing one asks why, and is recorded in the audit trail.'
        : 'Every recording the catalogue holds, newest first. Metadata only: audio is never available to the DPO.';
  return html`<h1>${title}</h1>
<p class="lead">${intro}</p>
${
  o.entries.length === 0
    ? html`<p class="empty">No recordings${o.nextCursor === undefined ? '' : ' on this page'}.</p>`
    : html`<table class="list">
  <caption class="visually-hidden">${title}, newest first</caption>
  <thead><tr>
    <th scope="col">Date</th><th scope="col">Duration</th><th scope="col">Expires</th>
    ${p.role === 'agent' ? '' : html`<th scope="col">Agent</th>`}
    <th scope="col">Consent evidence</th>
    ${p.role === 'agent' ? html`<th scope="col">Deletion</th>` : ''}
    <th scope="col"><span class="visually-hidden">Open</span></th>
  </tr></thead>
  <tbody>
  ${o.entries.map(
    (e) => html`<tr data-recording="${e.recordingId}">
    <td>${time(e.startedAt)}</td>
    <td>${e.durationMs === null ? 'still recording' : durationWords(e.durationMs)}</td>
    <td>${expiresInWords(e.expiresAt, o.nowMs)}</td>
    ${p.role === 'agent' ? '' : html`<td>${agentCell(e)}</td>`}
    <td class="consent">${e.consent.map((c) => html`<p>${c}</p>`)}</td>
    ${p.role === 'agent' ? html`<td>${requestCell(p, e, o.csrfToken)}</td>` : ''}
    <td><a href="/recordings/${e.recordingId}" aria-label="${p.role === 'dpo' ? 'Details' : 'Open'}: the recording of ${when(e.startedAt)}">${p.role === 'dpo' ? 'Details' : 'Open'}</a></td>
  </tr>`,
  )}
  </tbody>
</table>`
}
${o.nextCursor === undefined ? '' : html`<p class="pager"><a href="/recordings?cursor=${encodeURIComponent(o.nextCursor)}" rel="next">Older recordings</a></p>`}`;
}

function requestPanel(detail: RecordingDetail, recordingId: string, csrf: string): Html {
  if (!detail.may.requestDeletion) return html``;
  const r: DeletionRequest | undefined = detail.deletionRequest;
  return html`<section aria-labelledby="del-h">
  <h2 id="del-h">Deletion</h2>
  ${
    r === undefined
      ? html`<p>You can ask your team lead to delete this recording now, before it expires.</p>
  <form method="post" action="/recordings/${recordingId}/deletion-request"><input type="hidden" name="_csrf" value="${csrf}"><button type="submit">Ask my team lead to delete this</button></form>`
      : html`<p class="status" data-request-state="${r.state}">${REQUEST_WORDS[r.state] ?? r.state} (asked ${when(r.requestedAt)}).</p>`
  }
</section>`;
}

function deletePanel(detail: RecordingDetail, recordingId: string, csrf: string): Html {
  if (!detail.may.delete) return html``;
  const asked = detail.deletionRequest?.state === 'pending';
  return html`<section aria-labelledby="del-h">
  <h2 id="del-h">Deletion</h2>
  <p>${asked ? 'The agent asked for this recording to be deleted.' : 'You may delete this recording now; it cannot be undone.'}</p>
  <form method="post" action="/recordings/${recordingId}/delete"><input type="hidden" name="_csrf" value="${csrf}"><button type="submit" class="danger">Delete this recording now</button></form>
</section>`;
}

export function recordingPage(o: { principal: Principal; recordingId: string; detail: RecordingDetail; purpose?: string; csrfToken: string; styleNonce: string; nowMs: number }): Html {
  const { view, timeline } = o.detail;
  const startedMs = Date.parse(view.startedAt);
  const agents = view.participants.filter((x) => x.role === 'agent');
  const customers = view.participants.filter((x) => x.role === 'customer');
  const playUrl = o.purpose === undefined ? '' : `/api/recordings/${o.recordingId}/play?purpose=${encodeURIComponent(o.purpose)}`;
  return html`<h1>Recording of ${when(startedMs)}</h1>
<dl class="facts">
  <dt>Duration</dt><dd>${durationWords(view.durationMs)}</dd>
  <dt>Expires</dt><dd>${expiresInWords(Date.parse(view.expiresAt), o.nowMs)} (${time(Date.parse(view.expiresAt))})</dd>
  <dt>Agent</dt><dd>${agents.map((a, i) => html`${i > 0 ? ', ' : ''}${a.erased ? 'erased' : (a.subjectId ?? 'agent')}`)}</dd>
  <dt>Customer</dt><dd>${customers.map((c, i) => html`${i > 0 ? ', ' : ''}${c.erased ? 'erased at their request' : (c.subjectId ?? 'the customer')}`)}</dd>
  ${view.callId === undefined ? '' : html`<dt>Call</dt><dd>${view.callId}</dd>`}
  <dt>Recording id</dt><dd><code>${o.recordingId}</code></dd>
</dl>
<section aria-labelledby="consent-h">
  <h2 id="consent-h">Consent evidence</h2>
  ${o.detail.consent.map((c) => html`<p>${c}</p>`)}
</section>
${
  !o.detail.may.play
    ? ''
    : o.purpose === undefined
      ? html`<section aria-labelledby="purpose-h">
  <h2 id="purpose-h">Listen</h2>
  <form method="get" action="/recordings/${o.recordingId}" class="purpose">
    <fieldset>
      <legend>Why are you listening to this recording? (recorded in the audit trail)</legend>
      <label><input type="radio" name="purpose" value="coaching" required> Coaching the agent</label>
      <label><input type="radio" name="purpose" value="training"> Training</label>
    </fieldset>
    <button type="submit">Continue to the player</button>
  </form>
</section>`
      : html`<section aria-labelledby="player-h" class="player" data-player data-audio-url="${playUrl}" data-style-nonce="${o.styleNonce}" data-duration-ms="${timeline?.durationMs ?? view.durationMs}">
  <h2 id="player-h">Coaching player <span class="purpose-note">(purpose: ${o.purpose})</span></h2>
  <p class="channels"><span class="left-label">Left: agent</span> <span class="right-label">Right: customer</span></p>
  <div class="waveform" data-waveform aria-hidden="true"></div>
  <audio controls preload="none" src="${playUrl}" data-audio>Your browser cannot play this audio.</audio>
  <div class="controls" role="group" aria-label="Player controls">
    <button type="button" data-action="play" aria-keyshortcuts="Space">Play</button>
    <button type="button" data-action="back" aria-keyshortcuts="ArrowLeft">Back 5 s</button>
    <button type="button" data-action="forward" aria-keyshortcuts="ArrowRight">Forward 5 s</button>
    <button type="button" data-action="mute-agent" aria-pressed="false" aria-keyshortcuts="a">Mute agent (left)</button>
    <button type="button" data-action="mute-customer" aria-pressed="false" aria-keyshortcuts="c">Mute customer (right)</button>
    <button type="button" data-action="prev-mark" aria-keyshortcuts="[">Previous mark</button>
    <button type="button" data-action="next-mark" aria-keyshortcuts="]">Next mark</button>
  </div>
  <p class="position" data-position aria-live="off">0:00.0</p>
  <p class="keys" id="player-keys">Keys while the player has focus: Space play or pause, ← and → 5 seconds, A mute the agent, C mute the customer, [ and ] previous and next mark.</p>
  <p class="visually-hidden" role="status" data-status></p>
  ${jsonBlock('timeline', timeline)}
  <h3>Marks on the timeline</h3>
  ${
    timeline === null || timeline.marks.length === 0
      ? html`<p>No gaps, no concealed audio.</p>`
      : html`<ol class="marks">${timeline.marks.map(
          (m) => html`<li class="mark mark-${m.kind}"><button type="button" data-seek="${(m.startMs / 1000).toFixed(3)}">${offsetWords(m.startMs)}</button> <span>${m.kind === 'consent' ? 'Consent' : m.kind === 'gap' ? 'Gap' : 'Concealed'}: ${m.label}</span></li>`,
        )}</ol>`
  }
</section>`
}
${o.principal.role === 'agent' ? requestPanel(o.detail, o.recordingId, o.csrfToken) : ''}
${o.principal.role === 'team-lead' ? deletePanel(o.detail, o.recordingId, o.csrfToken) : ''}
${o.detail.may.accessLog ? html`<p><a href="/recordings/${o.recordingId}/access-log">Who accessed this recording</a></p>` : ''}`;
}
