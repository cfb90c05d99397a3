import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { ERROR_CODES as V1_ERROR_CODES, MAX_MESSAGE_BYTES } from './protocol.ts';
import { CallEndedSchema, CallPausedSchema, CallResumedSchema, CallStartedSchema, ConsentDeclinedSchema, ConsentGrantedSchema, ConsentWithdrawnSchema, ScheduleSetSchema } from '../gate/facts.ts';
import { AgentScheduleSchema, CallSnapshotSchema } from '../gate/policySnapshot.ts';
import { RECORDING_REASONS as V1_RECORDING_REASONS } from '../gate/reasons.ts';

/**
 * The policy stream, version 2 (docs/control-protocol.md is its human-readable twin: keep them
 * in step). What changed from v1 (src/control/protocol.ts, whose fact and participant schemas
 * this file reuses):
 * - the server is the control plane: facts come from its database, `seq` is the database's
 *   (a restarted or different replica continues the same numbering);
 * - `hello` carries the server's nonce; every later frame is `<mac> <json>` (frameAuth.ts);
 * - facts for erasures and deletions; snapshots list pending ones and recent tombstones;
 * - worker -> server: cap requests (answered by `cap.decision`), catalogue reports, and
 *   confirmations of erasures and deletions.
 *
 * Bounds: the JSON part of a frame is at most 64 KiB (MAX_MESSAGE_BYTES), the MAC and one space
 * come on top. Schemas are strict: an unknown field is an error.
 */

export const PROTOCOL_VERSION_2 = 2 as const;
/** WebSocket subprotocol (Sec-WebSocket-Protocol) a v2 worker offers; the server requires it. */
export const SUBPROTOCOL_V2 = 'optin-control.v2';
export { MAX_MESSAGE_BYTES };
/** Largest whole frame: MAC (43) + space + JSON. */
export const MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 44;

const LabelSchema = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'must match /^[A-Za-z0-9_.:-]{1,128}$/');
const EpochMsSchema = z.int().min(0).max(8_640_000_000_000_000);
const SeqSchema = z.int().min(0);
const CountSchema = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const NonceSchema = z.string().regex(/^[A-Za-z0-9_-]{22,128}$/, 'must be 22..128 base64url characters');

/** Recordings one erasure may name (a call has at most a handful: one per worker run). */
export const MAX_ERASURE_RECORDINGS = 256;
export const MAX_REPORT_PARTICIPANTS = 64;

// ---------------------------------------------------------------------------------------------
// Facts (v1 facts plus erasures and deletions)
// ---------------------------------------------------------------------------------------------

/** Why a recording (or one participant's part of it) is deleted. */
export const DELETION_REASONS = ['team-lead', 'operator', 'erasure', 'expiry'] as const;
export type DeletionReason = (typeof DELETION_REASONS)[number];

/**
 * R9: a customer withdrew with `erase`. Every worker that holds a recording of the call deletes
 * that participant's part (store, spool, data key) and answers `erasure.done`. `recordingIds`
 * lists what the catalogue knew when the request was accepted; a worker erases by
 * (callId, participantId) whatever it holds, listed or not.
 */
export const ErasureRequestedSchema = z.strictObject({
  type: z.literal('erasure.requested'),
  erasureId: IdSchema,
  callId: IdSchema,
  participantId: IdSchema,
  recordingIds: z.array(IdSchema).max(MAX_ERASURE_RECORDINGS),
});
/** The erasure is complete (receipts recorded): workers drop it from their pending sets. */
export const ErasureCompletedSchema = z.strictObject({ type: z.literal('erasure.completed'), erasureId: IdSchema });
/**
 * A recording (or one participant's part) is deleted: the tombstone. A writer that holds it
 * stops, deletes, forgets the key, answers `deletion.done`, and refuses every later PUT or
 * manifest write for it.
 */
export const RecordingDeletedSchema = z.strictObject({
  type: z.literal('recording.deleted'),
  deletionId: IdSchema,
  recordingId: IdSchema,
  participantId: IdSchema.optional(),
  reason: z.enum(DELETION_REASONS),
});
export const DeletionCompletedSchema = z.strictObject({ type: z.literal('deletion.completed'), deletionId: IdSchema });

