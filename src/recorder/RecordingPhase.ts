import type { ClosedReason } from '../gate/GateMachine.ts';
import { OptinError } from '../errors/OptinError.ts';

/**
 * Where one call's recording is: the single source of truth for "are we writing this call now".
 *
 * The GateMachine says whether the policy allows recording; this phase says what the recorder
 * actually does about it. They differ while the recording waits for its cap admission, after
 * the cap refused it, and after an erasure: an open gate alone never means audio is kept.
 *
 * ```text
 *                 gate open, needs admission            admitted under the cap
 *   ┌────────┐ ─────────────────────────────► ┌───────────┐ ─────────────────► ┌──────────┐
 *   │ closed │                                │ admitting │                    │ admitted │ ◄──┐
 *   └────────┘ ◄───────────────────────────── └───────────┘                    └──────────┘    │ gate closes
 *                admission failed (retried)         │ cap reached               gate │ open    │ (reasons)
 *                                                   ▼                                ▼         │
 *                                             ┌───────────┐                   ┌───────────┐    │
 *                                             │  refused  │                   │ recording │ ───┘
 *                                             └───────────┘                   └───────────┘
 *   from any phase: erase ──► erased (never writes again in this call)
 *   from any phase but ended: close ──► ended (erase after ended still deletes: ended, erased)
 * ```
 *
 * Only `recording` writes. Entering it is "recording started"; leaving it is "recording
 * stopped", with the reasons; those two moments are what the audit trail records as
 * `gate.transition` (CallRecorder), not the GateMachine's own flips.
 */
export type RecordingPhase =
  /** No recording admitted; the gate is closed, or open but not (yet) admissible. */
  | { readonly name: 'closed' }
  /** The gate opened; the cap admission of `candidateId` is in flight. Packets are dropped. */
  | { readonly name: 'admitting'; readonly candidateId: string }
  /** The monthly cap refused this call's recording; it is not recorded (until the call ends). */
  | { readonly name: 'refused' }
  /** Admitted (a recording exists), not writing: before its first run or between runs. */
  | { readonly name: 'admitted'; readonly recordingId: string }
  /** Writing run `run` (the gate's opening count) of the recording. */
  | { readonly name: 'recording'; readonly recordingId: string; readonly run: number }
  /** Consent withdrawn with erase (R5, R9): never writes again; `refused` keeps R7's cap reason. */
  | { readonly name: 'erased'; readonly recordingId: string | undefined; readonly refused: boolean }
  /** The call left the recorder (media ended, or shutdown). */
  | { readonly name: 'ended'; readonly recordingId: string | undefined; readonly erased: boolean };

export type RecordingPhaseName = RecordingPhase['name'];

/** Why a recording stopped: the gate's reasons, or the recorder's own end of the call. */
export type RecordingStopReason = ClosedReason | 'erased' | 'ended';

/**
 * Every legal move, in one place. A move not listed is a bug in the recorder and throws.
 * `erased -> erased`: a second withdrawal with erase, or a cap refusal landing after the
 * erasure. `ended -> ended`: an erasure after the call ended (its deletion still runs).
 */
const NEXT: { readonly [K in RecordingPhaseName]: readonly RecordingPhaseName[] } = {
  closed: ['admitting', 'erased', 'ended'],
  admitting: ['closed', 'refused', 'admitted', 'erased', 'ended'],
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
export function reportOf(phase: RecordingPhase, gateReasons: readonly ClosedReason[]): { recording: boolean; reasons: ClosedReason[] } | undefined {
  if (phase.name === 'ended') return undefined;
  if (phase.name === 'recording') return { recording: true, reasons: [] };
  if (gateReasons.length > 0) return { recording: false, reasons: [...gateReasons] };
  if (phase.name === 'refused' || (phase.name === 'erased' && phase.refused)) return { recording: false, reasons: ['cap-reached'] };
  if (phase.name === 'erased') return { recording: false, reasons: ['consent-withdrawn'] };
  return undefined;
}
