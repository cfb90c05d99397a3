import { createHash, randomBytes } from 'node:crypto';
import type { AuditEntry, AuditInput, AuditListQuery } from '../audit/AuditTrail.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { joinOggOpus, readOggOpus } from '../media/OggOpusReader.ts';
import { decodeToS16, type FfmpegRunner } from '../media/ffmpeg.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import type { RecordingSource } from '../storage/types.ts';
import { buildExtractManifest, type ExtractItem, type ExtractManifest } from './extractManifest.ts';
import { CASE_REF_RE } from './policy.ts';
import { toWav } from './wav.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * Subject-access extracts (docs/architecture.md §6, R12): ONE subject's tracks across their recordings,
 * decrypted and joined into one continuous Ogg Opus per recording (a selection, never an
 * un-mixing: each speaker is already a separate track), WAV through ffmpeg on request, plus the
 * manifest of src/access/extractManifest.ts. Shared by the HTTP API and `optin extract`.
 *
 * The extract is written to the audit trail (type `extract`) BEFORE it is handed out: if the
 * trail cannot take the entry, the extract fails (R11: no unrecorded access).
 */

export type ExtractFormat = 'ogg' | 'wav';

export interface ExtractFile {
  name: string;
  contentType: string;
  bytes: Buffer;
  sha256: string;
}

export interface ExtractPackage {
  extractId: string;
  caseRef: string;
  subjectId: string;
  createdAtMs: number;
  manifest: ExtractManifest;
  /** Audio files, then `manifest.json`. */
  files: ExtractFile[];
  /** Which track each audio file holds (what a deletion or an erasure withdraws), and until when it may be kept. */
  items: Array<{ recordingId: string; participantId: string; file: string; expiresAtMs: number }>;
  totalBytes: number;
}

/** The read side of the store: a RecordingReader (the CLI) or the worker's RecordingStore (the API). */
export type ExtractStoreApi = RecordingSource;

export interface ExtractAuditApi {
  append(input: AuditInput): Promise<unknown>;
  list(query?: AuditListQuery): Promise<AuditEntry[]>;
}

export interface ExtractRequest {
  subjectId: string;
  caseRef: string;
  format?: ExtractFormat;
  /** Pseudonymous id of the operator, for the audit trail. */
  actor: string;
}

export interface ExtractProgress {
  /** Segments read so far / in total. */
  done: number;
  total: number;
  recordingId?: string;
}

export interface ExtractHooks {
  onProgress?: (p: ExtractProgress) => void;
  /** Refuse (EXTRACT_TOO_LARGE) past this many bytes of files. */
  maxBytes?: number;
  now?: () => number;
  /**
   * The recordings to look at (the control plane's catalogue knows the subject's recordings);
   * without it every manifest in the store is read (the CLI).
   */
  candidates?: readonly string[];
  /** Leaves out a participant's track (an erasure requested and not yet carried out: R9). */
  skip?: (recordingId: string, participantId: string) => boolean;
  /** Where ffmpeg runs (WAV): the access API's bounded pool. */
  runner?: FfmpegRunner;
  /** Stops the work between segments (the extract was withdrawn: a recording deleted meanwhile). */
  signal?: AbortSignal;
  /** The extract id to use (the job's id); default a fresh one. */
  extractId?: string;
}

export const MANIFEST_FILE = 'manifest.json';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Validates an extract request at the boundary; the message names the fix. */
export function validateExtractRequest(raw: { subjectId?: unknown; caseRef?: unknown; format?: unknown }): { subjectId: string; caseRef: string; format: ExtractFormat } {
  if (typeof raw.subjectId !== 'string' || !ID_PATTERN.test(raw.subjectId)) {
    throw new OptinError('INVALID_INPUT', 'subjectId must be the pseudonymous subject id ([A-Za-z0-9_-]{1,64})');
  }
  if (typeof raw.caseRef !== 'string' || !CASE_REF_RE.test(raw.caseRef)) {
    throw new OptinError('CASE_REF_REQUIRED', 'every extract needs the caseRef of its subject-access request ([A-Za-z0-9_-]{1,64})');
  }
  const format = raw.format ?? 'ogg';
  if (format !== 'ogg' && format !== 'wav') throw new OptinError('INVALID_INPUT', 'format must be "ogg" or "wav"');
  return { subjectId: raw.subjectId, caseRef: raw.caseRef, format };
}

/** The subject's participants in a recording (usually one), not erased, with audio. */
function subjectParticipants(m: RecordingManifest, subjectId: string): string[] {
  return m.participants
    .filter((p) => p.subjectId === subjectId && p.erased === undefined && m.segments.some((s) => s.participantId === p.participantId))
    .map((p) => p.participantId);
}

/**
 * Reads, decrypts and joins the tracks: the part whose speed docs/architecture.md §7 targets. Exported for the
 * benchmark (bench/extractStandalone.ts).
 */
export async function readJoinedTrack(
  store: Pick<ExtractStoreApi, 'openTrack'>,
  recordingId: string,
  participantId: string,
  onSegment?: () => void,
): Promise<{ ogg: Buffer; durationMs: number }> {
  const oggs: Buffer[] = [];
  for await (const s of store.openTrack(recordingId, participantId)) {
    oggs.push(s.ogg);
    onSegment?.();
  }
  // No vendor or comments carried over from the recorder: the file says nothing but "optin".
  const ogg = joinOggOpus(oggs, { vendor: 'optin', tags: {} });
  const head = readOggOpus(ogg);
  return { ogg, durationMs: Math.round(((head.lastGranule - head.head.preSkip) / 48_000) * 1000) };
}

