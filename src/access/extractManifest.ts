import type { AuditEntry } from '../audit/AuditTrail.ts';
import type { ConsentEvidence, RecordingManifest } from '../storage/manifest.ts';
import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';

/**
 * The manifest of a subject-access extract (R12 in docs/rules.md, GDPR Art. 15): for each recording of
 * the subject, when it was processed, why, on which legal basis, the consent evidence (for a
 * customer), how long it is kept, who accessed it and when, and which audio file holds the
 * subject's own voice.
 *
 * Pure, and deliberately built from an allow-list of fields: it must contain NOTHING identifying
 * another person. No other participant's subject id, participant id or track; no team lead id;
 * no call id (the contact centre can map it to the agent); no consent evidence of anyone else;
 * other people who accessed the recording appear as a role and an alias local to this extract
 * ("person-1"), never by their pseudonymous id.
 */

export const EXTRACT_FORMAT = 'optin-extract/1';
export const PURPOSE_TEXT = 'agent training and coaching';

const LEGAL_BASIS = {
  customer: {
    article: 'GDPR Art. 6(1)(a) and Art. 7',
    basis: 'consent',
    explanation:
      'You were told about the recording for agent training and agreed by a positive act (for example a key press) before anything was recorded. You may withdraw consent at any time; withdrawal with erasure deletes your part of the recording.',
  },
  agent: {
    article: 'GDPR Art. 6(1)(f) and Art. 88',
    basis: 'legitimate interests in the employment context (training and coaching)',
    explanation:
      'You were recorded only inside scheduled training periods and within a monthly cap; only you and your team lead may listen. You may ask for the deletion of a recording at any time.',
  },
} as const;

export interface ExtractAudioFile {
  name: string;
  contentType: string;
  bytes: number;
  sha256: string;
  durationMs: number;
}

export interface ExtractItem {
  manifest: RecordingManifest;
  /** The subject's participant in that recording. */
  participantId: string;
  file: ExtractAudioFile;
}

export interface ExtractAccess {
  at: string;
  /** 'access.play', 'access.metadata', 'extract', ... */
  type: string;
  role: string;
  /** 'you', 'system', or an alias local to this extract ('person-1'): never another person's id. */
  by: string;
  purpose: string;
}

export interface ExtractRecording {
  recordingId: string;
  yourRole: 'agent' | 'customer';
  purpose: string;
  legalBasis: { article: string; basis: string; explanation: string };
  recording: { startedAt: string; endedAt?: string; state: string };
  /** When your voice was recorded: one entry per stored segment of your track. */
  segments: Array<{ segment: number; run: number; start: string; end: string; durationMs: number }>;
  /**
   * The recording runs of your track, in audio order. A recording pauses (pause/resume, a consent
   * given late, a control link lost for a moment) and each reopening starts a new run; the audio
   * file joins the runs back to back, so a pause is not heard as silence. `audioOffsetMs` is where
   * the run begins in the audio file, `start`/`end` when it was recorded, and `pauseBeforeMs` how
   * long the recording was paused before it (absent for the first run).
   */
  runs: ExtractRun[];
  consentEvidence?: Array<{ method?: string; at?: string; infoVersion?: string; ref?: string }>;
  retention: { retentionSeconds: number; retentionClass: string; expiresAt: string; rule: string };
  accesses: ExtractAccess[];
  audio: ExtractAudioFile & { channels: 1; contains: string };
}

export interface ExtractRun {
  run: number;
  /** Where the run begins in the audio file, ms from its start (sum of the earlier segments' durations). */
  audioOffsetMs: number;
  durationMs: number;
  /** Wall-clock time of the run's first sample and of the end of its last. */
  start: string;
  end: string;
  /** Wall-clock gap since the previous run ended: a pause the audio file does not contain. */
  pauseBeforeMs?: number;
  /** The run's segment numbers (see `segments`). */
  segments: number[];
}

/**
 * The runs of one track, from its segment records in segment order (the order the audio file
 * joins them in). Offsets are integer ms; the file's own duration can differ from the sum by a
 * few ms (each run after the first opens with its encoder's pre-skip, about 6.5 ms).
 */
function runsOf(segs: ReadonlyArray<{ segment: number; run: number; startWallClockMs: number; durationMs: number }>): ExtractRun[] {
  const runs: Array<ExtractRun & { endMs: number }> = [];
  let offset = 0;
  for (const s of segs) {
    let r = runs.at(-1);
    if (r === undefined || r.run !== s.run) {
      const prevEnd = r?.endMs;
      r = {
        run: s.run,
        audioOffsetMs: Math.round(offset),
        durationMs: 0,
        start: iso(s.startWallClockMs),
        end: '',
        ...(prevEnd === undefined ? {} : { pauseBeforeMs: Math.max(0, Math.round(s.startWallClockMs - prevEnd)) }),
        segments: [],
        endMs: s.startWallClockMs,
      };
      runs.push(r);
    }
    r.durationMs += s.durationMs;
    r.endMs = s.startWallClockMs + s.durationMs;
    r.segments.push(s.segment);
    offset += s.durationMs;
  }
  return runs.map(({ endMs, ...r }) => ({ ...r, durationMs: Math.round(r.durationMs), end: iso(endMs) }));
}

export interface ExtractManifest {
  format: typeof EXTRACT_FORMAT;
  extractId: string;
  caseRef: string;
  createdAt: string;
  subjectId: string;
  controllerPurpose: string;
  processing: string;
  recordings: ExtractRecording[];
  notes: string[];
}

