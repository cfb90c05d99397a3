import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { EpochMsSchema, FactSchema, LabelSchema } from '../gate/facts.ts';
import { AgentScheduleSchema, CallSnapshotSchema } from '../gate/policySnapshot.ts';
import { FACT_REJECTIONS, RECORDING_REASONS } from '../gate/reasons.ts';

/**
 * The control-stream wire format, version 1 (docs/control-protocol.md is the
 * human-readable twin of this file: keep them in step).
 *
 * Every frame is one UTF-8 JSON object of at most 64 KiB with `v: 1` and a
 * `type`. Schemas are strict: an unknown field is an error, because a field we
 * silently ignore could be a condition the sender thinks we enforce.
 *
 * This file holds the frames only. What they carry (facts, participants,
 * consent evidence, schedules, the policy snapshot, the reasons a call is not
 * recorded) is the gate's vocabulary, defined in `gate/facts.ts`,
 * `gate/policySnapshot.ts` and `gate/reasons.ts`: the control plane depends on
 * the gate, never the reverse.
 *
 * Times (`at`) are integer milliseconds since the Unix epoch, UTC.
 */

export const PROTOCOL_VERSION = 1 as const;

/** Hard bound on one frame, both directions (bytes of UTF-8 text). */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * Bound handed to `ws` as `maxPayload`: larger than MAX_MESSAGE_BYTES so that
 * an oversized frame reaches our parser and gets a polite `too-large` reply
 * instead of a torn-down socket, yet still bounds what one frame can cost us.
 */
export const WS_MAX_PAYLOAD_BYTES = 1024 * 1024;

const SeqSchema = z.int().min(0);

/** A full state may be split across at most this many snapshot frames. */
export const MAX_SNAPSHOT_PARTS = 1024;

// ---------------------------------------------------------------------------
// Server -> worker
// ---------------------------------------------------------------------------

const envelope = { v: z.literal(PROTOCOL_VERSION) };

export const HelloSchema = z.strictObject({
  ...envelope,
  type: z.literal('hello'),
  serverId: IdSchema,
  /** base64url(HMAC-SHA256(secret, "server:" + nonce)): the server knows the secret too. */
  proof: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes of base64url'),
  /** The server's heartbeat interval; the worker's default timeout is three of them. */
  heartbeatMs: z.int().min(10).max(60_000),
});

/**
 * A full state, possibly split in `parts` frames to respect the 64 KiB bound.
 * All parts carry the same `seq` and `at` and arrive back to back; the worker
 * applies the snapshot atomically after the last part and stays stale before.
 */
export const SnapshotSchema = z
  .strictObject({
    ...envelope,
    type: z.literal('snapshot'),
    seq: SeqSchema,
    at: EpochMsSchema,
    part: z.int().min(0),
    parts: z.int().min(1).max(MAX_SNAPSHOT_PARTS),
    calls: z.array(CallSnapshotSchema),
    agents: z.array(AgentScheduleSchema),
  })
  .refine((s) => s.part < s.parts, { message: 'part must be < parts' });

export const DeltaSchema = z.strictObject({
  ...envelope,
  type: z.literal('delta'),
  seq: SeqSchema,
  at: EpochMsSchema,
  fact: FactSchema,
});

/** `seq` is the last seq the server has sent: a heartbeat also reveals a lost trailing delta. */
export const HeartbeatSchema = z.strictObject({
  ...envelope,
  type: z.literal('heartbeat'),
  seq: SeqSchema,
  at: EpochMsSchema,
});

