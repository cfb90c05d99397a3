import { describe, expect, it } from 'vitest';
import type { ConsentEvidence, Fact, Participant } from '../../../src/gate/facts.ts';
import { decideGate, nextGateWake } from '../../../src/gate/decideGate.ts';
import { GateMachine } from '../../../src/gate/GateMachine.ts';
import { monthKey, nextMonthStart } from '../../../src/gate/month.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 4, 12, 9, 0, 0); // inside the window below
const WINDOW = { start: T0 - HOUR, end: T0 + 2 * HOUR };

const agent: Participant = { participantId: 'p-agent', role: 'agent', subjectId: 'agent-1', teamLeadId: 'lead-1' };
const cust: Participant = { participantId: 'p-cust', role: 'customer', subjectId: 'cust-1' };
const cust2: Participant = { participantId: 'p-cust2', role: 'customer', subjectId: 'cust-2' };
const ev = (at = T0 - 60_000): ConsentEvidence => ({ method: 'dtmf', at, infoVersion: 'info-2025-05.v3', ref: 'ivr:1' });

function apply(state: PolicyState, fact: Fact): void {
  const r = state.applyFact(fact);
  if (!r.ok) throw new Error(`${r.code}: ${r.message}`);
}

/** A fresh state where call c1 would be open at T0. */
function openState(participants: Participant[] = [agent, cust]): PolicyState {
  const s = new PolicyState();
  s.applySnapshot([], [{ agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 }]);
  apply(s, { type: 'call.started', callId: 'c1', participants });
  for (const p of participants) {
    if (p.role === 'customer') apply(s, { type: 'consent.granted', callId: 'c1', participantId: p.participantId, evidence: ev() });
  }
  return s;
}