export async function createExtract(
  deps: { store: ExtractStoreApi; audit?: ExtractAuditApi },
  request: ExtractRequest,
  hooks: ExtractHooks = {},
): Promise<ExtractPackage> {
  const { subjectId, caseRef, format } = validateExtractRequest(request);
  if (!ID_PATTERN.test(request.actor)) throw new OptinError('INVALID_INPUT', 'actor must be a pseudonymous id');
  const now = hooks.now ?? Date.now;
  const createdAtMs = now();
  const extractId = hooks.extractId ?? `x_${randomBytes(8).toString('hex')}`;
  const aborted = (): void => {
    if (hooks.signal?.aborted) throw new OptinError('EXTRACT_WITHDRAWN', 'the extract was withdrawn: one of its recordings was deleted or its subject erased meanwhile');
  };

  // Which recordings: the catalogue's candidates, or the summaries, which name each participant's subject id.
  const ids =
    hooks.candidates ??
    (await deps.store.listRecordings()).filter((r) => r.participants.some((p) => p.subjectId === subjectId && !p.erased)).map((r) => r.recordingId);
  const plan: Array<{ manifest: RecordingManifest; participantId: string; segments: number }> = [];
  for (const recordingId of ids) {
    aborted();
    let m: RecordingManifest;
    try {
      m = await deps.store.getManifest(recordingId);
    } catch (err) {
      if (isOptinError(err, 'RECORDING_NOT_FOUND')) continue; // deleted or expired meanwhile
      throw err;
    }
    if (m.expiresAtMs <= createdAtMs) continue; // legally gone, even if the sweeper has not run yet
    for (const participantId of subjectParticipants(m, subjectId)) {
      if (hooks.skip?.(m.recordingId, participantId) ?? false) continue;
      plan.push({ manifest: m, participantId, segments: m.segments.filter((x) => x.participantId === participantId).length });
    }
  }
  plan.sort((a, b) => a.manifest.startedAtMs - b.manifest.startedAtMs);

  const total = plan.reduce((n, p) => n + p.segments, 0);
  let done = 0;
  hooks.onProgress?.({ done, total });
  const files: ExtractFile[] = [];
  const items: ExtractItem[] = [];
  const usedNames = new Set<string>();
  let totalBytes = 0;
  for (const p of plan) {
    const rid = p.manifest.recordingId;
    aborted();
    const track = await readJoinedTrack(deps.store, rid, p.participantId, () => {
      aborted();
      done += 1;
      hooks.onProgress?.({ done, total, recordingId: rid });
    });
    const bytes = format === 'wav' ? toWav(await decodeToS16(track.ogg, { rate: 48_000, channels: 1, ...(hooks.runner ? { runner: hooks.runner } : {}) }), 1, 48_000) : track.ogg;
    let name = `${rid}.${format}`;
    for (let n = 2; usedNames.has(name); n++) name = `${rid}-${n}.${format}`;
    usedNames.add(name);
    totalBytes += bytes.length;
    if (hooks.maxBytes !== undefined && totalBytes > hooks.maxBytes) {
      throw new OptinError('EXTRACT_TOO_LARGE', `the extract exceeds ${hooks.maxBytes} bytes; use format=ogg or the CLI (optin extract), which writes to disk`);
    }
    const file: ExtractFile = { name, contentType: format === 'wav' ? 'audio/wav' : 'audio/ogg; codecs=opus', bytes, sha256: sha256(bytes) };
    files.push(file);
    items.push({ manifest: p.manifest, participantId: p.participantId, file: { name, contentType: file.contentType, bytes: bytes.length, sha256: file.sha256, durationMs: track.durationMs } });
  }

  // Who accessed these recordings: the trail from the earliest of them on.
  let audit: AuditEntry[] = [];
  let auditUnavailable = false;
  if (deps.audit && items.length > 0) {
    try {
      audit = await deps.audit.list({ from: new Date(Math.min(...items.map((i) => i.manifest.startedAtMs)) - 1000) });
    } catch {
      auditUnavailable = true;
    }
  }
  const manifest = buildExtractManifest({ extractId, caseRef, subjectId, createdAtMs, items, audit, auditUnavailable });
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2));
  files.push({ name: MANIFEST_FILE, contentType: 'application/json', bytes: manifestBytes, sha256: sha256(manifestBytes) });
  totalBytes += manifestBytes.length;

  aborted();
  await deps.audit?.append({
    type: 'extract',
    actor: request.actor,
    role: 'extract-operator',
    purpose: 'subject-access',
    refs: { subjectId },
    details: {
      extractId,
      caseRef,
      format,
      recordingIds: items.map((i) => i.manifest.recordingId),
      files: files.length,
      bytes: totalBytes,
    },
  });
  return {
    extractId,
    caseRef,
    subjectId,
    createdAtMs,
    manifest,
    files,
    items: items.map((i) => ({ recordingId: i.manifest.recordingId, participantId: i.participantId, file: i.file.name, expiresAtMs: i.manifest.expiresAtMs })),
    totalBytes,
  };
}