export const ERROR_CODES = [
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
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const ErrorMessageSchema = z.strictObject({
  ...envelope,
  type: z.literal('error'),
  code: z.enum(ERROR_CODES),
  message: z.string().max(1024),
  /** What the error refers to: the offending frame's seq (as a string) or a call id. */
  ref: LabelSchema.optional(),
});

export const ServerMessageSchema = z.discriminatedUnion('type', [
  HelloSchema,
  SnapshotSchema,
  DeltaSchema,
  HeartbeatSchema,
  ErrorMessageSchema,
]);

// ---------------------------------------------------------------------------
// Worker -> server
// ---------------------------------------------------------------------------

export const RecordingStateSchema = z
  .strictObject({
    ...envelope,
    type: z.literal('recording-state'),
    callId: IdSchema,
    /** R7: what the agent may tell the customer right now. */
    recording: z.boolean(),
    /** Empty when recording; at least one when not. */
    reasons: z.array(z.enum(RECORDING_REASONS)).max(RECORDING_REASONS.length),
    at: EpochMsSchema,
    recordingId: IdSchema.optional(),
  })
  .refine((s) => (s.recording ? s.reasons.length === 0 : s.reasons.length > 0), {
    message: 'recording=true needs no reasons; recording=false needs at least one',
  });

export const WorkerMessageSchema = z.discriminatedUnion('type', [RecordingStateSchema, ErrorMessageSchema]);

export type Hello = z.infer<typeof HelloSchema>;
export type Snapshot = z.infer<typeof SnapshotSchema>;
export type Delta = z.infer<typeof DeltaSchema>;
export type Heartbeat = z.infer<typeof HeartbeatSchema>;
export type ErrorMessage = z.infer<typeof ErrorMessageSchema>;
export type ServerMessage = z.infer<typeof ServerMessageSchema>;
export type RecordingState = z.infer<typeof RecordingStateSchema>;
export type WorkerMessage = z.infer<typeof WorkerMessageSchema>;

/** What the recorder hands to `ControlClient.reportRecordingState` (the envelope is added for it). */
export type RecordingStateReport = Omit<RecordingState, 'v' | 'type'>;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

export type ParseResult<T> =
  | { ok: true; message: T }
  | { ok: false; code: ErrorCode; message: string; ref?: string };

const SERVER_TYPES = new Set(['hello', 'snapshot', 'delta', 'heartbeat', 'error']);
const WORKER_TYPES = new Set(['recording-state', 'error']);

/** Parses one server frame (what the worker receives). Never throws. */
export function parseServerMessage(data: string | Buffer, isBinary = false): ParseResult<ServerMessage> {
  return parseWith(data, isBinary, SERVER_TYPES, ServerMessageSchema);
}

/** Parses one worker frame (what the server receives). Never throws. */
export function parseWorkerMessage(data: string | Buffer, isBinary = false): ParseResult<WorkerMessage> {
  return parseWith(data, isBinary, WORKER_TYPES, WorkerMessageSchema);
}

function parseWith<T>(
  data: string | Buffer,
  isBinary: boolean,
  types: Set<string>,
  schema: z.ZodType<T>,
): ParseResult<T> {
  const bytes = typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : data.length;
  // Checked before JSON.parse so an oversized frame costs no parsing.
  if (bytes > MAX_MESSAGE_BYTES) {
    return { ok: false, code: 'too-large', message: `frame of ${bytes} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit` };
  }
  if (isBinary) return { ok: false, code: 'bad-json', message: 'binary frames are not accepted; send UTF-8 JSON text' };
  let raw: unknown;
  try {
    raw = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch {
    return { ok: false, code: 'bad-json', message: 'frame is not valid JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, code: 'bad-json', message: 'frame must be a JSON object' };
  }
  const obj = raw as Record<string, unknown>;
  const ref = typeof obj.seq === 'number' && Number.isSafeInteger(obj.seq) && obj.seq >= 0 ? String(obj.seq) : undefined;
  const withRef = <R extends { ok: false; code: ErrorCode; message: string }>(r: R): R & { ref?: string } =>
    ref === undefined ? r : { ...r, ref };
  if (obj.v !== PROTOCOL_VERSION) {
    return withRef({ ok: false, code: 'bad-version', message: `unsupported protocol version ${JSON.stringify(obj.v)}; this side speaks v: 1` });
  }
  if (typeof obj.type !== 'string' || !types.has(obj.type)) {
    return withRef({ ok: false, code: 'unknown-type', message: `unknown message type ${JSON.stringify(obj.type)?.slice(0, 64)}` });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    return withRef({ ok: false, code: 'invalid-message', message: describeIssues(parsed.error) });
  }
  return { ok: true, message: parsed.data };
}

/** A short, single-line description of the first few schema issues (never echoes values). */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ')
    .slice(0, 1000);
}

/** Serialises a frame, refusing to send what the other side would reject for size. */
export function encodeMessage(message: ServerMessage | WorkerMessage): string {
  const text = JSON.stringify(message);
  if (Buffer.byteLength(text, 'utf8') > MAX_MESSAGE_BYTES) {
    throw new RangeError(`control message of type ${message.type} exceeds ${MAX_MESSAGE_BYTES} bytes`);
  }
  return text;
}

export function errorMessage(code: ErrorCode, message: string, ref?: string): ErrorMessage {
  return ref === undefined
    ? { v: PROTOCOL_VERSION, type: 'error', code, message }
    : { v: PROTOCOL_VERSION, type: 'error', code, message, ref };
}
