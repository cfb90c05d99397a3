import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { ConsentEvidenceSchema, DELETION_REASONS, MAX_ERASURE_RECORDINGS, MAX_MONTHLY_CAP, MAX_PARTICIPANTS, MAX_WINDOWS, ParticipantListSchema, WindowSchema } from './facts.ts';

/**
 * The policy state as a whole, the result of applying every fact so far: one
 * entry per live call (participants, each customer's latest act, paused), one
 * schedule per agent, and the ledger: erasures and deletions accepted but not
 * yet completed, and the tombstones of recent completed ones. PolicyState
 * applies it atomically; the policy stream sends it in `snapshot` frames on
 * (re)connect.
 */

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
  /** Participants who left the call (`participants.changed`): known, but no longer counted by the gate. */
  left: z.array(IdSchema).max(MAX_PARTICIPANTS).optional(),
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

/** An erasure accepted and not yet completed (R9). */
export const PendingErasureSchema = z.strictObject({
  erasureId: IdSchema,
  callId: IdSchema,
  participantId: IdSchema,
  recordingIds: z.array(IdSchema).max(MAX_ERASURE_RECORDINGS),
});
/** A deletion accepted and not yet completed. */
export const PendingDeletionSchema = z.strictObject({
  deletionId: IdSchema,
  recordingId: IdSchema,
  participantId: IdSchema.optional(),
  reason: z.enum(DELETION_REASONS),
});
/** A completed deletion or erasure a writer must still honour: nothing more is written for it. */
export const TombstoneSchema = z.strictObject({ recordingId: IdSchema, participantId: IdSchema.optional() });

export type PendingErasure = z.infer<typeof PendingErasureSchema>;
export type PendingDeletion = z.infer<typeof PendingDeletionSchema>;
export type Tombstone = z.infer<typeof TombstoneSchema>;

/** The ledger part of a snapshot. */
export interface LedgerSnapshot {
  readonly erasures: readonly PendingErasure[];
  readonly deletions: readonly PendingDeletion[];
  readonly tombstones: readonly Tombstone[];
}