export const FactV2Schema = z.discriminatedUnion('type', [
  CallStartedSchema,
  CallEndedSchema,
  ConsentGrantedSchema,
  ConsentDeclinedSchema,
  ConsentWithdrawnSchema,
  ScheduleSetSchema,
  CallPausedSchema,
  CallResumedSchema,
  ErasureRequestedSchema,
  ErasureCompletedSchema,
  RecordingDeletedSchema,
  DeletionCompletedSchema,
]);
export type FactV2 = z.infer<typeof FactV2Schema>;
export type FactV2Type = FactV2['type'];

// ---------------------------------------------------------------------------------------------
// Snapshot content
// ---------------------------------------------------------------------------------------------

export const PendingErasureSchema = z.strictObject({
  erasureId: IdSchema,
  callId: IdSchema,
  participantId: IdSchema,
  recordingIds: z.array(IdSchema).max(MAX_ERASURE_RECORDINGS),
});
export const PendingDeletionSchema = z.strictObject({
  deletionId: IdSchema,
  recordingId: IdSchema,
  participantId: IdSchema.optional(),
  reason: z.enum(DELETION_REASONS),
});
/** A completed deletion or erasure a writer must still honour (recent ones: see the docs). */
export const TombstoneSchema = z.strictObject({ recordingId: IdSchema, participantId: IdSchema.optional() });

export type PendingErasure = z.infer<typeof PendingErasureSchema>;
export type PendingDeletion = z.infer<typeof PendingDeletionSchema>;
export type Tombstone = z.infer<typeof TombstoneSchema>;

// ---------------------------------------------------------------------------------------------
// Server -> worker
// ---------------------------------------------------------------------------------------------

const v2 = { v: z.literal(PROTOCOL_VERSION_2) };

/** The only unauthenticated-by-MAC frame: proven by `proof` (v1 formula), it carries the server's nonce. */
export const HelloV2Schema = z.strictObject({
  ...v2,
  type: z.literal('hello'),
  serverId: IdSchema,
  /** base64url(HMAC-SHA256(secret, "server:" + workerNonce)). */
  proof: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes of base64url'),
  serverNonce: NonceSchema,
  heartbeatMs: z.int().min(10).max(60_000),
});

export const SnapshotV2Schema = z
  .strictObject({
    ...v2,
    type: z.literal('snapshot'),
    seq: SeqSchema,
    at: EpochMsSchema,
    part: z.int().min(0),
    parts: z.int().min(1).max(1024),
    calls: z.array(CallSnapshotSchema),
    agents: z.array(AgentScheduleSchema),
    erasures: z.array(PendingErasureSchema),
    deletions: z.array(PendingDeletionSchema),
    tombstones: z.array(TombstoneSchema),
  })
  .refine((s) => s.part < s.parts, { message: 'part must be < parts' });

export const DeltaV2Schema = z.strictObject({ ...v2, type: z.literal('delta'), seq: SeqSchema, at: EpochMsSchema, fact: FactV2Schema });

/** Sent only after the server read its database successfully in that tick: no DB, no heartbeat. */
export const HeartbeatV2Schema = z.strictObject({ ...v2, type: z.literal('heartbeat'), seq: SeqSchema, at: EpochMsSchema });

export const CAP_REFUSALS = ['cap-reached', 'no-schedule'] as const;
export const CapDecisionSchema = z
  .strictObject({
    ...v2,
    type: z.literal('cap.decision'),
    requestId: IdSchema,
    admitted: z.boolean(),
    /** The UTC month (YYYY-MM) the admission counts against. */
    month: z.string().regex(/^\d{4}-\d{2}$/),
    /** Only when refused. */
    reason: z.enum(CAP_REFUSALS).optional(),
  })
  .refine((d) => d.admitted === (d.reason === undefined), { message: 'reason is given exactly when admitted is false' });

export const ERROR_CODES_V2 = [...V1_ERROR_CODES, 'bad-frame-mac', 'unknown-erasure', 'unknown-deletion', 'unavailable'] as const;
export type ErrorCodeV2 = (typeof ERROR_CODES_V2)[number];

