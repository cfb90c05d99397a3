import type { ParticipantRole, RecordingManifest, RecordingState } from './manifest.ts';

/**
 * What the catalogue keeps of a manifest (docs/control-protocol.md §6 `recording.report`):
 * identities for listing, totals, times and state. One mapping for both readers of it: the
 * control plane's `optin catalogue rebuild` (from the store) and a recorder reporting a manifest
 * that crash repair closed (so the first rebuild after a crash finds nothing to correct).
 */
export interface ManifestSummary {
  recordingId: string;
  callId: string;
  nodeId: string;
  state: RecordingState;
  participants: { participantId: string; role: ParticipantRole; subjectId?: string; teamLeadId?: string }[];
  startedAt: number;
  endedAt?: number;
  /** Participants with at least one stored segment. */
  tracks: number;
  segments: number;
  /** Sealed bytes of every stored segment. */
  bytes: number;
  expiresAt: number;
}

export function summarizeManifest(m: RecordingManifest): ManifestSummary {
  const summary: ManifestSummary = {
    recordingId: m.recordingId,
    callId: m.callId,
    nodeId: m.nodeId,
    state: m.state,
    participants: m.participants.map((p) => ({
      participantId: p.participantId,
      role: p.role,
      ...(p.subjectId === undefined ? {} : { subjectId: p.subjectId }),
      ...(p.teamLeadId === undefined ? {} : { teamLeadId: p.teamLeadId }),
    })),
    startedAt: m.startedAtMs,
    tracks: new Set(m.segments.map((s) => s.participantId)).size,
    segments: m.segments.length,
    bytes: m.segments.reduce((n, s) => n + s.sealedBytes, 0),
    expiresAt: m.expiresAtMs,
  };
  if (m.endedAtMs !== undefined) summary.endedAt = m.endedAtMs;
  return summary;
}
