import { Keyring } from '../crypto/Keyring.ts';
import { OptinError } from '../errors/OptinError.ts';
import { assertId } from '../ids/ids.ts';
import { MAX_RETENTION_SECONDS, assertSegment } from './layout.ts';
import { MAX_QUALITY_JSON_BYTES, checkFlatRecord, type ConsentEvidence, type ManifestParticipant, type RecordingPolicy, type SegmentQuality } from './manifest.ts';
import type { BeginRecordingInput, DeletionOptions, HeldSegment, RecordingStoreOptions, SegmentBody, SegmentInput } from './types.ts';

/**
 * Checks of what callers hand the store, before it touches any state: pure functions, each
 * throwing an OptinError that names the field and the fix. What depends on the store's state
 * (is the recording active, deleted, expired?) is checked by the store itself.
 */

const MAX_CONSENT_JSON_BYTES = 16 * 1024;
const MAX_PARTICIPANTS = 64;
/** A recording may start at most this far in the future (clock skew between hosts). */
const MAX_START_SKEW_MS = 60_000;

/** The store's options; returns the retention in seconds (default and maximum 30 days, R8). */
export function checkStoreOptions(options: RecordingStoreOptions): number {
  const retention = options.retentionSeconds ?? MAX_RETENTION_SECONDS;
  if (!Number.isInteger(retention) || retention < 1 || retention > MAX_RETENTION_SECONDS) {
    throw new OptinError(
      'RETENTION_INVALID',
      `retentionSeconds must be a whole number of seconds from 1 to ${MAX_RETENTION_SECONDS} (30 days, DESIGN R8); got ${String(retention)}`,
    );
  }
  if (!(options.keyring instanceof Keyring)) throw new OptinError('CONFIG_INVALID', 'RecordingStore.open: keyring must be a Keyring (Keyring.fromConfig)');
  if (options.nodeId !== undefined) assertId('nodeId', options.nodeId);
  for (const [role, name] of Object.entries(options.buckets ?? {})) {
    if (typeof name !== 'string' || name.length < 3) throw new OptinError('CONFIG_INVALID', `RecordingStore.open: buckets.${role} is missing (use bucketNames())`);
  }
  return retention;
}

export interface CheckedBegin {
  recordingId: string;
  callId: string;
  startedAtMs: number;
  participants: ManifestParticipant[];
  consentEvidence: ConsentEvidence[];
}

/** A beginRecording input; its policy is checked apart (checkPolicy), when a manifest is made. */
export function checkBeginInput(input: BeginRecordingInput, nowMs: number): CheckedBegin {
  const { recordingId, callId } = input ?? ({} as BeginRecordingInput);
  assertId('recordingId', recordingId);
  assertId('callId', callId);
  const startedAtMs = input.startedAt instanceof Date ? input.startedAt.getTime() : input.startedAt;
  if (typeof startedAtMs !== 'number' || !Number.isFinite(startedAtMs) || startedAtMs > nowMs + MAX_START_SKEW_MS) {
    throw new OptinError('INVALID_INPUT', 'startedAt must be a time (ms since epoch) not in the future');
  }
  if (!Array.isArray(input.participants) || input.participants.length === 0 || input.participants.length > MAX_PARTICIPANTS) {
    throw new OptinError('INVALID_INPUT', `participants must list 1..${MAX_PARTICIPANTS} participants`);
  }
  const seen = new Set<string>();
  const participants: ManifestParticipant[] = input.participants.map((p, i) => {
    assertId(`participants[${i}].participantId`, p?.participantId);
    assertId(`participants[${i}].subjectId`, p.subjectId);
    if (p.role !== 'agent' && p.role !== 'customer') throw new OptinError('INVALID_INPUT', `participants[${i}].role must be agent or customer`);
    if (seen.has(p.participantId)) throw new OptinError('INVALID_INPUT', `participants[${i}].participantId ${p.participantId} is listed twice`);
    seen.add(p.participantId);
    if (p.teamLeadId !== undefined) assertId(`participants[${i}].teamLeadId`, p.teamLeadId);
    return { participantId: p.participantId, role: p.role, subjectId: p.subjectId, ...(p.role === 'agent' && p.teamLeadId ? { teamLeadId: p.teamLeadId } : {}) };
  });
  if (!Array.isArray(input.consentEvidence)) throw new OptinError('INVALID_INPUT', 'consentEvidence must be an array (may be empty for agent-only recordings)');
  const consentEvidence = input.consentEvidence.map((e, i) => checkFlatRecord(`consentEvidence[${i}]`, e, 2048));
  if (Buffer.byteLength(JSON.stringify(consentEvidence)) > MAX_CONSENT_JSON_BYTES) {
    throw new OptinError('INVALID_INPUT', `consentEvidence is larger than ${MAX_CONSENT_JSON_BYTES} bytes`);
  }
  return { recordingId, callId, startedAtMs, participants, consentEvidence };
}