/** Entry types that are accesses to a recording (denials and gate bookkeeping are not). */
function isAccessType(type: string): boolean {
  return (type.startsWith('access.') && type !== 'access.denied') || type === 'extract' || type === 'extract.download';
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The consent evidence that belongs to this customer. Evidence records carry no participant id
 * today; when the recording has one customer, all of its evidence is theirs. With several
 * customers it cannot be attributed, and showing it could reveal the other customer's consent,
 * so it is left out (and the manifest says so).
 */
function customerEvidence(m: RecordingManifest, participantId: string): ExtractRecording['consentEvidence'] | undefined {
  const attributed = m.consentEvidence.filter((e) => e.participantId === participantId);
  const customers = m.participants.filter((p) => p.role === 'customer').length;
  const mine: ConsentEvidence[] = attributed.length > 0 ? attributed : customers === 1 ? m.consentEvidence : [];
  if (mine.length === 0) return undefined;
  return mine.map((e) => ({
    ...(typeof e.method === 'string' ? { method: e.method } : {}),
    ...(typeof e.at === 'number' ? { at: iso(e.at) } : typeof e.at === 'string' ? { at: e.at } : {}),
    ...(typeof e.infoVersion === 'string' ? { infoVersion: e.infoVersion } : {}),
    ...(typeof e.ref === 'string' ? { ref: e.ref } : {}),
  }));
}

export function buildExtractManifest(input: {
  extractId: string;
  caseRef: string;
  subjectId: string;
  createdAtMs: number;
  items: readonly ExtractItem[];
  /** Audit entries (any order; filtered here). */
  audit: readonly AuditEntry[];
  /** Set when the audit trail could not be read: the manifest says so instead of claiming no accesses. */
  auditUnavailable?: boolean;
}): ExtractManifest {
  const aliases = new Map<string, string>();
  const alias = (actor: string): string => {
    if (actor === input.subjectId) return 'you';
    if (actor === 'system' || actor.startsWith('system')) return 'system';
    let a = aliases.get(actor);
    if (a === undefined) {
      a = `person-${aliases.size + 1}`;
      aliases.set(actor, a);
    }
    return a;
  };
  const sortedAudit = [...input.audit].sort((a, b) => a.at.localeCompare(b.at));
  const notes: string[] = [
    'Each audio file holds only your own voice: every speaker of a call is recorded as a separate, separately encrypted track, and only yours is included.',
    'People other than you appear by role and an alias used only in this document.',
  ];
  notes.push(
    'Each audio file joins the runs of its recording back to back: when the recording was paused, the pause is not in the audio. "runs" says where each run begins in the file (audioOffsetMs), when it was recorded, and how long the pause before it lasted (pauseBeforeMs).',
  );
  if (input.auditUnavailable) notes.push('The access history could not be read when this extract was made; ask for it again.');

  const recordings = input.items.map(({ manifest: m, participantId, file }): ExtractRecording => {
    const me = m.participants.find((p) => p.participantId === participantId);
    const role = me?.role ?? 'customer';
    const segs = m.segments.filter((s) => s.participantId === participantId);
    const accesses: ExtractAccess[] = [];
    for (const e of sortedAudit) {
      if (!isAccessType(e.type)) continue;
      const details = e.details as { recordingIds?: unknown };
      const aboutRecording =
        e.refs.recordingId === m.recordingId || (Array.isArray(details.recordingIds) && details.recordingIds.includes(m.recordingId));
      if (!aboutRecording) continue;
      // An extract touches only its own subject's track: someone else's extract never read yours.
      if ((e.type === 'extract' || e.type === 'extract.download') && e.refs.subjectId !== input.subjectId) continue;
      accesses.push({ at: e.at, type: e.type, role: e.role, by: alias(e.actor), purpose: e.purpose });
    }
    const evidence = role === 'customer' ? customerEvidence(m, participantId) : undefined;
    if (role === 'customer' && evidence === undefined) {
      notes.push(`Recording ${m.recordingId}: the consent evidence could not be attributed to you alone and is not shown; the data-protection officer holds it.`);
    }
    return {
      recordingId: m.recordingId,
      yourRole: role,
      purpose: PURPOSE_TEXT,
      legalBasis: { ...LEGAL_BASIS[role] },
      recording: { startedAt: iso(m.startedAtMs), ...(m.endedAtMs === undefined ? {} : { endedAt: iso(m.endedAtMs) }), state: m.state },
      segments: segs.map((s) => ({
        segment: s.segment,
        run: s.run,
        start: iso(s.startWallClockMs),
        end: iso(s.startWallClockMs + s.durationMs),
        durationMs: s.durationMs,
      })),
      runs: runsOf(segs),
      ...(evidence === undefined ? {} : { consentEvidence: evidence }),
      retention: {
        retentionSeconds: m.retentionSeconds,
        retentionClass: m.retentionClass,
        expiresAt: m.expiresAt,
        rule: `deleted automatically at expiresAt, at most ${MAX_RETENTION_SECONDS / 86_400} days after the recording started`,
      },
      accesses,
      audio: { ...file, channels: 1, contains: 'your voice only' },
    };
  });

  return {
    format: EXTRACT_FORMAT,
    extractId: input.extractId,
    caseRef: input.caseRef,
    createdAt: iso(input.createdAtMs),
    subjectId: input.subjectId,
    controllerPurpose: PURPOSE_TEXT,
    processing:
      'Calls are recorded for agent training and coaching only, per speaker, encrypted at rest (AES-256-GCM), kept in a separate store, and deleted at expiry. There is no export to other systems and no search by content.',
    recordings,
    notes,
  };
}
