import { z } from 'zod';
import { IdSchema } from '../ids/ids.ts';
import { ConsentEvidenceSchema, MAX_MONTHLY_CAP, MAX_PARTICIPANTS, MAX_WINDOWS, ParticipantListSchema, WindowSchema } from './facts.ts';

/**
 * The policy state as a whole, the result of applying every fact so far: one
 * entry per live call (participants, each customer's latest act, paused) and
 * one schedule per agent. PolicyState applies it atomically; the control
 * stream sends it in `snapshot` frames on (re)connect.
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
