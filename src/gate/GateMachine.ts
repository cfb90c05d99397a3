import type { RecorderReason } from './reasons.ts';
import { decideGate, nextGateWake, type GateDecision, type GateReason } from './decideGate.ts';
import type { PolicyState } from './PolicyState.ts';

/** The gate of one call: two named states, and every transition says why. */
export type GateStateName = 'closed' | 'open';
export type ClosedReason = GateReason | RecorderReason;

export interface GateTransition {
  readonly callId: string;
  readonly from: GateStateName;
  readonly to: GateStateName;
  /** Why it is closed now (empty when it opened). */
  readonly reasons: readonly ClosedReason[];
  /** The run this transition opened or closed; -1 while the gate has never opened. */
  readonly runIndex: number;
  readonly atMs: number;
  /** The decision behind the transition (consent evidence for the audit trail). */
  readonly decision: GateDecision;
}

/**
 * Per-call gate state machine over a shared PolicyState. No timers and no I/O:
 * the recorder calls `evaluate` on every control `change` and when its one
 * shared timer (armed at the minimum `nextWake` over all calls) fires, and
 * applies a returned transition before it writes the next packet.
 *
 * `runIndex` counts openings (0-based): each open period is its own run of
 * segments, so a closed stretch is never papered over inside one run. A track restarted inside
 * an open period (a speaker who reconnects) takes the next index too (`reserveRun`), so run
 * indices stay unique within a call and grow with time on every track.
 */
export class GateMachine {
  readonly callId: string;
  readonly #state: PolicyState;
  #name: GateStateName = 'closed';
  #reasons: readonly ClosedReason[] = ['unknown-call'];
  #runIndex = -1;
  #last: GateDecision | undefined;

  constructor(state: PolicyState, callId: string) {
    this.#state = state;
    this.callId = callId;
  }

  get state(): GateStateName {
    return this.#name;
  }

  get isOpen(): boolean {
    return this.#name === 'open';
  }

  get reasons(): readonly ClosedReason[] {
    return this.#reasons;
  }

  get runIndex(): number {
    return this.#runIndex;
  }

  /**
   * Takes the next run index for a track that starts again inside the current open period (its
   * speaker reconnected with a new producer): the next opening then takes the index after it.
   */
  reserveRun(): number {
    return ++this.#runIndex;
  }

  /** The last decision evaluated (undefined before the first evaluate). */
  get decision(): GateDecision | undefined {
    return this.#last;
  }

  /**
   * Re-decides at `nowMs`. `recorderReasons` are the recorder's own reasons to
   * stay closed (`storage-unavailable`, `overloaded`); any of them closes the
   * gate. Open while `needsAdmission` counts as open: the recorder must not
   * write until admitted (see GateDecision.needsAdmission).
   * Returns the transition, or undefined when the state did not change (the
   * reasons of a closed gate may still have changed: read `reasons`).
   */
  evaluate(nowMs: number, recorderReasons: readonly RecorderReason[] = []): GateTransition | undefined {
    const decision = decideGate(this.#state, this.callId, nowMs);
    this.#last = decision;
    const reasons: ClosedReason[] = [...decision.reasons, ...recorderReasons];
    const next: GateStateName = reasons.length === 0 ? 'open' : 'closed';
    const from = this.#name;
    this.#reasons = reasons;
    if (next === from) return undefined;
    this.#name = next;
    if (next === 'open') this.#runIndex++;
    return { callId: this.callId, from, to: next, reasons, runIndex: this.#runIndex, atMs: nowMs, decision };
  }

  /** When the passage of time alone can next change this gate's decision (see nextGateWake). */
  nextWake(nowMs: number): number | undefined {
    return nextGateWake(this.#state, this.callId, nowMs);
  }
}
