import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';

/**
 * The control-stream wire format, version 1 (docs/control-protocol.md is the
 * human-readable twin of this file: keep them in step).
 *
 * Every frame is one UTF-8 JSON object of at most 64 KiB with `v: 1` and a
 * `type`. Schemas are strict: an unknown field is an error, because a field we
 * silently ignore could be a condition the sender thinks we enforce.
 *
 * Times (`at`, window bounds, evidence time) are integer milliseconds since the
 * Unix epoch, UTC: the gate compares them with `Date.now()` and nothing else.
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


/** Version labels and evidence references may carry dots and colons (`2024-03.v2`, `ivr:8812`). */
const LABEL_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
const LabelSchema = z.string().regex(LABEL_PATTERN, 'must match /^[A-Za-z0-9_.:-]{1,128}$/');

const EpochMsSchema = z.int().min(0).max(8_640_000_000_000_000);
const SeqSchema = z.int().min(0);

/** Bounds that keep one fact cheap to apply and one call small enough for a snapshot part. */
export const MAX_PARTICIPANTS = 32;
export const MAX_WINDOWS = 512;
export const MAX_MONTHLY_CAP = 100_000;
export const MAX_SNAPSHOT_PARTS = 1024;

// ---------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------

export const AgentParticipantSchema = z.strictObject({
  participantId: IdSchema,
  role: z.literal('agent'),
  /** The agent's pseudonymous person id; schedules are keyed by it (`schedule.set.agentId`). */
  subjectId: IdSchema,
  /** Who may play the agent's recordings besides the agent (R10). */
  teamLeadId: IdSchema.optional(),
});

export const CustomerParticipantSchema = z.strictObject({
  participantId: IdSchema,
  role: z.literal('customer'),
  subjectId: IdSchema,
});

export const ParticipantSchema = z.discriminatedUnion('role', [AgentParticipantSchema, CustomerParticipantSchema]);

/**
 * The positive act of R3. `method` names how it was given (a DTMF key after the
 * prompt, a recognised spoken "yes", a web/app form); there is deliberately no
 * "implied" or "silence" method: an announcement followed by silence is not
 * consent and cannot be expressed on this wire.
 */
export const CONSENT_METHODS = ['dtmf', 'voice', 'web', 'app', 'sms', 'written'] as const;
export const ConsentEvidenceSchema = z.strictObject({
  method: z.enum(CONSENT_METHODS),
  /** When the act happened (not when the fact was sent). */
  at: EpochMsSchema,
  /** Version of the information the customer was given before acting. */
  infoVersion: LabelSchema,
  /** Opaque pointer into the IVR/web system's own evidence log; never personal data. */
  ref: LabelSchema.optional(),
});

/** Participant ids must be unique in a call, and a recordable call has at least one agent and one customer. */
const ParticipantListSchema = z
  .array(ParticipantSchema)
  .min(2)
  .max(MAX_PARTICIPANTS)
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    for (const p of list) {
      if (seen.has(p.participantId)) ctx.addIssue({ code: 'custom', message: `duplicate participantId ${p.participantId}` });
      seen.add(p.participantId);
    }
    if (!list.some((p) => p.role === 'agent')) ctx.addIssue({ code: 'custom', message: 'a call needs at least one agent' });
    if (!list.some((p) => p.role === 'customer')) ctx.addIssue({ code: 'custom', message: 'a call needs at least one customer' });
  });

export const WindowSchema = z
  .strictObject({ start: EpochMsSchema, end: EpochMsSchema })
  .refine((w) => w.end > w.start, { message: 'window end must be after start' });

