import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';

/**
 * The policy facts: what the IVR/web side tells the worker about a call
 * (who is in it, who consented and how, pauses) and about an agent (the R6
 * schedule), and the ledger's word about erasures and deletions (R9). The gate
 * decides from these and nothing else; the policy stream (`control/protocolV2.ts`)
 * only carries them. docs/control-protocol.md describes them for integrators:
 * keep the two in step.
 *
 * Schemas are strict: an unknown field is an error, because a field we
 * silently ignore could be a condition the sender thinks we enforce.
 *
 * Times (`at`, window bounds, evidence time) are integer milliseconds since the
 * Unix epoch, UTC: the gate compares them with `Date.now()` and nothing else.
 */

/** Version labels and evidence references may carry dots and colons (`2024-03.v2`, `ivr:8812`). */
const LABEL_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
export const LabelSchema = z.string().regex(LABEL_PATTERN, 'must match /^[A-Za-z0-9_.:-]{1,128}$/');

export const EpochMsSchema = z.int().min(0).max(8_640_000_000_000_000);

/** Bounds that keep one fact cheap to apply and one call small enough for a snapshot part. */
export const MAX_PARTICIPANTS = 32;
export const MAX_WINDOWS = 512;
export const MAX_MONTHLY_CAP = 100_000;

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
export const ParticipantListSchema = z
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
/**
 * Who is in the call changed (a transfer to another agent, a supervisor joining, a party
 * leaving): `joined` are new participants (ids never used in this call before), `left` are ids
 * of participants who are no longer in it. One fact for both, so a transfer is one step: the gate
 * never sees the call with both agents or with none. Participants who left stay known (their
 * consent, their part of a recording, an erasure of it) but no longer count for the gate.
 */
export const ParticipantsChangedSchema = z
  .strictObject({
    type: z.literal('participants.changed'),
    callId: IdSchema,
    joined: z.array(ParticipantSchema).max(MAX_PARTICIPANTS),
    left: z.array(IdSchema).max(MAX_PARTICIPANTS),
  })
  .refine((f) => f.joined.length + f.left.length > 0, { message: 'name at least one participant who joined or left' })
  .refine((f) => new Set([...f.joined.map((p) => p.participantId), ...f.left]).size === f.joined.length + f.left.length, { message: 'a participant id may appear only once' });
export const CallPausedSchema = z.strictObject({ type: z.literal('call.paused'), callId: IdSchema });
export const CallResumedSchema = z.strictObject({ type: z.literal('call.resumed'), callId: IdSchema });

// -- the erasure ledger and deletion tombstones (R9) ----------------------------------------------

/** Why a recording (or one participant's part of it) is deleted. */
export const DELETION_REASONS = ['team-lead', 'operator', 'erasure', 'expiry'] as const;
export type DeletionReason = (typeof DELETION_REASONS)[number];

/** Recordings one erasure may name (a call has at most a handful: one per worker run). */
export const MAX_ERASURE_RECORDINGS = 256;

/**
 * R9: a customer withdrew with `erase`. Every worker that holds a recording of the call stops it
 * and deletes it (store, spool, data key), then answers `erasure.done`. `recordingIds` lists what
 * the catalogue knew when the request was accepted; a worker erases by callId whatever it holds,
 * listed or not.
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

export const FactSchema = z.discriminatedUnion('type', [
  CallStartedSchema,
  CallEndedSchema,
  ConsentGrantedSchema,
  ConsentDeclinedSchema,
  ConsentWithdrawnSchema,
  ScheduleSetSchema,
  ParticipantsChangedSchema,
  CallPausedSchema,
  CallResumedSchema,
  ErasureRequestedSchema,
  ErasureCompletedSchema,
  RecordingDeletedSchema,
  DeletionCompletedSchema,
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
/** The facts of the erasure ledger and deletion tombstones (everything else is about calls and schedules). */
export type LedgerFact = FactOf<'erasure.requested' | 'erasure.completed' | 'recording.deleted' | 'deletion.completed'>;