/** Validates the R6 evidence kept with a recording (bounded: at most 512 windows). */
export function checkPolicy(policy: RecordingPolicy): RecordingPolicy {
  const ok =
    Array.isArray(policy.agentWindows) &&
    policy.agentWindows.length <= 512 &&
    policy.agentWindows.every((w) => Number.isFinite(w.start) && Number.isFinite(w.end) && w.end > w.start) &&
    Number.isInteger(policy.monthlyCap) &&
    policy.monthlyCap >= 0;
  if (!ok) throw new OptinError('INVALID_INPUT', 'policy must be { agentWindows: [{ start, end }] (<= 512, end > start), monthlyCap: integer >= 0 }');
  return { agentWindows: policy.agentWindows.map((w) => ({ start: w.start, end: w.end })), monthlyCap: policy.monthlyCap };
}

/** A putSegment input and its Ogg bytes; returns the checked quality record. */
export function checkSegmentInput(meta: SegmentInput, ogg: SegmentBody, maxSegmentBytes: number): SegmentQuality {
  const m = meta ?? ({} as SegmentInput);
  assertId('recordingId', m.recordingId);
  assertId('participantId', m.participantId);
  assertSegment(m.segment);
  if (!Number.isInteger(m.run) || m.run < 0) throw new OptinError('INVALID_INPUT', 'run must be a non-negative integer');
  for (const f of ['startWallClockMs', 'durationMs', 'opusPayloadBytes'] as const) {
    if (typeof m[f] !== 'number' || !Number.isFinite(m[f]) || m[f] < 0) throw new OptinError('INVALID_INPUT', `${f} must be a non-negative number`);
  }
  const quality = checkFlatRecord('quality', m.quality ?? {}, MAX_QUALITY_JSON_BYTES);
  const bytes = Buffer.isBuffer(ogg) || isHeldSegment(ogg) ? oggBytesOf(ogg) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new OptinError('INVALID_INPUT', 'the segment must be a non-empty Buffer (one standalone Ogg Opus file)');
  if (bytes > maxSegmentBytes) {
    throw new OptinError('SEGMENT_TOO_LARGE', `segment of ${bytes} bytes exceeds maxSegmentBytes (${maxSegmentBytes}); shorten the segment duration`);
  }
  return quality;
}

/** deleteRecording's arguments: ids, a reason code and a pseudonymous actor. */
export function checkDeletion(recordingId: string, options: DeletionOptions): DeletionOptions {
  assertId('recordingId', recordingId);
  const { participantId, reason, actor } = options ?? ({} as DeletionOptions);
  if (participantId !== undefined) assertId('participantId', participantId);
  checkReason(reason);
  // The audit trail records who acted as a pseudonymous id (or 'system'): same alphabet as ids.
  assertId('actor', actor);
  return { ...(participantId === undefined ? {} : { participantId }), reason, actor };
}

/** A reason is a short code ('agent-request', 'consent-withdrawn-erase'); it becomes the audit purpose. */
function checkReason(value: unknown): asserts value is string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9][\x20-\x7e]{0,127}$/.test(value)) {
    throw new OptinError('INVALID_INPUT', 'reason must be a short code of 1-128 printable ASCII characters, e.g. "agent-request" (no personal data)');
  }
}

/** A media thread's handle on a segment it holds (types.ts HeldSegment), told from anything else passed in. */
export function isHeldSegment(body: unknown): body is HeldSegment {
  const b = body as Partial<HeldSegment> | null;
  return typeof b === 'object' && b !== null && !Buffer.isBuffer(b) && typeof b.oggBytes === 'number' && typeof b.seal === 'function' && typeof b.take === 'function';
}

/** The Ogg file's size, wherever it is (here, or held by a media thread). */
export function oggBytesOf(body: SegmentBody): number {
  return Buffer.isBuffer(body) ? body.length : body.oggBytes;
}