describe('decideGate', () => {
  it('is closed by default: a new state is stale and knows no call', () => {
    const d = decideGate(new PolicyState(), 'c1', T0);
    expect(d).toEqual({ open: false, reasons: ['control-stale', 'unknown-call'], evidence: [], needsAdmission: false });
  });

  it('opens when every condition holds, with the consent evidence, pending admission', () => {
    const d = decideGate(openState(), 'c1', T0);
    expect(d.open).toBe(true);
    expect(d.reasons).toEqual([]);
    expect(d.evidence).toEqual([ev()]);
    expect(d.needsAdmission).toBe(true);
  });

  it('control-stale', () => {
    const s = openState();
    s.markStale('seq-gap');
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['control-stale'] });
  });

  it('unknown-call', () => {
    expect(decideGate(openState(), 'nope', T0)).toMatchObject({ open: false, reasons: ['unknown-call'] });
  });

  it('call-ended, and late facts about the ended call are refused', () => {
    const s = openState();
    apply(s, { type: 'call.ended', callId: 'c1' });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['call-ended'] });
    expect(s.applyFact({ type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev() })).toMatchObject({ ok: false, code: 'call-ended' });
  });

  it('no-consent: an announcement followed by silence is not consent', () => {
    const s = new PolicyState();
    s.applySnapshot([], [{ agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 }]);
    apply(s, { type: 'call.started', callId: 'c1', participants: [agent, cust] });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['no-consent'] });
  });

  it('no-consent when only one of two customers granted', () => {
    const s = new PolicyState();
    s.applySnapshot([], [{ agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 }]);
    apply(s, { type: 'call.started', callId: 'c1', participants: [agent, cust, cust2] });
    apply(s, { type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev() });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['no-consent'] });
    apply(s, { type: 'consent.granted', callId: 'c1', participantId: 'p-cust2', evidence: ev() });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('consent-declined', () => {
    const s = openState();
    apply(s, { type: 'consent.declined', callId: 'c1', participantId: 'p-cust', evidence: ev(T0 - 1000) });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['consent-declined'] });
  });

  it('consent-withdrawn closes at once and keeps the erase flag', () => {
    const s = openState();
    apply(s, { type: 'consent.withdrawn', callId: 'c1', participantId: 'p-cust', erase: true, evidence: ev(T0 - 1000) });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['consent-withdrawn'] });
    expect(s.call('c1')?.consents.get('p-cust')).toMatchObject({ status: 'withdrawn', erase: true });
  });

  it('a grant older than the refusal it would replace is refused; a newer positive act re-grants', () => {
    const s = openState();
    apply(s, { type: 'consent.withdrawn', callId: 'c1', participantId: 'p-cust', erase: false, evidence: ev(T0 - 1000) });
    expect(s.applyFact({ type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev(T0 - 5000) })).toMatchObject({ ok: false, code: 'stale-evidence' });
    expect(decideGate(s, 'c1', T0).open).toBe(false);
    apply(s, { type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev(T0 - 500) });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('consent facts for agents or unknown participants are refused and change nothing', () => {
    const s = openState();
    expect(s.applyFact({ type: 'consent.declined', callId: 'c1', participantId: 'p-agent', evidence: ev() })).toMatchObject({ ok: false, code: 'not-a-customer' });
    expect(s.applyFact({ type: 'consent.declined', callId: 'c1', participantId: 'ghost', evidence: ev() })).toMatchObject({ ok: false, code: 'unknown-participant' });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('outside-window: before, at the end (exclusive), and without any schedule', () => {
    const s = openState();
    expect(decideGate(s, 'c1', WINDOW.start).open).toBe(true);
    expect(decideGate(s, 'c1', WINDOW.start - 1)).toMatchObject({ open: false, reasons: ['outside-window'] });
    expect(decideGate(s, 'c1', WINDOW.end)).toMatchObject({ open: false, reasons: ['outside-window'] });
    const noSchedule = new PolicyState();
    noSchedule.applySnapshot([], []);
    apply(noSchedule, { type: 'call.started', callId: 'c1', participants: [agent, cust] });
    apply(noSchedule, { type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev() });
    expect(decideGate(noSchedule, 'c1', T0).reasons).toContain('outside-window');
  });

  it('a schedule that breaks R6 is refused and clears the previous one (fails closed)', () => {
    const s = openState();
    const r = s.applyFact({ type: 'schedule.set', agentId: 'agent-1', windows: [{ start: T0 - HOUR, end: T0 + 8 * 24 * HOUR }], monthlyCap: 3 });
    expect(r).toMatchObject({ ok: false, code: 'schedule-rejected', changed: 'all' });
    expect(decideGate(s, 'c1', T0).reasons).toContain('outside-window');
  });

  it('paused, then resumed', () => {
    const s = openState();
    apply(s, { type: 'call.paused', callId: 'c1' });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['paused'] });
    apply(s, { type: 'call.resumed', callId: 'c1' });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('cap-reached: checked at admission; an admitted call keeps its admission', () => {
    const s = openState();
    const month = monthKey(T0);
    s.setMonthlyCount('agent-1', month, 3);
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: false, reasons: ['cap-reached'] });
    s.setMonthlyCount('agent-1', month, 2);
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: true, needsAdmission: true });
    s.markAdmitted('c1', 'r_0123456789abcdef', T0);
    expect(s.monthlyCount('agent-1', month)).toBe(3);
    // The cap is now reached, but this call is admitted: it may go on recording.
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: true, needsAdmission: false });
    // A second call of the same agent is refused.
    apply(s, { type: 'call.started', callId: 'c2', participants: [{ ...agent, participantId: 'a2' }, { ...cust, participantId: 'k2' }] });
    apply(s, { type: 'consent.granted', callId: 'c2', participantId: 'k2', evidence: ev() });
    expect(decideGate(s, 'c2', T0).reasons).toEqual(['cap-reached']);
  });

  it('cap-reached when the ledger refused, and with a cap of zero', () => {
    const s = openState();
    s.markCapRefused('c1');
    expect(decideGate(s, 'c1', T0).reasons).toEqual(['cap-reached']);
    const z = openState();
    apply(z, { type: 'schedule.set', agentId: 'agent-1', windows: [WINDOW], monthlyCap: 0 });
    expect(decideGate(z, 'c1', T0).reasons).toEqual(['cap-reached']);
  });

  it('every agent of a multi-agent call must be inside a window', () => {
    const agent2: Participant = { participantId: 'p-agent2', role: 'agent', subjectId: 'agent-2' };
    const s = openState([agent, agent2, cust]);
    expect(decideGate(s, 'c1', T0).reasons).toEqual(['outside-window']);
    apply(s, { type: 'schedule.set', agentId: 'agent-2', windows: [WINDOW], monthlyCap: 1 });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('reports every reason that applies, in a fixed order', () => {
    const s = openState();
    apply(s, { type: 'call.paused', callId: 'c1' });
    apply(s, { type: 'consent.declined', callId: 'c1', participantId: 'p-cust', evidence: ev() });
    s.setMonthlyCount('agent-1', monthKey(T0), 99);
    s.markStale('heartbeat-missed');
    expect(decideGate(s, 'c1', WINDOW.end + 1).reasons).toEqual(['control-stale', 'paused', 'consent-declined', 'outside-window', 'cap-reached']);
  });

  it('a snapshot keeps the admissions of calls it still lists and drops the others', () => {
    const s = openState();
    s.markAdmitted('c1', 'r_0123456789abcdef', T0);
    s.markStale('socket-closed');
    s.applySnapshot(
      [{ callId: 'c1', participants: [agent, cust], consents: [{ participantId: 'p-cust', status: 'granted', evidence: ev() }], paused: false }],
      [{ agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 }],
    );
    expect(s.admission('c1')?.recordingId).toBe('r_0123456789abcdef');
    s.applySnapshot([], []);
    expect(s.admission('c1')).toBeUndefined();
  });
});

