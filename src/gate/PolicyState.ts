import { MAX_PARTICIPANTS, type AgentParticipant, type ConsentEvidence, type Fact, type Participant, type Window } from './facts.ts';
import type { AgentSchedule, CallSnapshot, ConsentStatus, LedgerSnapshot, PendingDeletion, PendingErasure } from './policySnapshot.ts';
import type { FactRejection } from './reasons.ts';
import { monthKey } from './month.ts';
import { checkSchedule, sortWindows } from './schedule.ts';

/**
 * What the worker knows from the policy stream, plus the worker's own cap
 * bookkeeping. Pure: no I/O, no timers, no clock (callers pass instants), so
 * decideGate over it is a function of its arguments and property-testable.
 *
 * Besides calls and schedules it holds the ledger (R9): erasures and deletions
 * accepted by the control plane and not yet completed (the recorder carries out
 * the ones that concern what it holds) and the tombstones, the recordings (or
 * participants' parts) nothing may be written for any more. Tombstones are
 * learned from snapshots and facts and kept (bounded) for the life of the
 * process: the store checks them before every PUT and manifest write.
 *
 * The default is closed: a new PolicyState is stale and knows no call.
 */

export interface ConsentRecord {
  readonly status: ConsentStatus;
  readonly evidence: ConsentEvidence;
  /** Withdrawal only: the customer also asked for deletion of what was recorded (R9). */
  readonly erase: boolean;
}

export interface CallState {
  readonly callId: string;
  /** By participantId, in the order the server listed them; everyone who was ever in the call. */
  readonly participants: ReadonlyMap<string, Participant>;
  /** Participants who left the call: still known (consent, erasure), no longer counted by the gate. */
  readonly left: ReadonlySet<string>;
  /** By participantId; customers only. Absent = no act yet = no consent. */
  readonly consents: ReadonlyMap<string, ConsentRecord>;
  readonly paused: boolean;
  readonly ended: boolean;
}

export interface ScheduleState {
  readonly agentId: string;
  /** Sorted by start, non-overlapping. Empty when the server's schedule was refused. */
  readonly windows: readonly Window[];
  readonly monthlyCap: number;
}

/** A recording admitted under the monthly cap; it keeps its admission until the call ends. */
export interface Admission {
  readonly recordingId: string;
  readonly atMs: number;
  readonly agentIds: readonly string[];
}

/** `changed`: the call whose decision may have changed ('all': any call); absent: no gate is affected. */
export type ApplyResult =
  | { ok: true; changed?: string | 'all' }
  | { ok: false; code: FactRejection; message: string; changed?: string | 'all' };

/** How many ended calls are remembered (so late facts about them are refused, not mistaken for new calls). */
export const ENDED_CALLS_RETAINED = 1024;
/** How many tombstones are remembered (oldest forgotten first; the control plane lists recent ones in every snapshot). */
export const TOMBSTONES_RETAINED = 100_000;

const EMPTY_LEDGER: LedgerSnapshot = { erasures: [], deletions: [], tombstones: [] };

function tombstoneKey(recordingId: string, participantId?: string): string {
  return participantId === undefined ? recordingId : `${recordingId}/${participantId}`;
}

interface MutableCall {
  callId: string;
  participants: Map<string, Participant>;
  left: Set<string>;
  consents: Map<string, ConsentRecord>;
  paused: boolean;
  ended: boolean;
}

export class PolicyState {
  #fresh = false;
  #staleReason: string = 'never-synced';
  readonly #calls = new Map<string, MutableCall>();
  readonly #ended: string[] = [];
  readonly #schedules = new Map<string, ScheduleState>();
  readonly #admissions = new Map<string, Admission>();
  readonly #capRefused = new Set<string>();
  /** Admissions asked of the control plane and not answered yet, by call: they count against the cap meanwhile. */
  readonly #admitting = new Map<string, Admission>();
  /** `${agentId}/${YYYY-MM}` -> recordings this worker had admitted. */
  readonly #monthlyCounts = new Map<string, number>();
  readonly #erasures = new Map<string, PendingErasure>();
  readonly #deletions = new Map<string, PendingDeletion>();
  /** `recordingId` (whole recording) or `recordingId/participantId`; insertion order = age. */
  readonly #tombstones = new Set<string>();

