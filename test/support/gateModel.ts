/**
 * The independent model of the gate property (test/integration/gate/recorder-property.test.ts):
 * the facts as the control plane holds them and as the worker has applied them (deltas in order,
 * or a snapshot after a stale period), the cap bookkeeping in the recorder's evaluation order, and
 * from those the reasons each call's gate must be closed for. It reads no recorder state: the
 * property compares the recorder against it.
 */
import type { ConsentEvidence, Fact, Participant, Window } from '../../src/gate/facts.ts';
import type { CallSnapshot } from '../../src/gate/policySnapshot.ts';

// ---------------------------------------------------------------------------------------------
// Views: facts as the server holds them and as the worker has applied them
// ---------------------------------------------------------------------------------------------

interface VConsent {
  status: 'granted' | 'declined' | 'withdrawn';
  erase: boolean;
  evidence: ConsentEvidence;
}
interface VCall {
  participants: Participant[];
  consents: Map<string, VConsent>;
  paused: boolean;
  ended: boolean;
}
export interface View {
  calls: Map<string, VCall>;
  schedules: Map<string, { windows: Window[]; cap: number }>;
}

export function cloneView(v: View): View {
  const calls = new Map<string, VCall>();
  for (const [id, c] of v.calls) calls.set(id, { participants: c.participants, consents: new Map(c.consents), paused: c.paused, ended: c.ended });
  return { calls, schedules: new Map(v.schedules) };
}

/** What a snapshot gives the worker: the server's live calls (ended ones are not listed). */
function snapshotOf(v: View): View {
  const s = cloneView(v);
  for (const [id, c] of s.calls) if (c.ended) s.calls.delete(id);
  return s;
}

function applyToView(v: View, fact: Fact): void {
  if (fact.type === 'call.started') {
    v.calls.set(fact.callId, { participants: fact.participants, consents: new Map(), paused: false, ended: false });
    return;
  }
  if (fact.type === 'schedule.set') {
    v.schedules.set(fact.agentId, { windows: fact.windows, cap: fact.monthlyCap });
    return;
  }
  // An erase after the end of the call is accepted (R9): the worker's view may no longer hold
  // the call (a snapshot lists calls in progress only); nothing of it is left to change.
  const c = 'callId' in fact ? v.calls.get(fact.callId) : undefined;
  if (c === undefined) return;
  switch (fact.type) {
    case 'call.ended':
      c.ended = true;
      return;
    case 'call.paused':
    case 'call.resumed':
      c.paused = fact.type === 'call.paused';
      return;
    case 'consent.granted':
    case 'consent.declined':
      c.consents.set(fact.participantId, { status: fact.type === 'consent.granted' ? 'granted' : 'declined', erase: false, evidence: fact.evidence });
      return;
    case 'consent.withdrawn':
      c.consents.set(fact.participantId, { status: 'withdrawn', erase: fact.erase, evidence: fact.evidence });
      return;
    default:
      return;
  }
}

/** A snapshot frame of `v` as the control plane would send it at `seq` (to replay an old one). */
export function wireSnapshot(v: View, seq: number): object {
  const calls: CallSnapshot[] = [];
  for (const [callId, c] of snapshotOf(v).calls) {
    calls.push({
      callId,
      participants: c.participants,
      consents: [...c.consents].map(([participantId, k]) => ({
        participantId,
        status: k.status,
        evidence: k.evidence,
        ...(k.status === 'withdrawn' ? { erase: k.erase } : {}),
      })),
      paused: c.paused,
    });
  }
  const agents = [...v.schedules].map(([agentId, s]) => ({ agentId, windows: s.windows, monthlyCap: s.cap }));
  return { v: 2, type: 'snapshot', seq, at: Date.now(), part: 0, parts: 1, calls, agents, erasures: [], deletions: [], tombstones: [] };
}

// ---------------------------------------------------------------------------------------------
// The model's expectations
// ---------------------------------------------------------------------------------------------

export type Admission = 'none' | 'admitted';

/** A call as the model follows it. */
export interface ModelCall {
  index: number;
  callId: string;
  participants: Participant[];
  customers: string[];
  admission: Admission;
  erased: boolean;
  /** The gate the last check expected (to count closings). */
  wasOpen: boolean;
}

