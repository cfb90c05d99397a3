import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { FactSchema, MAX_ERASURE_RECORDINGS, type Fact } from '../gate/facts.ts';
import { AgentScheduleSchema, CallSnapshotSchema, PendingDeletionSchema, PendingErasureSchema, TombstoneSchema } from '../gate/policySnapshot.ts';
import { FACT_REJECTIONS, RECORDING_REASONS } from '../gate/reasons.ts';

/**
 * The policy stream, version 2 (docs/control-protocol.md is its human-readable twin: keep them
 * in step). The server is the control plane (facts from its database; `seq` is the database's, so
 * a restarted or different replica continues the same numbering); the client is the recording
 * worker (src/control/ControlClient.ts).
 * - `hello` carries the server's nonce; every later frame is `<mac> <json>` (frameAuth.ts);
 * - facts (src/gate/facts.ts) include erasures and deletions; snapshots list pending ones and
 *   recent tombstones;
 * - worker -> server: R7 recording states, cap requests (answered by `cap.decision`), catalogue
 *   reports, and confirmations of erasures and deletions.
 *
 * What the frames carry (facts, participants, consent evidence, schedules, the ledger, the
 * reasons a call is not recorded) is the gate's vocabulary (src/gate/): this file holds the
 * frames around it, so control/ depends on gate/ and never the reverse.
 *
 * Bounds: the JSON part of a frame is at most 64 KiB (MAX_MESSAGE_BYTES), the MAC and one space
 * come on top. Schemas are strict: an unknown field is an error, because a field we silently
 * ignore could be a condition the sender thinks we enforce. Times are integer ms since the Unix
 * epoch, UTC.
 */

export const PROTOCOL_VERSION_2 = 2 as const;
/** WebSocket subprotocol (Sec-WebSocket-Protocol) a v2 worker offers; the server requires it. */
export const SUBPROTOCOL_V2 = 'optin-control.v2';
/** Hard bound on the JSON of one frame, both directions (bytes of UTF-8 text). */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Largest whole frame: MAC (43) + space + JSON. */
export const MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 44;
/**
 * Bound handed to `ws` as `maxPayload` on the worker: larger than a frame so that an oversized
 * (but authentic) frame reaches the parser and gets a polite `too-large` reply instead of a torn
 * socket, yet still bounds what one frame can cost.
 */
export const WS_MAX_PAYLOAD_BYTES = 1024 * 1024;

const LabelSchema = z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'must match /^[A-Za-z0-9_.:-]{1,128}$/');
const EpochMsSchema = z.int().min(0).max(8_640_000_000_000_000);
const SeqSchema = z.int().min(0);
const CountSchema = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const NonceSchema = z.string().regex(/^[A-Za-z0-9_-]{22,128}$/, 'must be 22..128 base64url characters');

export const MAX_REPORT_PARTICIPANTS = 64;

// ---------------------------------------------------------------------------------------------
// Facts: the gate's (src/gate/facts.ts), ledger facts included
// ---------------------------------------------------------------------------------------------

export { MAX_ERASURE_RECORDINGS };
export {
  DELETION_REASONS,
  ErasureRequestedSchema,
  ErasureCompletedSchema,
  RecordingDeletedSchema,
  DeletionCompletedSchema,
  type DeletionReason,
} from '../gate/facts.ts';
export const FactV2Schema = FactSchema;
export type FactV2 = Fact;
export type FactV2Type = FactV2['type'];

// ---------------------------------------------------------------------------------------------
// Snapshot content: the gate's (src/gate/policySnapshot.ts)
// ---------------------------------------------------------------------------------------------

export { PendingErasureSchema, PendingDeletionSchema, TombstoneSchema, type PendingErasure, type PendingDeletion, type Tombstone } from '../gate/policySnapshot.ts';

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

export const ERROR_CODES_V2 = [
  // framing and schema (both directions)
  'too-large',
  'bad-json',
  'bad-version',
  'unknown-type',
  'invalid-message',
  // sequencing and session (worker -> server)
  'unexpected-message',
  'duplicate',
  'seq-gap',
  'bad-snapshot',
  'bad-proof',
  // facts that are well formed but do not fit the worker's state (worker -> server)
  ...FACT_REJECTIONS,
  // server side
  'internal',
  'bad-frame-mac',
  'unknown-erasure',
  'unknown-deletion',
  'unavailable',
] as const;
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

/** The gate's reasons (src/gate/reasons.ts), `deleted` (a deletion stopped it) and `cap-unknown` (no cap answer in time) included. */
export const RECORDING_REASONS_V2 = RECORDING_REASONS;
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