export const CallStartedSchema = z.strictObject({
  type: z.literal('call.started'),
  callId: IdSchema,
  participants: ParticipantListSchema,
});
export const CallEndedSchema = z.strictObject({ type: z.literal('call.ended'), callId: IdSchema });
export const ConsentGrantedSchema = z.strictObject({
  type: z.literal('consent.granted'),
  callId: IdSchema,
  participantId: IdSchema,
  evidence: ConsentEvidenceSchema,
});
export const ConsentDeclinedSchema = z.strictObject({
  type: z.literal('consent.declined'),
  callId: IdSchema,
  participantId: IdSchema,
  evidence: ConsentEvidenceSchema,
});
export const ConsentWithdrawnSchema = z.strictObject({
  type: z.literal('consent.withdrawn'),
  callId: IdSchema,
  participantId: IdSchema,
  /** R9: also delete what was already recorded of this participant. */
  erase: z.boolean(),
  evidence: ConsentEvidenceSchema,
});
export const ScheduleSetSchema = z.strictObject({
  type: z.literal('schedule.set'),
  /** The agent's subjectId. The set replaces the agent's previous schedule entirely. */
  agentId: IdSchema,
  windows: z.array(WindowSchema).max(MAX_WINDOWS),
  monthlyCap: z.int().min(0).max(MAX_MONTHLY_CAP),
});
export const CallPausedSchema = z.strictObject({ type: z.literal('call.paused'), callId: IdSchema });
export const CallResumedSchema = z.strictObject({ type: z.literal('call.resumed'), callId: IdSchema });

export const FactSchema = z.discriminatedUnion('type', [
  CallStartedSchema,
  CallEndedSchema,
  ConsentGrantedSchema,
  ConsentDeclinedSchema,
  ConsentWithdrawnSchema,
  ScheduleSetSchema,
  CallPausedSchema,
  CallResumedSchema,
]);

export type AgentParticipant = z.infer<typeof AgentParticipantSchema>;
export type CustomerParticipant = z.infer<typeof CustomerParticipantSchema>;
export type Participant = z.infer<typeof ParticipantSchema>;
export type ConsentMethod = (typeof CONSENT_METHODS)[number];
export type ConsentEvidence = z.infer<typeof ConsentEvidenceSchema>;
export type Window = z.infer<typeof WindowSchema>;
export type Fact = z.infer<typeof FactSchema>;
export type FactType = Fact['type'];
export type FactOf<T extends FactType> = Extract<Fact, { type: T }>;

// ---------------------------------------------------------------------------
// Snapshot content
// ---------------------------------------------------------------------------

export const CONSENT_STATUSES = ['granted', 'declined', 'withdrawn'] as const;
export const ConsentEntrySchema = z.strictObject({
  participantId: IdSchema,
  status: z.enum(CONSENT_STATUSES),
  evidence: ConsentEvidenceSchema,
  /** Only for `withdrawn`. */
  erase: z.boolean().optional(),
});

export const CallSnapshotSchema = z.strictObject({
  callId: IdSchema,
  participants: ParticipantListSchema,
  consents: z.array(ConsentEntrySchema).max(MAX_PARTICIPANTS),
  paused: z.boolean(),
});

export const AgentScheduleSchema = z.strictObject({
  agentId: IdSchema,
  windows: z.array(WindowSchema).max(MAX_WINDOWS),
  monthlyCap: z.int().min(0).max(MAX_MONTHLY_CAP),
});

export type ConsentStatus = (typeof CONSENT_STATUSES)[number];
export type ConsentEntry = z.infer<typeof ConsentEntrySchema>;
export type CallSnapshot = z.infer<typeof CallSnapshotSchema>;
export type AgentSchedule = z.infer<typeof AgentScheduleSchema>;

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
  'unknown-call',
  'call-ended',
  'duplicate-call',
  'unknown-participant',
  'not-a-customer',
  'stale-evidence',
  'schedule-rejected',
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

/** Why a gate is closed: the policy reasons from decideGate plus the recorder's own. */
export const POLICY_REASONS = [
  'control-stale',
  'unknown-call',
  'call-ended',
  'no-consent',
  'consent-declined',
  'consent-withdrawn',
  'outside-window',
  'cap-reached',
  'paused',
] as const;
export const RECORDER_REASONS = ['storage-unavailable', 'overloaded'] as const;
export const RECORDING_REASONS = [...POLICY_REASONS, ...RECORDER_REASONS] as const;
export type PolicyReason = (typeof POLICY_REASONS)[number];
export type RecorderReason = (typeof RECORDER_REASONS)[number];
export type RecordingReason = (typeof RECORDING_REASONS)[number];

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
