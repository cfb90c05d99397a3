import type { ManifestParticipant, ManifestSegment } from '../storage/manifest.ts';

/**
 * What the coaching player marks on its time axis (issue 14 §5): the consent instant, and every
 * gap or concealed stretch the segments' quality records tell of, per side (agent left, customer
 * right). The axis is the coaching render's: 0 is the first recorded sample of anyone, as in
 * src/access/coaching.ts renderSpan. Pure: manifest facts in, marks out.
 *
 * - a **gap** is time on a side's axis with no recorded audio: between runs (the gate closed and
 *   reopened: a pause, a consent change) or between segments whose anchors are further apart
 *   than their durations (loss beyond what the jitter buffer covered);
 * - a **concealed stretch** is a segment whose quality record says some of its audio was made up:
 *   lost packets or DTX filled by the jitter buffer (`concealedMs`), or silence written for a gap
 *   inside the segment (`silenceFilledMs`). Records say how much, not where inside the segment,
 *   so the whole segment is marked, with the amount.
 */

/** Anchors closer than this to contiguous are jitter, not gaps (as in coaching.ts). */
export const GAP_SLACK_MS = 20;
/** Concealment below this per segment is ordinary jitter-buffer work, not worth a mark. */
export const CONCEALED_MIN_MS = 40;

export type Side = 'agent' | 'customer';

export interface TimelineMark {
  kind: 'consent' | 'gap' | 'concealed';
  /** Both sides for the consent instant. */
  side: Side | 'both';
  /** Offsets on the render's axis, ms. */
  startMs: number;
  endMs: number;
  /** For people: "gate paused: 4.2 s without recording". */
  label: string;
}

export interface Timeline {
  durationMs: number;
  /** Wall clock of offset 0. */
  originMs: number;
  /** Offset of the consent act; negative when it came before the first sample (the usual case). */
  consentAtMs?: number;
  marks: TimelineMark[];
}

type Seg = Pick<ManifestSegment, 'participantId' | 'segment' | 'run' | 'startWallClockMs' | 'durationMs' | 'quality'>;
type Part = Pick<ManifestParticipant, 'participantId' | 'role' | 'erased'>;

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** "1:05.3": a position on the axis. */
export function offsetWords(ms: number): string {
  const t = Math.max(0, ms) / 1000;
  const m = Math.floor(t / 60);
  const s = t - m * 60;
  return `${m}:${s.toFixed(1).padStart(4, '0')}`;
}

export function buildTimeline(input: {
  participants: readonly Part[];
  segments: readonly Seg[];
  consentEvidence: readonly { at?: unknown }[];
  /** Participants left out of the render (erased, or with an erasure pending). */
  excluded?: ReadonlySet<string>;
}): Timeline | null {
  const live = new Map(input.participants.filter((p) => p.erased === undefined && !(input.excluded?.has(p.participantId) ?? false)).map((p) => [p.participantId, p.role]));
  const segs = input.segments.filter((s) => live.has(s.participantId));
  if (segs.length === 0) return null;
  const originMs = Math.min(...segs.map((s) => s.startWallClockMs));
  const endMs = Math.max(...segs.map((s) => s.startWallClockMs + s.durationMs));
  const marks: TimelineMark[] = [];
  const at = (wall: number): number => Math.round(wall - originMs);

  for (const [participantId, role] of live) {
    const mine = segs.filter((s) => s.participantId === participantId).sort((a, b) => a.startWallClockMs - b.startWallClockMs || a.segment - b.segment);
    if (mine.length === 0) continue;
    // Silence before a side's first sample (the other side was already recorded) is not a gap of
    // this side's recording; the render shows it as silence. Gaps are between its own pieces.
    for (let i = 1; i < mine.length; i++) {
      const prev = mine[i - 1]!;
      const cur = mine[i]!;
      const prevEnd = prev.startWallClockMs + prev.durationMs;
      const gap = cur.startWallClockMs - prevEnd;
      if (cur.run !== prev.run && gap > 0) {
        marks.push({ kind: 'gap', side: role, startMs: at(prevEnd), endMs: at(cur.startWallClockMs), label: `${role} side: recording paused for ${secs(gap)} (the gate closed and reopened)` });
      } else if (gap > GAP_SLACK_MS) {
        marks.push({ kind: 'gap', side: role, startMs: at(prevEnd), endMs: at(cur.startWallClockMs), label: `${role} side: ${secs(gap)} without audio (lost in transit)` });
      }
    }
    for (const s of mine) {
      const concealed = num(s.quality.concealedMs);
      const filled = num(s.quality.silenceFilledMs);
      if (concealed + filled < CONCEALED_MIN_MS) continue;
      const parts = [concealed > 0 ? `${secs(concealed)} concealed (lost or silent packets filled in)` : '', filled > 0 ? `${secs(filled)} of filler silence` : ''].filter((x) => x !== '');
      marks.push({ kind: 'concealed', side: role, startMs: at(s.startWallClockMs), endMs: at(s.startWallClockMs + s.durationMs), label: `${role} side, segment ${s.segment}: ${parts.join(', ')}` });
    }
  }

  const consentTimes = input.consentEvidence.map((e) => (typeof e.at === 'number' ? e.at : typeof e.at === 'string' ? Date.parse(e.at) : Number.NaN)).filter((t) => Number.isFinite(t));
  const timeline: Timeline = { durationMs: Math.round(endMs - originMs), originMs, marks };
  if (consentTimes.length > 0) {
    const consentAt = Math.min(...consentTimes);
    timeline.consentAtMs = Math.round(consentAt - originMs);
    const before = consentAt <= originMs;
    marks.push({
      kind: 'consent',
      side: 'both',
      startMs: Math.max(0, timeline.consentAtMs),
      endMs: Math.max(0, timeline.consentAtMs),
      label: before ? `consent given ${secs(originMs - consentAt)} before the recording began` : `consent given here: ${secs(consentAt - originMs)} AFTER the first recorded sample`,
    });
  }
  marks.sort((a, b) => a.startMs - b.startMs || a.kind.localeCompare(b.kind));
  return timeline;
}