export class GateModel<C extends ModelCall> {
  /** The facts the control plane accepted. */
  readonly server: View = { calls: new Map(), schedules: new Map() };
  /** The facts the worker has applied. */
  worker: View = cloneView(this.server);
  /** The run's calls, in the order the recorder evaluates them (attach order). */
  readonly calls: C[] = [];
  #pendingFacts: Fact[] = [];
  #seenFresh: number;

  /** `freshCount`: how many times the worker has become fresh so far (a snapshot each time). */
  constructor(freshCount: number) {
    this.#seenFresh = freshCount;
  }

  /** A fact the control plane accepted (and sent, or will send in its next snapshot). */
  serverApplied(fact: Fact): void {
    applyToView(this.server, fact);
    this.#pendingFacts.push(fact);
  }

  #countFor(agentId: string): number {
    return this.calls.filter((c) => c.admission === 'admitted' && c.participants.some((p) => p.role === 'agent' && p.subjectId === agentId)).length;
  }

  #agentsOf(c: C): string[] {
    return [...new Set(c.participants.filter((p) => p.role === 'agent').map((p) => p.subjectId))];
  }

  /** Why the gate of `c` must be closed (the R7 reasons, in the recorder's order); [] if it may open. */
  reasons(c: C, fresh: boolean): string[] {
    const r: string[] = [];
    if (!fresh) r.push('control-stale');
    const vc = this.worker.calls.get(c.callId);
    if (vc === undefined) return [...r, 'unknown-call'];
    if (vc.ended) return [...r, 'call-ended'];
    if (vc.paused) r.push('paused');
    const statuses = c.customers.map((pid) => vc.consents.get(pid)?.status);
    if (statuses.length === 0 || statuses.includes(undefined)) r.push('no-consent');
    if (statuses.includes('declined')) r.push('consent-declined');
    if (statuses.includes('withdrawn')) r.push('consent-withdrawn');
    const now = Date.now();
    if (this.#agentsOf(c).some((a) => !(this.worker.schedules.get(a)?.windows ?? []).some((w) => w.start <= now && now < w.end))) r.push('outside-window');
    if (c.admission !== 'admitted') {
      const capped = this.#agentsOf(c).some((a) => {
        const s = this.worker.schedules.get(a);
        return s !== undefined && this.#countFor(a) >= s.cap;
      });
      if (capped) r.push('cap-reached');
    }
    return r;
  }

  expectedOpen(c: C, fresh: boolean): boolean {
    return !c.erased && c.admission === 'admitted' && this.reasons(c, fresh).length === 0;
  }

  /**
   * What the worker learned since the last settle: deltas in order, or a snapshot (when
   * `freshCount` moved). Returns how many calls were erased and admitted by it.
   */
  absorb(fresh: boolean, freshCount: number): { erasures: number; admissions: number } {
    let erasures = 0;
    let admissions = 0;
    if (freshCount !== this.#seenFresh) {
      this.#seenFresh = freshCount;
      // A snapshot was applied: the worker holds the server's live calls (plus deltas after it).
      // (A call ended by a delta after the snapshot is 'call-ended' to the worker, one ended
      // before it is 'unknown-call': both closed; the report check accepts either.)
      this.worker = snapshotOf(this.server);
    } else {
      for (const f of this.#pendingFacts) applyToView(this.worker, f);
    }
    // Erasure: a withdrawal with erase reaches the worker as a delta (erasure.requested) or, when
    // it happened while the worker was away, as a pending erasure in the next snapshot, whatever
    // came after it (another act of the customer, the end of the call): the control plane keeps
    // it pending until this worker confirmed it.
    for (const f of this.#pendingFacts) {
      if (f.type === 'consent.withdrawn' && f.erase) {
        const c = this.calls.find((x) => x.callId === f.callId);
        if (c && !c.erased) {
          c.erased = true;
          erasures++;
        }
      }
    }
    this.#pendingFacts = [];
    if (!fresh) return { erasures, admissions };
    // Admission, in the recorder's evaluation order (attach order): a call whose gate opens is
    // admitted at once and counts against its agents' caps for the calls decided after it.
    for (const c of this.calls) {
      if (c.admission !== 'none' || c.erased) continue;
      if (this.reasons(c, true).length > 0) continue;
      c.admission = 'admitted';
      admissions++;
    }
    return { erasures, admissions };
  }
}
