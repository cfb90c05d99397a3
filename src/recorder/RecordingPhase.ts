import type { ClosedReason } from '../gate/GateMachine.ts';
import type { RecordingReason } from '../gate/reasons.ts';
import { OptinError } from '../errors/OptinError.ts';

/**
 * Where one call's recording is: the single source of truth for "are we writing this call now".
 *
 * The GateMachine says whether the policy allows recording; this phase says what the recorder
 * actually does about it. They differ while the recording waits for its cap admission (the
 * control plane decides it), after the cap refused it or could not be decided, and after an
 * erasure or deletion: an open gate alone never means audio is kept.
 *
 * ```text
 *                 gate open, needs admission            admitted under the cap
 *   ┌────────┐ ─────────────────────────────► ┌───────────┐ ─────────────────► ┌──────────┐
 *   │ closed │                                │ admitting │                    │ admitted │ ◄──┐
 *   └────────┘ ◄───────────────────────────── └───────────┘                    └──────────┘    │ gate closes
 *        stream lost before the answer     │     │ cap reached               gate │ open    │ (reasons)
 *        (same candidate asked again)      │     ▼                                ▼         │
 *                   no answer in time      │ ┌───────────┐                   ┌───────────┐    │
 *   ┌─────────────┐ ◄──────────────────────┘ │  refused  │                   │ recording │ ───┘
 *   │ cap-unknown │ ── retry (same candidate) ──► admitting                  └───────────┘
 *   └─────────────┘
 *   from any phase: erase or deletion ──► erased (never writes again in this call)
 *   from any phase but ended: close ──► ended (erase after ended still deletes: ended, erased)
 * ```
 *
 * A candidate recording id keeps its identity until the control plane answered for it: asking
 * again for the same id is idempotent there, so a lost answer never counts a recording twice.
 *
 * Only `recording` writes. Entering it is "recording started"; leaving it is "recording
 * stopped", with the reasons; those two moments are what the audit trail records as
 * `gate.transition` (CallRecorder), not the GateMachine's own flips.
 */
export type RecordingPhase =
  /**
   * No recording admitted; the gate is closed, or open but not (yet) admissible. `candidateId`:
   * an admission was asked and its answer lost with the stream; the next one asks for the same id.
   */
  | { readonly name: 'closed'; readonly candidateId?: string }
  /** The gate opened; the cap admission of `candidateId` is in flight. Packets are dropped. */
  | { readonly name: 'admitting'; readonly candidateId: string }
  /** The control plane gave no cap decision in time (R7 `cap-unknown`): closed, asked again at `retryAtMs`. */
  | { readonly name: 'cap-unknown'; readonly candidateId: string; readonly retryAtMs: number }
  /** The monthly cap refused this call's recording; it is not recorded (until the call ends). */
  | { readonly name: 'refused' }
  /** Admitted (a recording exists), not writing: before its first run or between runs. */
  | { readonly name: 'admitted'; readonly recordingId: string }
  /** Writing run `run` (the gate's opening count) of the recording. */
  | { readonly name: 'recording'; readonly recordingId: string; readonly run: number }
  /**
   * Stopped for good by an erasure (consent withdrawn with erase, R5, R9) or a deletion (R7
   * `deleted`): never writes again in this call; `refused` keeps R7's cap reason.
   */
  | { readonly name: 'erased'; readonly recordingId: string | undefined; readonly refused: boolean; readonly cause: ErasureCause }
  /** The call left the recorder (media ended, or shutdown). */
  | { readonly name: 'ended'; readonly recordingId: string | undefined; readonly erased: boolean };

export type RecordingPhaseName = RecordingPhase['name'];

/** What stopped a recording for good: the customer's erasure, or a deletion (team lead, operator, expiry). */
export type ErasureCause = 'erasure' | 'deletion';

/** Why a recording stopped: the gate's reasons, or the recorder's own end of the call. */
export type RecordingStopReason = ClosedReason | 'erased' | 'ended';

/**
 * Every legal move, in one place. A move not listed is a bug in the recorder and throws.
 * `erased -> erased`: a second withdrawal with erase, or a cap refusal landing after the
 * erasure. `ended -> ended`: an erasure after the call ended (its deletion still runs).
 */
const NEXT: { readonly [K in RecordingPhaseName]: readonly RecordingPhaseName[] } = {
  closed: ['admitting', 'erased', 'ended'],
  admitting: ['closed', 'cap-unknown', 'refused', 'admitted', 'erased', 'ended'],
  'cap-unknown': ['admitting', 'erased', 'ended'],
  refused: ['erased', 'ended'],
  admitted: ['recording', 'erased', 'ended'],
  recording: ['admitted', 'erased', 'ended'],
  erased: ['erased', 'ended'],
  ended: ['ended'],
};

export function canEnter(from: RecordingPhaseName, to: RecordingPhaseName): boolean {
  return NEXT[from].includes(to);
}

/** Throws (loudly: it is a recorder bug) unless `from -> to` is a legal move. */
export function assertCanEnter(from: RecordingPhaseName, to: RecordingPhaseName): void {
  if (!canEnter(from, to)) {
    throw new OptinError('INTERNAL', `recording phase cannot move from '${from}' to '${to}': a bug in CallRecorder (see src/recorder/RecordingPhase.ts)`);
  }
}

/** The recording this call writes to, once admitted (never the candidate of an admission in flight). */
export function recordingIdOf(phase: RecordingPhase): string | undefined {
  switch (phase.name) {
    case 'admitted':
    case 'recording':
    case 'erased':
    case 'ended':
      return phase.recordingId;
    default:
      return undefined;
  }
}

export function isErased(phase: RecordingPhase): boolean {
  return phase.name === 'erased' || (phase.name === 'ended' && phase.erased);
}

/**
 * What the call reports to the agent (R7) in `phase` with the gate closed for `gateReasons`
 * (empty when the gate is open). Undefined: keep the last report (an admission in flight, or
 * an admitted opening not yet applied, must not flash "not recording" without a reason).
 * Nothing is reported once the call has ended.
 */
export function reportOf(phase: RecordingPhase, gateReasons: readonly ClosedReason[]): { recording: boolean; reasons: RecordingReason[] } | undefined {
  if (phase.name === 'ended') return undefined;
  if (phase.name === 'recording') return { recording: true, reasons: [] };
  if (gateReasons.length > 0) return { recording: false, reasons: [...gateReasons] };
  if (phase.name === 'refused' || (phase.name === 'erased' && phase.refused)) return { recording: false, reasons: ['cap-reached'] };
  if (phase.name === 'erased') return { recording: false, reasons: [phase.cause === 'deletion' ? 'deleted' : 'consent-withdrawn'] };
  if (phase.name === 'cap-unknown') return { recording: false, reasons: ['cap-unknown'] };
  return undefined;
}
