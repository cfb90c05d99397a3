import type { ConsentEvidence } from './facts.ts';
import type { PolicyReason } from './reasons.ts';
import { monthKey, nextMonthStart } from './month.ts';
import type { PolicyState } from './PolicyState.ts';
import { insideWindow, nextBoundary } from './schedule.ts';

export type GateReason = PolicyReason;

export interface GateDecision {
  /** True only when every condition holds; closed is the default. */
  readonly open: boolean;
  /** Why it is closed (all reasons that apply, in a fixed order); empty when open. */
  readonly reasons: readonly GateReason[];
  /** The granting evidence of every customer, when open (what the audit trail records). */
  readonly evidence: readonly ConsentEvidence[];
  /**
   * Open, but the recording is not yet admitted under the monthly cap: the
   * recorder must get the control plane's admission for every agent (then
   * `state.markAdmitted`) before it writes the first packet, and drop packets
   * meanwhile. Never true when closed.
   */
  readonly needsAdmission: boolean;
}

/**
 * The gate (R3-R6), pure. Open only when:
 *  - the control stream is fresh (else `control-stale`);
 *  - the call is known (`unknown-call`) and not ended (`call-ended`);
 *  - it is not paused (`paused`);
 *  - every customer's latest act is a grant (`no-consent` when a customer has
 *    not acted: silence after the announcement is not consent;
 *    `consent-declined`; `consent-withdrawn`);
 *  - every agent is inside one of their scheduled windows at `nowMs`
 *    (`outside-window`; an agent without a schedule is outside);
 *  - the recording is admitted under every agent's monthly cap, or could be:
 *    the cap is checked when a recording is admitted, at the first opening of
 *    the gate for the call, and an admitted call keeps its admission until it
 *    ends (later openings in the same call are new runs of the same
 *    recording, not new recordings). An agent who joined after the admission
 *    (a transfer) is admitted for the same recording under their own cap.
 *    Otherwise `cap-reached`.
 *
 * All applicable reasons are reported, so the agent (R7) and the DPO see the
 * whole picture rather than the first obstacle.
 */
export function decideGate(state: PolicyState, callId: string, nowMs: number): GateDecision {
  const reasons: GateReason[] = [];
  if (!state.fresh) reasons.push('control-stale');
  const call = state.call(callId);
  if (call === undefined) return closed([...reasons, 'unknown-call']);
  if (call.ended) return closed([...reasons, 'call-ended']);
  if (call.paused) reasons.push('paused');

  const evidence: ConsentEvidence[] = [];
  let noConsent = false;
  let declined = false;
  let withdrawn = false;
  let customers = 0;
  const agents: string[] = [];
  for (const p of call.participants.values()) {
    // Who left (a transfer) no longer counts: the gate follows the agents and customers in the call now.
    if (call.left.has(p.participantId)) continue;
    if (p.role === 'agent') {
      agents.push(p.subjectId);
      continue;
    }
    customers++;
    const consent = call.consents.get(p.participantId);
    if (consent === undefined) noConsent = true;
    else if (consent.status === 'declined') declined = true;
    else if (consent.status === 'withdrawn') withdrawn = true;
    else evidence.push(consent.evidence);
  }
  // A call without customers or agents is not a recordable training call (the schema forbids it; belt and braces).
  if (customers === 0 || noConsent) reasons.push('no-consent');
  if (declined) reasons.push('consent-declined');
  if (withdrawn) reasons.push('consent-withdrawn');

  let outside = agents.length === 0;
  for (const agentId of agents) {
    const schedule = state.schedule(agentId);
    if (schedule === undefined || !insideWindow(schedule.windows, nowMs)) outside = true;
  }
  if (outside) reasons.push('outside-window');

  // Admitted means admitted for every agent in the call now: an agent who joined after the
  // admission (a transfer) is admitted under their own cap before anything more is kept.
  const admission = state.admission(callId);
  const admitted = admission !== undefined && agents.every((a) => admission.agentIds.includes(a));
  if (!admitted) {
    let capReached = state.isCapRefused(callId);
    const month = monthKey(nowMs);
    for (const agentId of agents) {
      if (admission?.agentIds.includes(agentId)) continue;
      // An agent without a schedule is already `outside-window`; the cap is a property of a schedule.
      const schedule = state.schedule(agentId);
      if (schedule !== undefined && state.capUsed(agentId, month, callId) >= schedule.monthlyCap) capReached = true;
    }
    if (capReached) reasons.push('cap-reached');
  }

  if (reasons.length > 0) return closed(reasons);
  return { open: true, reasons: [], evidence, needsAdmission: !admitted };
}

function closed(reasons: GateReason[]): GateDecision {
  return { open: false, reasons, evidence: [], needsAdmission: false };
}

/**
 * The next instant after `nowMs` at which the passage of time alone can change
 * decideGate for this call: a window boundary of one of its agents, or the
 * start of next month when a not-yet-admitted call is held by the cap.
 * Undefined when only a new fact can change it. The recorder takes the minimum
 * over its calls and arms one shared timer.
 */
export function nextGateWake(state: PolicyState, callId: string, nowMs: number): number | undefined {
  const call = state.call(callId);
  if (call === undefined || call.ended) return undefined;
  let wake: number | undefined;
  for (const agent of state.agentsOf(callId)) {
    const schedule = state.schedule(agent.subjectId);
    if (schedule === undefined) continue;
    const b = nextBoundary(schedule.windows, nowMs);
    if (b !== undefined && (wake === undefined || b < wake)) wake = b;
  }
  if (state.admission(callId) === undefined && !state.isCapRefused(callId)) {
    const m = nextMonthStart(nowMs);
    if (wake === undefined || m < wake) wake = m;
  }
  return wake;
}
