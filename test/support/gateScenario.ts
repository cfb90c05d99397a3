/**
 * What the gate property (test/integration/gate/recorder-property.test.ts) draws: a run of
 * `calls` calls among `agents` agents, their starting schedules and consents, and a random
 * schedule of steps, each one control action (a fact, a fault of the control stream, an injected
 * bad frame) followed by a batch of packets.
 */
import fc from 'fast-check';

/** An agent's schedule window relative to the run: around now, later today, or none. */
export type WindowKind = 'covering' | 'later' | 'none';

export interface CallSpec {
  agents: number[]; // indices into the run's agents (1 or 2 distinct)
  customers: number; // 1 or 2
  /** Every customer already pressed 1 when the run starts (so that gates open often). */
  granted: boolean;
}

export type FactAction =
  | { kind: 'grant' | 'decline'; call: number; cust: number }
  | { kind: 'withdraw'; call: number; cust: number; erase: boolean }
  | { kind: 'schedule'; agent: number; window: WindowKind; cap: number }
  | { kind: 'pause' | 'resume' | 'end'; call: number };

/** How the policy stream goes stale: the link drops, a fact is lost, the control plane goes silent, or a forged frame (no valid MAC) arrives. */
export type FaultKind = 'drop' | 'skipSeq' | 'heartbeatLoss' | 'forgedFrame';
export type Action =
  | FactAction
  | { kind: 'fault'; fault: FaultKind; staleFacts: FactAction[] }
  | { kind: 'garbage'; which: number }
  | { kind: 'lateDelta' | 'lateHeartbeat' | 'lateSnapshot'; back: number }
  | { kind: 'dupHello' }
  | { kind: 'packetsOnly' };

export interface Step {
  action: Action;
  /** [call index, participant index] per packet, sent after the action settled. */
  packets: [number, number][];
}

export interface Scenario {
  calls: CallSpec[];
  schedules: { window: WindowKind; cap: number }[];
  steps: Step[];
}

/** Random runs of `calls` calls among `agents` agents. */
export function scenarioArbitrary({ calls, agents }: { calls: number; agents: number }): fc.Arbitrary<Scenario> {
  const callIdx = fc.nat({ max: calls - 1 });
  const capArb = fc.constantFrom(0, 1, 2, 3, 100, 100, 100);
  const windowArb = fc.constantFrom<WindowKind>('covering', 'covering', 'covering', 'covering', 'later', 'none');
  const factActionArb: fc.Arbitrary<FactAction> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('grant' as const), call: callIdx, cust: fc.nat({ max: 1 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('decline' as const), call: callIdx, cust: fc.nat({ max: 1 }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('withdraw' as const), call: callIdx, cust: fc.nat({ max: 1 }), erase: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('schedule' as const), agent: fc.nat({ max: agents - 1 }), window: windowArb, cap: capArb }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('pause' as const, 'resume' as const), call: callIdx }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('end' as const), call: callIdx }) },
  );
  // While stale: an erasure, then the same customer acts again or the call ends (the erasure
  // must still be carried out: the interleavings the reference server's protocol lost).
  const eraseThenArb: fc.Arbitrary<FactAction[]> = fc
    .record({ call: callIdx, cust: fc.nat({ max: 1 }), then: fc.constantFrom('grant', 'decline', 'end', 'withdraw') })
    .map(({ call, cust, then }): FactAction[] => [
      { kind: 'withdraw', call, cust, erase: true },
      then === 'end' ? { kind: 'end', call } : then === 'withdraw' ? { kind: 'withdraw', call, cust, erase: false } : { kind: then as 'grant' | 'decline', call, cust },
    ]);
  const actionArb: fc.Arbitrary<Action> = fc.oneof(
    { weight: 20, arbitrary: factActionArb },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('fault' as const),
        fault: fc.constantFrom<FaultKind>('drop', 'drop', 'skipSeq', 'skipSeq', 'heartbeatLoss', 'forgedFrame'),
        staleFacts: fc.oneof({ weight: 3, arbitrary: fc.array(factActionArb, { maxLength: 2 }) }, { weight: 1, arbitrary: eraseThenArb }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('garbage' as const), which: fc.nat({ max: 7 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('lateDelta' as const, 'lateHeartbeat' as const, 'lateSnapshot' as const), back: fc.integer({ min: 1, max: 6 }) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'dupHello' as const }) },
    { weight: 3, arbitrary: fc.constant({ kind: 'packetsOnly' as const }) },
  );
  const stepArb: fc.Arbitrary<Step> = fc.record({
    action: actionArb,
    packets: fc.array(fc.tuple(callIdx, fc.nat({ max: 3 })), { maxLength: 5 }),
  });
  return fc.record({
    calls: fc.array(
      fc.record({
        agents: fc.oneof(
          { weight: 4, arbitrary: fc.nat({ max: agents - 1 }).map((a) => [a]) },
          { weight: 1, arbitrary: fc.uniqueArray(fc.nat({ max: agents - 1 }), { minLength: 2, maxLength: 2 }) },
        ),
        customers: fc.constantFrom(1, 1, 2),
        granted: fc.boolean(),
      }),
      { minLength: calls, maxLength: calls },
    ),
    schedules: fc.array(fc.record({ window: windowArb, cap: capArb }), { minLength: agents, maxLength: agents }),
    steps: fc.array(stepArb, { minLength: 8, maxLength: 36 }),
  });
}
