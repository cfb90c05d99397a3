import { z } from 'zod';
import { canonicalJson } from '../crypto/canonicalJson.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { SealedBlob } from '../crypto/Keyring.ts';
import { IdSchema } from '../ids/ids.ts';

/**
 * The manifest: everything about a recording except audio and keys (kept in the keys bucket, never
 * beside the media). It is what the API lists, what the read path verifies digests against, and
 * what the sweeper reads expiries from. Subject ids are pseudonymous (contracts: Ids), and still
 * personal: the stored form is sealed (AES-256-GCM under a keyring-derived key, see
 * `sealManifest`), so no plaintext object in any bucket names a subject (docs/storage.md).
 */

export const MANIFEST_FORMAT = 'optin-manifest/1';

/** Small JSON values only: quality records and consent evidence are metadata, never content. */
export type JsonPrimitive = string | number | boolean | null;
export type SegmentQuality = Record<string, JsonPrimitive>;
export type ConsentEvidence = Record<string, JsonPrimitive>;

export type ParticipantRole = 'agent' | 'customer';

export interface ManifestParticipant {
  participantId: string;
  role: ParticipantRole;
  /** Removed when the participant's part is erased (R9): nothing then links the track to a person. */
  subjectId?: string;
  /** Agents only: who may coach them (R10). Pseudonymous; removed with subjectId on erasure. */
  teamLeadId?: string;
  /** Id of the participant's data key (never the key itself), once the first segment is stored. */
  dataKeyId?: string;
  kekId?: string;
  erased?: { atMs: number; reason: string };
}

export interface ManifestSegment {
  participantId: string;
  segment: number;
  run: number;
  objectKey: string;
  /** Wall-clock time of the first sample, ms since epoch: aligns both sides for coaching playback. */
  startWallClockMs: number;
  durationMs: number;
  opusPayloadBytes: number;
  oggBytes: number;
  sealedBytes: number;
  /** hex sha256 of the sealed object as stored. */
  sha256: string;
  quality: SegmentQuality;
}

export type RecordingState = 'recording' | 'ended' | 'interrupted';

/** The schedule and cap a recording was admitted under: evidence for the compliance report (R6). */
export interface RecordingPolicy {
  /** The recorded agents' training windows around the recording, ms since epoch. */
  agentWindows: { start: number; end: number }[];
  monthlyCap: number;
}

export interface RecordingManifest {
  format: typeof MANIFEST_FORMAT;
  recordingId: string;
  callId: string;
  /** The process that writes this recording: crash repair only touches its own. */
  nodeId: string;
  state: RecordingState;
  startedAtMs: number;
  endedAtMs?: number;
  retentionSeconds: number;
  retentionClass: string;
  expiresAtMs: number;
  /** Human-readable copy of expiresAtMs. */
  expiresAt: string;
  participants: ManifestParticipant[];
  consentEvidence: ConsentEvidence[];
  policy?: RecordingPolicy;
  /** Sorted by participantId, then segment. */
  segments: ManifestSegment[];
  /** Incremented at every write; the newest revision wins when copies disagree. */
  revision: number;
  updatedAtMs: number;
}

const id = IdSchema;
const prim = z.union([z.string().max(256), z.number(), z.boolean(), z.null()]);
const flatRecord = z.record(z.string().max(64), prim);

const segmentSchema = z.object({
  participantId: id,
  segment: z.number().int().min(0),
  run: z.number().int().min(0),
  objectKey: z.string().min(1),
  startWallClockMs: z.number(),
  durationMs: z.number().min(0),
  opusPayloadBytes: z.number().int().min(0),
  oggBytes: z.number().int().min(0),
  sealedBytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  quality: flatRecord,
});