describe('decideGate after a transfer (participants.changed)', () => {
  const agentB: Participant = { participantId: 'p-agent-b', role: 'agent', subjectId: 'agent-2' };
  const LATER = { start: T0 + 3 * HOUR, end: T0 + 4 * HOUR };

  it('follows the agents in the call now: the new agent outside a window closes it, the one who left no longer counts', () => {
    const s = openState();
    s.applySnapshot([{ callId: 'c1', participants: [agent, cust], consents: [{ participantId: 'p-cust', status: 'granted', evidence: ev() }], paused: false }], [
      { agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 },
      { agentId: 'agent-2', windows: [LATER], monthlyCap: 3 },
    ]);
    expect(decideGate(s, 'c1', T0).open).toBe(true);
    apply(s, { type: 'participants.changed', callId: 'c1', joined: [agentB], left: ['p-agent'] });
    expect(decideGate(s, 'c1', T0).reasons).toEqual(['outside-window']);
    expect(s.agentsOf('c1').map((a) => a.subjectId)).toEqual(['agent-2']);
    // The gate wakes for B's window, not A's.
    expect(nextGateWake(s, 'c1', T0)).toBe(LATER.start);
    expect(decideGate(s, 'c1', LATER.start + 1).open).toBe(true);
    // Who left stays known: a customer's consent facts still apply, the participant is still listed.
    expect(s.call('c1')!.participants.has('p-agent')).toBe(true);
    expect(s.call('c1')!.left.has('p-agent')).toBe(true);
  });

  it('an out-of-window agent leaving opens the gate for the one who stays; a customer who left does not hold it closed', () => {
    const s = new PolicyState();
    s.applySnapshot([], [
      { agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 },
      { agentId: 'agent-2', windows: [LATER], monthlyCap: 3 },
    ]);
    apply(s, { type: 'call.started', callId: 'c1', participants: [agent, agentB, cust, cust2] });
    apply(s, { type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: ev() });
    expect(decideGate(s, 'c1', T0).reasons).toEqual(['no-consent', 'outside-window']);
    apply(s, { type: 'participants.changed', callId: 'c1', joined: [], left: ['p-agent-b', 'p-cust2'] });
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });

  it('an agent who joins an admitted call needs their own cap admission for the same recording; at their cap, the call closes', () => {
    const s = openState();
    s.applySnapshot(
      [{ callId: 'c1', participants: [agent, cust], consents: [{ participantId: 'p-cust', status: 'granted', evidence: ev() }], paused: false }],
      [
        { agentId: 'agent-1', windows: [WINDOW], monthlyCap: 3 },
        { agentId: 'agent-2', windows: [WINDOW], monthlyCap: 1 },
      ],
    );
    s.markAdmitted('c1', 'r_0000000000000001', T0);
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: true, needsAdmission: false });
    apply(s, { type: 'participants.changed', callId: 'c1', joined: [agentB], left: ['p-agent'] });
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: true, needsAdmission: true });
    // Admitted for B: the same recording, B counted once, A not again.
    s.markAdmitting('c1', 'r_0000000000000001', T0);
    s.markAdmitted('c1', 'r_0000000000000001', T0);
    expect(s.admission('c1')?.agentIds).toEqual(['agent-1', 'agent-2']);
    expect(s.monthlyCount('agent-1', monthKey(T0))).toBe(1);
    expect(s.monthlyCount('agent-2', monthKey(T0))).toBe(1);
    expect(decideGate(s, 'c1', T0)).toMatchObject({ open: true, needsAdmission: false });

    // Another call transferred to B, now at their cap of 1: closed before anything is asked.
    apply(s, { type: 'call.started', callId: 'c2', participants: [{ ...agent, participantId: 'p2-agent' }, { ...cust, participantId: 'p2-cust' }] });
    apply(s, { type: 'consent.granted', callId: 'c2', participantId: 'p2-cust', evidence: ev() });
    s.markAdmitted('c2', 'r_0000000000000002', T0);
    apply(s, { type: 'participants.changed', callId: 'c2', joined: [{ ...agentB, participantId: 'p2-agent-b' }], left: [] });
    expect(decideGate(s, 'c2', T0).reasons).toEqual(['cap-reached']);
    // The control plane refusing (another worker used the slot) closes it too, for good.
    s.setMonthlyCount('agent-2', monthKey(T0), 0);
    expect(decideGate(s, 'c2', T0).needsAdmission).toBe(true);
    s.markCapRefused('c2');
    expect(decideGate(s, 'c2', T0).reasons).toEqual(['cap-reached']);
  });

  it('refuses a joined id already used in the call and a left id not in it, changing nothing; a snapshot carries who left', () => {
    const s = openState();
    expect(s.applyFact({ type: 'participants.changed', callId: 'c1', joined: [agent], left: [] })).toMatchObject({ ok: false, code: 'duplicate-participant' });
    expect(s.applyFact({ type: 'participants.changed', callId: 'c1', joined: [agentB], left: ['p-nobody'] })).toMatchObject({ ok: false, code: 'unknown-participant' });
    expect(s.call('c1')!.participants.has('p-agent-b')).toBe(false);
    s.applySnapshot([{ callId: 'c1', participants: [agent, agentB, cust], left: ['p-agent'], consents: [{ participantId: 'p-cust', status: 'granted', evidence: ev() }], paused: false }], [
      { agentId: 'agent-2', windows: [WINDOW], monthlyCap: 3 },
    ]);
    expect(s.agentsOf('c1').map((a) => a.participantId)).toEqual(['p-agent-b']);
    expect(decideGate(s, 'c1', T0).open).toBe(true);
  });
});

