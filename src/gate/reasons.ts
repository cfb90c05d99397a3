/**
 * Why things are as they are, in words the audit trail, the R7 report and the
 * control stream all share.
 */

/** Why the gate is closed by policy (decideGate, R3-R6). */
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
/** Why the recorder keeps a policy-open gate from writing: its own limits (R12). */
export const RECORDER_REASONS = ['storage-unavailable', 'overloaded'] as const;
/**
 * Why an admissible recording is not written on the control plane's word: a deletion or erasure
 * stopped it (`deleted`; an erasure reports `consent-withdrawn`, the customer's act), or the
 * monthly cap could not be decided in time (`cap-unknown`: the gate stays closed and asks again).
 */
export const LEDGER_REASONS = ['deleted', 'cap-unknown'] as const;
/** Every reason a call is not being recorded (what R7 reports back). */
export const RECORDING_REASONS = [...POLICY_REASONS, ...RECORDER_REASONS, ...LEDGER_REASONS] as const;
export type PolicyReason = (typeof POLICY_REASONS)[number];
export type RecorderReason = (typeof RECORDER_REASONS)[number];
export type LedgerReason = (typeof LEDGER_REASONS)[number];
export type RecordingReason = (typeof RECORDING_REASONS)[number];

/** Why PolicyState refuses a well-formed fact: it does not fit what the worker knows. */
export const FACT_REJECTIONS = [
  'unknown-call',
  'call-ended',
  'duplicate-call',
  'unknown-participant',
  'duplicate-participant',
  'not-a-customer',
  'stale-evidence',
  'schedule-rejected',
] as const;
export type FactRejection = (typeof FACT_REJECTIONS)[number];