const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  recordingId: id,
  callId: id,
  nodeId: id,
  state: z.enum(['recording', 'ended', 'interrupted']),
  startedAtMs: z.number(),
  endedAtMs: z.number().optional(),
  retentionSeconds: z.number().int().positive(),
  retentionClass: z.string(),
  expiresAtMs: z.number(),
  expiresAt: z.string(),
  participants: z.array(
    z.object({
      participantId: id,
      role: z.enum(['agent', 'customer']),
      subjectId: id.optional(),
      teamLeadId: id.optional(),
      dataKeyId: id.optional(),
      kekId: id.optional(),
      erased: z.object({ atMs: z.number(), reason: z.string() }).optional(),
    }),
  ),
  consentEvidence: z.array(flatRecord),
  policy: z
    .object({ agentWindows: z.array(z.object({ start: z.number(), end: z.number() })).max(512), monthlyCap: z.number().int().min(0) })
    .optional(),
  segments: z.array(segmentSchema),
  revision: z.number().int().min(0),
  updatedAtMs: z.number(),
});

/** The Keyring MAC purpose of manifests (its own derived key: never reused for anything else). */
export const MANIFEST_MAC_PURPOSE = 'manifest';

/** The MAC carried by a stored manifest: HMAC-SHA256 of its canonical JSON without `mac`. */
interface ManifestMac {
  alg: 'HMAC-SHA256';
  kekId: string;
  value: string;
}

/** The format name of a sealed manifest object (what `sealManifest` writes since issue 19). */
export const SEALED_MANIFEST_FORMAT = 'optin-manifest-sealed/1';
/** The Keyring sealing purpose of manifests (its own derived key: not the MAC key, not a data key). */
export const MANIFEST_SEAL_PURPOSE = 'manifest';

/**
 * A stored manifest: the MAC'd manifest JSON, AES-256-GCM sealed. Only the recording id (already
 * the object's name) and the KEK id are in clear; the AAD binds both, so a sealed manifest copied
 * under another recording's name does not open.
 */
export interface SealedManifestEnvelope extends SealedBlob {
  format: typeof SEALED_MANIFEST_FORMAT;
  recordingId: string;
}

/** What signs, seals and checks manifests: the keyring (src/crypto/Keyring.ts) satisfies it. */
export interface ManifestAuthenticator {
  mac(purpose: string, data: string, kekId?: string): { kekId: string; mac: string };
  verifyMac(purpose: string, data: string, kekId: string, mac: string): boolean;
  seal(purpose: string, plaintext: Buffer, aad: string): SealedBlob;
  open(purpose: string, blob: SealedBlob, aad: string): Buffer;
}

function sealAadOf(recordingId: string): string {
  return `optin/manifest/v1\n${recordingId}`;
}

/**
 * Reads a stored manifest, unseals it and checks its MAC (R10, DESIGN §5): the manifest decides
 * who may play a recording (`teamLeadId`) and what the compliance report trusts (segment times,
 * consent evidence), so one changed by anyone without the keyring, or without a MAC at all, is
 * refused loudly with MANIFEST_TAMPERED rather than used.
 *
 * Two stored forms are read: the sealed envelope (written since issue 19) and, for manifests an
 * older version wrote, the plain MAC'd JSON. The plain form is never written again: the next write
 * of that recording (a segment, its end, crash repair, an erasure) replaces it with the sealed one,
 * and lifecycle expiry removes the rest within the retention (R8, at most 30 days).
 */
export function openManifest(bytes: Buffer | string, where: string, auth: ManifestAuthenticator): RecordingManifest {
  const { mac, ...body } = (storedManifestJson(bytes, where, auth).value ?? {}) as { mac?: Partial<ManifestMac> };
  if (mac === undefined || typeof mac !== 'object' || mac === null || mac.alg !== 'HMAC-SHA256' || typeof mac.kekId !== 'string' || typeof mac.value !== 'string') {
    throw new OptinError('MANIFEST_TAMPERED', `manifest ${where} carries no valid MAC: it was not written by optin (or was altered); refusing to use it`);
  }
  let ok: boolean;
  try {
    ok = auth.verifyMac(MANIFEST_MAC_PURPOSE, canonicalJson(body), mac.kekId, mac.value);
  } catch (err) {
    // A KEK that left the ring is a configuration matter (keep retired KEKs until their recordings expire).
    if (isOptinError(err, 'KEK_UNKNOWN')) throw new OptinError('KEK_UNKNOWN', `manifest ${where} is signed under key-encryption key ${JSON.stringify(mac.kekId)}, which is not in the keyring: keep retired KEKs configured until their recordings expire`);
    throw err;
  }
  if (!ok) {
    throw new OptinError(
      'MANIFEST_TAMPERED',
      `manifest ${where} does not match its MAC: it was changed outside optin (e.g. its team lead or segment times), or the keyring holds other material under ${JSON.stringify(mac.kekId)}; refusing to use it`,
    );
  }
  return validateManifest(body, where);
}