export const ErrorV2Schema = z.strictObject({
  ...v2,
  type: z.literal('error'),
  code: z.enum(ERROR_CODES_V2),
  message: z.string().max(1024),
  ref: LabelSchema.optional(),
});

export const ServerMessageV2Schema = z.discriminatedUnion('type', [
  HelloV2Schema,
  SnapshotV2Schema,
  DeltaV2Schema,
  HeartbeatV2Schema,
  CapDecisionSchema,
  ErrorV2Schema,
]);

// ---------------------------------------------------------------------------------------------
// Worker -> server
// ---------------------------------------------------------------------------------------------

/** v1 reasons plus `deleted` (a deletion or erasure stopped it) and `cap-unknown` (no cap answer in time). */
export const RECORDING_REASONS_V2 = [...V1_RECORDING_REASONS, 'deleted', 'cap-unknown'] as const;
export type RecordingReasonV2 = (typeof RECORDING_REASONS_V2)[number];

export const RecordingStateV2Schema = z
  .strictObject({
    ...v2,
    type: z.literal('recording-state'),
    callId: IdSchema,
    recording: z.boolean(),
    reasons: z.array(z.enum(RECORDING_REASONS_V2)).max(RECORDING_REASONS_V2.length),
    at: EpochMsSchema,
    recordingId: IdSchema.optional(),
  })
  .refine((s) => (s.recording ? s.reasons.length === 0 : s.reasons.length > 0), {
    message: 'recording=true needs no reasons; recording=false needs at least one',
  });

/** Admission of a recording against the monthly cap of every agent in it: all or none. */
export const CapRequestSchema = z.strictObject({
  ...v2,
  type: z.literal('cap.request'),
  requestId: IdSchema,
  recordingId: IdSchema,
  callId: IdSchema,
  /** The agents' subjectIds (schedule keys). */
  agentIds: z.array(IdSchema).min(1).max(32),
  at: EpochMsSchema,
});

export const REPORT_EVENTS = ['begun', 'segment', 'ended', 'interrupted'] as const;
export const ReportParticipantSchema = z.strictObject({
  participantId: IdSchema,
  role: z.enum(['agent', 'customer']),
  subjectId: IdSchema.optional(),
  teamLeadId: IdSchema.optional(),
});

/** The catalogue row of a recording, upserted from it (idempotent and monotonic). */
export const RecordingReportSchema = z.strictObject({
  ...v2,
  type: z.literal('recording.report'),
  recordingId: IdSchema,
  callId: IdSchema,
  event: z.enum(REPORT_EVENTS),
  participants: z.array(ReportParticipantSchema).max(MAX_REPORT_PARTICIPANTS),
  startedAt: EpochMsSchema,
  endedAt: EpochMsSchema.optional(),
  tracks: CountSchema,
  segments: CountSchema,
  bytes: CountSchema,
  expiresAt: EpochMsSchema,
});

/** What a worker says it deleted: a summary of the storage layer's deletion receipt. */
export const StoreReceiptSchema = z.strictObject({
  receiptId: LabelSchema,
  recordingId: IdSchema,
  participantId: IdSchema.optional(),
  complete: z.boolean(),
  nothingLeft: z.boolean(),
  dataKeysDestroyed: CountSchema,
  mediaObjects: CountSchema,
  manifest: z.enum(['deleted', 'updated', 'absent', 'pending']),
  completedAt: EpochMsSchema,
});
export type StoreReceipt = z.infer<typeof StoreReceiptSchema>;

export const ErasureDoneSchema = z.strictObject({
  ...v2,
  type: z.literal('erasure.done'),
  erasureId: IdSchema,
  /** One per recording of the call this worker held (may be empty: it held none). */
  receipts: z.array(StoreReceiptSchema).max(MAX_ERASURE_RECORDINGS),
});
export const DeletionDoneSchema = z.strictObject({
  ...v2,
  type: z.literal('deletion.done'),
  deletionId: IdSchema,
  receipt: StoreReceiptSchema,
});