  // -- freshness ------------------------------------------------------------

  get fresh(): boolean {
    return this.#fresh;
  }

  /** Why the state is stale (undefined while fresh). */
  get staleReason(): string | undefined {
    return this.#fresh ? undefined : this.#staleReason;
  }

  /** Every gate closes with `control-stale` until the next snapshot. Returns whether this changed anything. */
  markStale(reason: string): boolean {
    const was = this.#fresh;
    this.#fresh = false;
    this.#staleReason = reason;
    return was;
  }

  // -- applying the stream ----------------------------------------------------

  /**
   * Replaces calls, schedules and the pending erasures and deletions with the
   * snapshot's, adds its tombstones to those already known, and becomes fresh.
   * The worker's own cap bookkeeping survives for calls still present (an
   * admitted recording stays admitted across a reconnect). Returns per-entry
   * problems, e.g. a schedule refused under R6; the rest of the snapshot still
   * applies.
   */
  applySnapshot(calls: readonly CallSnapshot[], agents: readonly AgentSchedule[], ledger: LedgerSnapshot = EMPTY_LEDGER): ApplyResult[] {
    const problems: ApplyResult[] = [];
    this.#calls.clear();
    this.#ended.length = 0;
    this.#schedules.clear();
    for (const c of calls) {
      if (this.#calls.has(c.callId)) {
        problems.push({ ok: false, code: 'duplicate-call', message: `snapshot lists call ${c.callId} twice; the first entry is kept` });
        continue;
      }
      const call = newCall(c.callId, c.participants);
      call.paused = c.paused;
      for (const id of c.left ?? []) if (call.participants.has(id)) call.left.add(id);
      for (const entry of c.consents) {
        const p = call.participants.get(entry.participantId);
        if (p === undefined || p.role !== 'customer') {
          problems.push({ ok: false, code: p === undefined ? 'unknown-participant' : 'not-a-customer', message: `snapshot consent for ${entry.participantId} in call ${c.callId} ignored` });
          continue;
        }
        call.consents.set(entry.participantId, { status: entry.status, evidence: entry.evidence, erase: entry.erase ?? false });
      }
      this.#calls.set(c.callId, call);
    }
    for (const a of agents) {
      const r = this.#setSchedule(a.agentId, a.windows, a.monthlyCap);
      if (!r.ok) problems.push(r);
    }
    for (const callId of [...this.#admissions.keys()]) if (!this.#calls.has(callId)) this.#admissions.delete(callId);
    for (const callId of [...this.#admitting.keys()]) if (!this.#calls.has(callId)) this.#admitting.delete(callId);
    for (const callId of [...this.#capRefused]) if (!this.#calls.has(callId)) this.#capRefused.delete(callId);
    this.#erasures.clear();
    this.#deletions.clear();
    for (const e of ledger.erasures) this.#addErasure(e);
    for (const d of ledger.deletions) this.#addDeletion(d);
    for (const t of ledger.tombstones) this.addTombstone(t.recordingId, t.participantId);
    this.#fresh = true;
    return problems;
  }

  /**
   * Applies one delta fact. A fact that does not fit the state (unknown call,
   * consent for an agent, ...) changes nothing and returns the error to reply.
   * Applying works while stale too (the client does not call it then), but
   * never makes the state fresh: only a snapshot does.
   */
  applyFact(fact: Fact): ApplyResult {
    switch (fact.type) {
      case 'call.started': {
        if (this.#calls.has(fact.callId)) {
          return { ok: false, code: 'duplicate-call', message: `call ${fact.callId} is already known; call ids are never reused` };
        }
        this.#calls.set(fact.callId, newCall(fact.callId, fact.participants));
        return { ok: true, changed: fact.callId };
      }
      case 'call.ended': {
        const call = this.#liveCall(fact.callId);
        if (!('callId' in call)) return call;
        call.ended = true;
        this.#admissions.delete(fact.callId);
        this.#admitting.delete(fact.callId);
        this.#capRefused.delete(fact.callId);
        this.#ended.push(fact.callId);
        // Forget the oldest ended calls; bounded memory beats perfect late-fact detection.
        while (this.#ended.length > ENDED_CALLS_RETAINED) this.#calls.delete(this.#ended.shift()!);
        return { ok: true, changed: fact.callId };
      }
      case 'participants.changed': {
        const call = this.#liveCall(fact.callId);
        if (!('callId' in call)) return call;
        for (const p of fact.joined) {
          if (call.participants.has(p.participantId)) return { ok: false, code: 'duplicate-participant', message: `participant ${p.participantId} was already in call ${fact.callId}; a participant who comes back needs a new id` };
        }
        for (const id of fact.left) {
          if (!call.participants.has(id) || call.left.has(id)) return { ok: false, code: 'unknown-participant', message: `participant ${id} is not in call ${fact.callId}` };
        }
        if (call.participants.size + fact.joined.length > MAX_PARTICIPANTS) return { ok: false, code: 'unknown-participant', message: `call ${fact.callId} would have more than ${MAX_PARTICIPANTS} participants` };
        for (const p of fact.joined) call.participants.set(p.participantId, p);
        for (const id of fact.left) call.left.add(id);
        return { ok: true, changed: fact.callId };
      }
      case 'call.paused':
      case 'call.resumed': {
        const call = this.#liveCall(fact.callId);
        if (!('callId' in call)) return call;
        call.paused = fact.type === 'call.paused';
        return { ok: true, changed: fact.callId };
      }
      case 'consent.granted':
      case 'consent.declined':
      case 'consent.withdrawn': {
        const call = this.#liveCall(fact.callId);
        if (!('callId' in call)) return call;
        const p = call.participants.get(fact.participantId);
        if (p === undefined) {
          return { ok: false, code: 'unknown-participant', message: `participant ${fact.participantId} is not in call ${fact.callId}` };
        }
        if (p.role !== 'customer') {
          return { ok: false, code: 'not-a-customer', message: `participant ${fact.participantId} is an agent; consent facts are for customers` };
        }
        const status: ConsentStatus =
          fact.type === 'consent.granted' ? 'granted' : fact.type === 'consent.declined' ? 'declined' : 'withdrawn';
        const current = call.consents.get(fact.participantId);
        // Asymmetric on purpose: a refusal always applies at once (R5), but a
        // grant older than the refusal it would replace is a stale retransmission,
        // not a new positive act, and must not reopen the gate.
        if (status === 'granted' && current !== undefined && current.status !== 'granted' && fact.evidence.at < current.evidence.at) {
          return { ok: false, code: 'stale-evidence', message: `consent.granted for ${fact.participantId} predates the ${current.status} it would replace` };
        }
        call.consents.set(fact.participantId, {
          status,
          evidence: fact.evidence,
          erase: fact.type === 'consent.withdrawn' ? fact.erase : false,
        });
        return { ok: true, changed: fact.callId };
      }
      case 'schedule.set':
        return this.#setSchedule(fact.agentId, fact.windows, fact.monthlyCap);
      // The ledger: known calls or not, these always apply (an erasure outlives its call).
      case 'erasure.requested':
        this.#addErasure(fact);
        return { ok: true, changed: fact.callId };
      case 'erasure.completed':
        this.#erasures.delete(fact.erasureId);
        return { ok: true };
      case 'recording.deleted':
        this.#addDeletion(fact);
        return { ok: true, ...this.#callOfRecording(fact.recordingId) };
      case 'deletion.completed':
        this.#deletions.delete(fact.deletionId);
        return { ok: true };
    }
  }

  /** The erasure's recordings are tombstoned whole: a worker erases every track of them (R9). */
  #addErasure(e: PendingErasure): void {
    this.#erasures.set(e.erasureId, { erasureId: e.erasureId, callId: e.callId, participantId: e.participantId, recordingIds: [...e.recordingIds] });
    for (const recordingId of e.recordingIds) this.addTombstone(recordingId);
  }

  #addDeletion(d: PendingDeletion): void {
    const entry: PendingDeletion = { deletionId: d.deletionId, recordingId: d.recordingId, reason: d.reason, ...(d.participantId === undefined ? {} : { participantId: d.participantId }) };
    this.#deletions.set(d.deletionId, entry);
    this.addTombstone(d.recordingId, d.participantId);
  }

  #callOfRecording(recordingId: string): { changed?: string } {
    for (const [callId, a] of this.#admissions) if (a.recordingId === recordingId) return { changed: callId };
    return {};
  }

  #liveCall(callId: string): MutableCall | { ok: false; code: FactRejection; message: string } {
    const call = this.#calls.get(callId);
    if (call === undefined) return { ok: false, code: 'unknown-call', message: `call ${callId} is not known (no call.started)` };
    if (call.ended) return { ok: false, code: 'call-ended', message: `call ${callId} has ended; late facts change nothing` };
    return call;
  }

  /**
   * A schedule that breaks R6 is refused AND replaces the agent's previous
   * schedule with none: the server meant to change it, and guessing that the
   * old one still holds could record outside what the server intended. This
   * is the one refused fact that changes state, and it only closes gates.
   */
  #setSchedule(agentId: string, windows: readonly Window[], monthlyCap: number): ApplyResult {
    const problems = checkSchedule(windows, monthlyCap);
    if (problems.length > 0) {
      this.#schedules.set(agentId, { agentId, windows: [], monthlyCap: 0 });
      return {
        ok: false,
        code: 'schedule-rejected',
        message: `schedule for agent ${agentId} refused, agent not recorded until a valid one arrives: ${problems.map((p) => p.message).join('; ')}`.slice(0, 1000),
        changed: 'all',
      };
    }
    this.#schedules.set(agentId, { agentId, windows: sortWindows(windows), monthlyCap });
    return { ok: true, changed: 'all' };
  }

  // -- reading ----------------------------------------------------------------

  call(callId: string): CallState | undefined {
    return this.#calls.get(callId);
  }

  /** Ids of calls known and not ended. */
  *activeCallIds(): IterableIterator<string> {
    for (const c of this.#calls.values()) if (!c.ended) yield c.callId;
  }

  agentsOf(callId: string): AgentParticipant[] {
    const call = this.#calls.get(callId);
    if (call === undefined) return [];
    return [...call.participants.values()].filter((p): p is AgentParticipant => p.role === 'agent' && !call.left.has(p.participantId));
  }

  /** Subject ids of the agents in the call now that its admission does not cover yet (all of them before the first), each once. */
  #unadmittedAgents(callId: string): string[] {
    const covered = this.#admissions.get(callId)?.agentIds ?? [];
    return [...new Set(this.agentsOf(callId).map((a) => a.subjectId))].filter((a) => !covered.includes(a));
  }

  schedule(agentId: string): ScheduleState | undefined {
    return this.#schedules.get(agentId);
  }

  // -- the ledger -------------------------------------------------------------------

  /** Erasures accepted by the control plane and not completed yet (from snapshots and facts). */
  pendingErasures(): PendingErasure[] {
    return [...this.#erasures.values()];
  }

  /** Deletions accepted by the control plane and not completed yet. */
  pendingDeletions(): PendingDeletion[] {
    return [...this.#deletions.values()];
  }

  /** True when nothing more may be written for this recording (or this participant's part of it). */
  isTombstoned(recordingId: string, participantId?: string): boolean {
    if (this.#tombstones.has(recordingId)) return true;
    return participantId !== undefined && this.#tombstones.has(tombstoneKey(recordingId, participantId));
  }

  /**
   * What is deleted of a recording: all of it, some participants' parts, or nothing (the
   * recorder reconciles what it holds with this after a snapshot).
   */
  tombstonesOf(recordingId: string): { whole: boolean; participants: string[] } {
    if (this.#tombstones.has(recordingId)) return { whole: true, participants: [] };
    const prefix = `${recordingId}/`;
    const participants: string[] = [];
    for (const key of this.#tombstones) if (key.startsWith(prefix)) participants.push(key.slice(prefix.length));
    return { whole: false, participants };
  }

  /** Remembers a deletion (the recorder adds its own: a recording it erased that no fact named). */
  addTombstone(recordingId: string, participantId?: string): void {
    const key = tombstoneKey(recordingId, participantId);
    if (this.#tombstones.has(key)) return;
    this.#tombstones.add(key);
    // Bounded: the oldest go first (the control plane repeats recent ones in every snapshot).
    while (this.#tombstones.size > TOMBSTONES_RETAINED) this.#tombstones.delete(this.#tombstones.values().next().value as string);
  }

  // -- monthly cap bookkeeping (fed by the recorder's admissions) --------------------

  admission(callId: string): Admission | undefined {
    return this.#admissions.get(callId);
  }

  isCapRefused(callId: string): boolean {
    return this.#capRefused.has(callId);
  }

  /**
   * The recorder asked the control plane to admit this call's recording: until the answer, it
   * counts against its agents' caps for the worker's other calls (two calls of one agent decided
   * in the same turn must not both ask for the last slot).
   */
  markAdmitting(callId: string, recordingId: string, atMs: number): void {
    const call = this.#calls.get(callId);
    if (call === undefined || call.ended) return;
    // An admitted call asks again only for agents who joined since (a transfer): only they count.
    this.#admitting.set(callId, { recordingId, atMs, agentIds: this.#unadmittedAgents(callId) });
  }

  /** The admission got no answer (timeout, control plane unavailable, stream lost): it counts no more. */
  clearAdmitting(callId: string): void {
    this.#admitting.delete(callId);
  }

  /**
   * Records that the control plane admitted this call's recording for all its agents; from now
   * on the cap is not re-checked for the call (see decideGate).
   */
  markAdmitted(callId: string, recordingId: string, atMs: number): void {
    this.#admitting.delete(callId);
    const call = this.#calls.get(callId);
    if (call === undefined || call.ended) return;
    const previous = this.#admissions.get(callId);
    if (previous !== undefined && previous.recordingId !== recordingId) return;
    // Agents who joined after an admission (a transfer) are added to it, each counted once.
    const fresh = this.#unadmittedAgents(callId);
    if (previous !== undefined && fresh.length === 0) return;
    this.#admissions.set(callId, { recordingId, atMs: previous?.atMs ?? atMs, agentIds: [...(previous?.agentIds ?? []), ...fresh] });
    this.#capRefused.delete(callId);
    const month = monthKey(atMs);
    for (const agentId of new Set(fresh)) this.#monthlyCounts.set(`${agentId}/${month}`, this.monthlyCount(agentId, month) + 1);
  }

  /** The control plane refused: the call stays closed with `cap-reached` until it ends. */
  markCapRefused(callId: string): void {
    this.#admitting.delete(callId);
    const call = this.#calls.get(callId);
    if (call === undefined || call.ended) return;
    // Also for an admitted call whose new agent (a transfer) is over their cap: it closes for good.
    this.#capRefused.add(callId);
  }

  /** Sets the admissions known for an agent and month (tests; a worker told of earlier admissions). */
  setMonthlyCount(agentId: string, month: string, count: number): void {
    this.#monthlyCounts.set(`${agentId}/${month}`, count);
  }

  /** Recordings of this agent this worker had admitted in `month`. */
  monthlyCount(agentId: string, month: string): number {
    return this.#monthlyCounts.get(`${agentId}/${month}`) ?? 0;
  }

  /**
   * What the gate compares with the agent's cap for `callId`: this worker's admissions of the
   * month plus its admissions in flight for the agent's other calls. (Other workers' admissions
   * are the control plane's to count: it refuses, and the call shows `cap-reached`.)
   */
  capUsed(agentId: string, month: string, callId: string): number {
    let n = this.monthlyCount(agentId, month);
    for (const [otherCallId, a] of this.#admitting) {
      if (otherCallId !== callId && monthKey(a.atMs) === month && a.agentIds.includes(agentId)) n++;
    }
    return n;
  }
}

function newCall(callId: string, participants: readonly Participant[]): MutableCall {
  return {
    callId,
    participants: new Map(participants.map((p) => [p.participantId, p])),
    left: new Set(),
    consents: new Map(),
    paused: false,
    ended: false,
  };
}
