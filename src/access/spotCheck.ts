import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import { consentListInWords, utcWords } from './consentWords.ts';

/**
 * The DPO's random spot check (DESIGN §1: "was every recording lawful?"), one recording at a
 * time: its consent evidence, the window and cap it was admitted under, and its expiry, each
 * with a verdict. Metadata only, never audio (R10). Pure: the facts are gathered by the access
 * service (catalogue, manifest, cap counters) and judged here, with the same tolerances as the
 * compliance report (src/compliance/report.ts).
 */

export type Verdict = 'holds' | 'violated' | 'unverifiable' | 'not-applicable';

export interface SpotCheckItem {
  recordingId: string;
  startedAt: string;
  agentIds: string[];
  consent: { verdict: Verdict; words: string[]; detail: string };
  window: { verdict: Verdict; windows: Array<{ start: string; end: string }>; detail: string };
  cap: { verdict: Verdict; cap?: number; countThatMonth?: number; month: string; detail: string };
  expiry: { verdict: Verdict; expiresAt: string; detail: string };
}

export interface SpotCheckInput {
  recordingId: string;
  startedAtMs: number;
  expiresAtMs: number;
  agentIds: string[];
  /** null: the manifest is gone (deleted or expired since it was sampled). */
  manifest: Pick<RecordingManifest, 'participants' | 'segments' | 'consentEvidence' | 'policy' | 'retentionSeconds'> | null;
  /** Recordings of the (first) agent in the recording's month, as counted by the control plane. */
  countThatMonth?: number;
  month: string;
}

const CONSENT_TOLERANCE_MS = 20;
const WINDOW_TOLERANCE_MS = 60;

export function judgeSpotCheck(x: SpotCheckInput, nowMs: number): SpotCheckItem {
  const m = x.manifest;
  const segs = m?.segments ?? [];
  const firstMs = segs.length === 0 ? undefined : Math.min(...segs.map((s) => s.startWallClockMs));

  // R3/R4.
  let consent: SpotCheckItem['consent'];
  if (m === null) consent = { verdict: 'unverifiable', words: [], detail: 'the manifest is gone (deleted or expired): nothing left to check' };
  else if (!m.participants.some((p) => p.role === 'customer')) consent = { verdict: 'not-applicable', words: [], detail: 'no customer in this call' };
  else {
    const words = consentListInWords(m.consentEvidence);
    const times = m.consentEvidence.map((e) => (typeof e.at === 'number' ? e.at : typeof e.at === 'string' ? Date.parse(e.at) : Number.NaN)).filter(Number.isFinite);
    if (times.length === 0) consent = { verdict: segs.length === 0 ? 'holds' : 'violated', words, detail: segs.length === 0 ? 'nothing was recorded' : 'audio was recorded but no consent evidence is stored' };
    else if (firstMs === undefined) consent = { verdict: 'holds', words, detail: 'nothing was recorded' };
    else {
      const c = Math.min(...times);
      consent =
        firstMs < c - CONSENT_TOLERANCE_MS
          ? { verdict: 'violated', words, detail: `the first packet (${utcWords(firstMs)}) was recorded ${Math.round(c - firstMs)} ms BEFORE the consent` }
          : { verdict: 'holds', words, detail: `consent ${Math.round(firstMs - c)} ms before the first recorded packet` };
    }
  }

  // R6: windows.
  const windows = (m?.policy?.agentWindows ?? []).map((w) => ({ start: new Date(w.start).toISOString(), end: new Date(w.end).toISOString() }));
  let window: SpotCheckItem['window'];
  if (m === null) window = { verdict: 'unverifiable', windows, detail: 'the manifest is gone' };
  else if (m.policy === undefined) window = { verdict: 'unverifiable', windows, detail: 'the manifest carries no schedule (recorded before the control plane recorded it)' };
  else {
    const outside = segs.filter((s) => !m.policy!.agentWindows.some((w) => s.startWallClockMs >= w.start - WINDOW_TOLERANCE_MS && s.startWallClockMs + s.durationMs <= w.end + WINDOW_TOLERANCE_MS));
    window =
      outside.length === 0
        ? { verdict: 'holds', windows, detail: `all ${segs.length} segment(s) lie inside a scheduled window` }
        : { verdict: 'violated', windows, detail: `${outside.length} segment(s) outside every window, the first at ${utcWords(outside[0]!.startWallClockMs)}` };
  }

  // R6: cap.
  const capValue = m?.policy?.monthlyCap;
  let cap: SpotCheckItem['cap'];
  if (x.agentIds.length === 0) cap = { verdict: 'not-applicable', month: x.month, detail: 'no agent is linked to this recording (erased)' };
  else if (capValue === undefined) cap = { verdict: 'unverifiable', month: x.month, ...(x.countThatMonth === undefined ? {} : { countThatMonth: x.countThatMonth }), detail: 'the manifest carries no monthly cap' };
  else if (x.countThatMonth === undefined) cap = { verdict: 'unverifiable', month: x.month, cap: capValue, detail: 'no count of the agent\u2019s recordings that month' };
  else
    cap =
      x.countThatMonth <= capValue
        ? { verdict: 'holds', month: x.month, cap: capValue, countThatMonth: x.countThatMonth, detail: `${x.countThatMonth} recording(s) of the agent in ${x.month}, cap ${capValue}` }
        : { verdict: 'violated', month: x.month, cap: capValue, countThatMonth: x.countThatMonth, detail: `${x.countThatMonth} recordings of the agent in ${x.month}, above the cap of ${capValue}` };

  // R8.
  const span = x.expiresAtMs - x.startedAtMs;
  const expiresAt = new Date(x.expiresAtMs).toISOString();
  const expiry: SpotCheckItem['expiry'] =
    span > MAX_RETENTION_SECONDS * 1000 || (m !== null && m.retentionSeconds > MAX_RETENTION_SECONDS)
      ? { verdict: 'violated', expiresAt, detail: `expires ${(span / 86_400_000).toFixed(1)} days after it started (at most 30)` }
      : { verdict: 'holds', expiresAt, detail: x.expiresAtMs <= nowMs ? 'expired' : `expires ${(span / 86_400_000).toFixed(1)} days after it started` };

  return { recordingId: x.recordingId, startedAt: new Date(x.startedAtMs).toISOString(), agentIds: x.agentIds, consent, window, cap, expiry };
}