/** The MAC'd manifest JSON of a stored manifest (sealed or plain), as bytes and parsed once; the MAC is not checked here. */
function storedManifestJson(bytes: Buffer | string, where: string, auth: ManifestAuthenticator): { bytes: Buffer; value: unknown } {
  const raw = parseJson(bytes, where);
  if (typeof raw === 'object' && raw !== null && (raw as { format?: unknown }).format === SEALED_MANIFEST_FORMAT) {
    return unsealEnvelope(raw as Partial<SealedManifestEnvelope>, where, auth);
  }
  return { bytes: Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes), value: raw };
}

/** The MAC'd manifest JSON inside a sealed envelope (which must name the manifest's own recording). */
function unsealEnvelope(env: Partial<SealedManifestEnvelope>, where: string, auth: ManifestAuthenticator): { bytes: Buffer; value: unknown } {
  const recordingId = typeof env.recordingId === 'string' ? env.recordingId : '';
  let inner: Buffer;
  try {
    inner = auth.open(MANIFEST_SEAL_PURPOSE, env as SealedBlob, sealAadOf(recordingId));
  } catch (err) {
    if (isOptinError(err, 'KEK_UNKNOWN')) throw new OptinError('KEK_UNKNOWN', `manifest ${where} is sealed under key-encryption key ${JSON.stringify(String(env.kekId))}, which is not in the keyring: keep retired KEKs configured until their recordings expire`);
    if (isOptinError(err, 'SEALED_AUTH_FAILED')) {
      throw new OptinError('MANIFEST_TAMPERED', `manifest ${where} does not open: it was changed or moved outside optin, or the keyring holds other material under ${JSON.stringify(String(env.kekId))}; refusing to use it`);
    }
    throw err;
  }
  const value = parseJson(inner, where);
  if ((value as { recordingId?: unknown } | null)?.recordingId !== recordingId) {
    throw new OptinError('MANIFEST_TAMPERED', `manifest ${where}: the sealed manifest belongs to another recording; refusing to use it`);
  }
  return { bytes: inner, value };
}

/**
 * The stored form of a manifest: its JSON with a MAC under the keyring's active KEK, sealed with
 * AES-256-GCM under the keyring's manifest key (derived from the same KEK), in an envelope that
 * shows only the recording id and KEK id. Subject and team-lead ids are thereby never in clear in
 * the keys bucket or the spool; whoever holds the keyring (recorders, control plane, CLI) reads it.
 */
export function sealManifest(m: RecordingManifest, auth: ManifestAuthenticator): Buffer {
  const plain = plainManifestBytes(m, auth);
  const envelope: SealedManifestEnvelope = {
    format: SEALED_MANIFEST_FORMAT,
    recordingId: m.recordingId,
    ...auth.seal(MANIFEST_SEAL_PURPOSE, plain, sealAadOf(m.recordingId)),
  };
  plain.fill(0);
  return Buffer.from(JSON.stringify(envelope));
}

/**
 * The MAC'd plain JSON form: what versions before issue 19 stored, and what `sealManifest` seals.
 * Exported for tests of the migration path; never written to a bucket or the spool.
 */
export function plainManifestBytes(m: RecordingManifest, auth: Pick<ManifestAuthenticator, 'mac'>): Buffer {
  const { mac: _drop, ...body } = m as RecordingManifest & { mac?: unknown };
  const { kekId, mac } = auth.mac(MANIFEST_MAC_PURPOSE, canonicalJson(body));
  const sealed: ManifestMac = { alg: 'HMAC-SHA256', kekId, value: mac };
  return Buffer.from(JSON.stringify({ ...body, mac: sealed }));
}

/**
 * The MAC'd JSON inside a stored manifest (sealed or plain), WITHOUT checking the MAC: for tests
 * and tools that must look at or alter the stored bytes (a tamper test re-seals what it changed).
 */