export const WorkerMessageV2Schema = z.discriminatedUnion('type', [
  RecordingStateV2Schema,
  CapRequestSchema,
  RecordingReportSchema,
  ErasureDoneSchema,
  DeletionDoneSchema,
  ErrorV2Schema,
]);

export type HelloV2 = z.infer<typeof HelloV2Schema>;
export type SnapshotV2 = z.infer<typeof SnapshotV2Schema>;
export type DeltaV2 = z.infer<typeof DeltaV2Schema>;
export type HeartbeatV2 = z.infer<typeof HeartbeatV2Schema>;
export type CapDecision = z.infer<typeof CapDecisionSchema>;
export type ErrorV2 = z.infer<typeof ErrorV2Schema>;
export type ServerMessageV2 = z.infer<typeof ServerMessageV2Schema>;
export type RecordingStateV2 = z.infer<typeof RecordingStateV2Schema>;
export type CapRequest = z.infer<typeof CapRequestSchema>;
export type RecordingReport = z.infer<typeof RecordingReportSchema>;
export type ErasureDone = z.infer<typeof ErasureDoneSchema>;
export type DeletionDone = z.infer<typeof DeletionDoneSchema>;
export type WorkerMessageV2 = z.infer<typeof WorkerMessageV2Schema>;

// ---------------------------------------------------------------------------------------------
// Parsing (of the JSON part, after the MAC was checked)
// ---------------------------------------------------------------------------------------------

export type ParseResultV2<T> = { ok: true; message: T } | { ok: false; code: ErrorCodeV2; message: string; ref?: string };

const SERVER_TYPES = new Set(['hello', 'snapshot', 'delta', 'heartbeat', 'cap.decision', 'error']);
const WORKER_TYPES = new Set(['recording-state', 'cap.request', 'recording.report', 'erasure.done', 'deletion.done', 'error']);

export function parseServerMessageV2(json: string): ParseResultV2<ServerMessageV2> {
  return parseWith(json, SERVER_TYPES, ServerMessageV2Schema);
}

export function parseWorkerMessageV2(json: string): ParseResultV2<WorkerMessageV2> {
  return parseWith(json, WORKER_TYPES, WorkerMessageV2Schema);
}

function parseWith<T>(json: string, types: Set<string>, schema: z.ZodType<T>): ParseResultV2<T> {
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > MAX_MESSAGE_BYTES) return { ok: false, code: 'too-large', message: `frame of ${bytes} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit` };
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    return { ok: false, code: 'bad-json', message: 'frame is not valid JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, code: 'bad-json', message: 'frame must be a JSON object' };
  const obj = raw as Record<string, unknown>;
  const ref =
    typeof obj.requestId === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(obj.requestId)
      ? obj.requestId
      : typeof obj.seq === 'number' && Number.isSafeInteger(obj.seq) && obj.seq >= 0
        ? String(obj.seq)
        : undefined;
  const fail = (code: ErrorCodeV2, message: string): ParseResultV2<T> => (ref === undefined ? { ok: false, code, message } : { ok: false, code, message, ref });
  if (obj.v !== PROTOCOL_VERSION_2) return fail('bad-version', `unsupported protocol version ${JSON.stringify(obj.v)}; this side speaks v: 2`);
  if (typeof obj.type !== 'string' || !types.has(obj.type)) return fail('unknown-type', `unknown message type ${JSON.stringify(obj.type)?.slice(0, 64)}`);
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const detail = parsed.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ')
      .slice(0, 1000);
    return fail('invalid-message', detail);
  }
  return { ok: true, message: parsed.data };
}

/** JSON text of a frame, refusing what the other side would reject for size. */
export function encodeV2(message: ServerMessageV2 | WorkerMessageV2): string {
  const text = JSON.stringify(message);
  if (Buffer.byteLength(text, 'utf8') > MAX_MESSAGE_BYTES) throw new RangeError(`control message of type ${message.type} exceeds ${MAX_MESSAGE_BYTES} bytes`);
  return text;
}

export function errorV2(code: ErrorCodeV2, message: string, ref?: string): ErrorV2 {
  return ref === undefined ? { v: PROTOCOL_VERSION_2, type: 'error', code, message } : { v: PROTOCOL_VERSION_2, type: 'error', code, message, ref };
}