describe('GateMachine', () => {
  it('starts closed, counts runs, and names every transition', () => {
    const s = openState();
    const g = new GateMachine(s, 'c1');
    expect(g.state).toBe('closed');
    expect(g.runIndex).toBe(-1);
    const t1 = g.evaluate(T0);
    expect(t1).toMatchObject({ from: 'closed', to: 'open', runIndex: 0, reasons: [] });
    expect(g.evaluate(T0)).toBeUndefined();
    apply(s, { type: 'call.paused', callId: 'c1' });
    expect(g.evaluate(T0)).toMatchObject({ from: 'open', to: 'closed', runIndex: 0, reasons: ['paused'] });
    apply(s, { type: 'call.resumed', callId: 'c1' });
    expect(g.evaluate(T0)).toMatchObject({ to: 'open', runIndex: 1 });
    expect(g.evaluate(T0, ['storage-unavailable'])).toMatchObject({ to: 'closed', reasons: ['storage-unavailable'] });
    expect(g.evaluate(T0)).toMatchObject({ to: 'open', runIndex: 2 });
  });

  it('nextWake names the next window boundary, so one shared timer suffices', () => {
    const s = openState();
    apply(s, { type: 'schedule.set', agentId: 'agent-1', windows: [WINDOW, { start: WINDOW.end + HOUR, end: WINDOW.end + 2 * HOUR }], monthlyCap: 3 });
    s.markAdmitted('c1', 'r_0123456789abcdef', T0);
    const g = new GateMachine(s, 'c1');
    expect(g.nextWake(T0)).toBe(WINDOW.end);
    expect(g.nextWake(WINDOW.start - 10)).toBe(WINDOW.start);
    expect(g.nextWake(WINDOW.end)).toBe(WINDOW.end + HOUR);
    expect(g.nextWake(WINDOW.end + 2 * HOUR)).toBeUndefined();
    // The decision does change at each wake.
    expect(g.evaluate(WINDOW.end - 1)?.to).toBe('open');
    expect(g.evaluate(WINDOW.end)?.to).toBe('closed');
    expect(nextGateWake(s, 'unknown', T0)).toBeUndefined();
  });

  it('nextWake includes the month change for a call not yet admitted', () => {
    const s = openState();
    apply(s, { type: 'schedule.set', agentId: 'agent-1', windows: [], monthlyCap: 3 });
    expect(nextGateWake(s, 'c1', T0)).toBe(nextMonthStart(T0));
    expect(monthKey(nextMonthStart(T0))).toBe('2025-06');
  });
});