export function unsealManifestJson(bytes: Buffer | string, where: string, auth: ManifestAuthenticator): Buffer {
  return storedManifestJson(bytes, where, auth).bytes;
}

function parseJson(bytes: Buffer | string, where: string): unknown {
  try {
    return JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch {
    throw new OptinError('MANIFEST_INVALID', `manifest ${where} is not JSON`);
  }
}

/** Parses a manifest WITHOUT checking its MAC: only for data that never left this process. */
export function parseManifest(bytes: Buffer | string, where: string): RecordingManifest {
  return validateManifest(parseJson(bytes, where), where);
}

function validateManifest(raw: unknown, where: string): RecordingManifest {
  const r = manifestSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new OptinError('MANIFEST_INVALID', `manifest ${where} is invalid at ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? ''}`);
  }
  return r.data as RecordingManifest;
}

export function cloneManifest(m: RecordingManifest): RecordingManifest {
  return structuredClone(m);
}

/** Inserts or replaces a segment record, keeping the list sorted and free of duplicates. */
export function upsertSegment(m: RecordingManifest, seg: ManifestSegment): void {
  const cmp = (a: ManifestSegment): number =>
    a.participantId < seg.participantId ? -1 : a.participantId > seg.participantId ? 1 : a.segment - seg.segment;
  // Appends at the end are the common case (segments arrive in order).
  let i = m.segments.length;
  while (i > 0 && cmp(m.segments[i - 1]!) > 0) i--;
  if (i > 0 && cmp(m.segments[i - 1]!) === 0) m.segments[i - 1] = seg;
  else m.segments.splice(i, 0, seg);
}

/**
 * Erases one participant (R9 "my voice"): their segments leave the list, their subject id, team
 * lead and key ids leave the record, and the erasure is noted. Returns whether anything changed.
 */
export function eraseParticipant(m: RecordingManifest, participantId: string, reason: string, atMs: number): boolean {
  const p = m.participants.find((q) => q.participantId === participantId);
  const before = m.segments.length;
  m.segments = m.segments.filter((s) => s.participantId !== participantId);
  if (p === undefined) return before !== m.segments.length;
  const already = p.erased !== undefined && p.subjectId === undefined && p.dataKeyId === undefined;
  delete p.subjectId;
  delete p.teamLeadId;
  delete p.dataKeyId;
  delete p.kekId;
  p.erased ??= { atMs, reason };
  return !already || before !== m.segments.length;
}

// ---- per-object segment metadata ----
//
// Each media object also carries its own segment record as S3 user metadata, so crash repair can
// rebuild a manifest from what is in the bucket even if the process died before the manifest
// write. Base64url keeps it inside the header character set; S3 allows 2 KB of user metadata.

export const SEGMENT_META_HEADER = 'x-amz-meta-optin-seg';
/** Bound on the JSON form of a quality record, so the metadata stays under S3's 2 KB. */
export const MAX_QUALITY_JSON_BYTES = 768;

export function encodeSegmentMeta(seg: ManifestSegment, expiresAtMs: number): string {
  return Buffer.from(JSON.stringify({ ...seg, expiresAtMs })).toString('base64url');
}

export function decodeSegmentMeta(value: unknown): (ManifestSegment & { expiresAtMs: number }) | null {
  if (typeof value !== 'string') return null;
  try {
    const raw = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown;
    const r = segmentSchema.extend({ expiresAtMs: z.number() }).safeParse(raw);
    return r.success ? (r.data as ManifestSegment & { expiresAtMs: number }) : null;
  } catch {
    return null;
  }
}

/** Validates a flat JSON record (quality, consent evidence): bounded, primitives only. */
export function checkFlatRecord(field: string, value: unknown, maxJsonBytes: number): Record<string, JsonPrimitive> {
  const r = flatRecord.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new OptinError('INVALID_INPUT', `${field} must be a flat object of short strings, numbers, booleans or null (problem at ${issue?.path.join('.') || '(root)'})`);
  }
  const bytes = Buffer.byteLength(JSON.stringify(r.data));
  if (bytes > maxJsonBytes) throw new OptinError('INVALID_INPUT', `${field} is ${bytes} bytes as JSON; the limit is ${maxJsonBytes}`);
  return r.data;
}
