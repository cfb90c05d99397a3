/**
 * The recording phase of a call: the move table, the R7 report derived from it, and what a
 * CallRecorder audits when. The CallRecorder here has no tracks (its room is never started: no
 * mediasoup in a unit test); its gate runs on a real PolicyState, and the cap admission is an
 * Admitter whose answers the test releases, the way ControlAdmitter records them.
 */
import { describe, expect, it } from 'vitest';
import type { ConsentEvidence, Fact, Participant } from '../../../src/gate/facts.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';
import { CallRecorder, type Admitter, type CallStore } from '../../../src/recorder/CallRecorder.ts';
import { assertCanEnter, canEnter, reportOf, type RecordingPhase, type RecordingPhaseName } from '../../../src/recorder/RecordingPhase.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { OptinError, isOptinError } from '../../../src/errors/OptinError.ts';
import { CAP_RETRY_MS } from '../../../src/recorder/CallRecorder.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 4, 12, 9, 0, 0);
const agent: Participant = { participantId: 'p-agent', role: 'agent', subjectId: 'agent-1' };
const cust: Participant = { participantId: 'p-cust', role: 'customer', subjectId: 'cust-1' };
const ev: ConsentEvidence = { method: 'dtmf', at: T0 - 60_000, infoVersion: 'info-v3' };

const NAMES: RecordingPhaseName[] = ['closed', 'admitting', 'cap-unknown', 'refused', 'admitted', 'recording', 'erased', 'ended'];

describe('recording phase moves', () => {
  it('allows exactly the moves of the diagram', () => {
    const legal = NAMES.flatMap((from) => NAMES.filter((to) => canEnter(from, to)).map((to) => `${from}->${to}`));
    expect(legal).toEqual([
      'closed->admitting', 'closed->erased', 'closed->ended',
      'admitting->closed', 'admitting->cap-unknown', 'admitting->refused', 'admitting->admitted', 'admitting->erased', 'admitting->ended',
      'cap-unknown->admitting', 'cap-unknown->erased', 'cap-unknown->ended',
      'refused->erased', 'refused->ended',
      'admitted->recording', 'admitted->erased', 'admitted->ended',
      'recording->admitted', 'recording->erased', 'recording->ended',
      'erased->erased', 'erased->ended',
      'ended->ended',
    ]);
  });

  it('is loud about an illegal move: recording is only reached from admitted', () => {
    for (const from of NAMES.filter((n) => n !== 'admitted')) {
      let caught: unknown;
      try {
        assertCanEnter(from, 'recording');
      } catch (err) {
        caught = err;
      }
      expect(isOptinError(caught, 'INTERNAL'), `${from}->recording`).toBe(true);
    }
  });
});

describe('R7 report of a phase', () => {
  const cases: [RecordingPhase, string[], ReturnType<typeof reportOf>][] = [
    [{ name: 'recording', recordingId: 'r_1', run: 0 }, [], { recording: true, reasons: [] }],
    [{ name: 'admitted', recordingId: 'r_1' }, ['paused'], { recording: false, reasons: ['paused'] }],
    [{ name: 'admitted', recordingId: 'r_1' }, [], undefined], // opening not applied yet: keep the last report
    [{ name: 'admitting', candidateId: 'r_1' }, [], undefined], // admission in flight: keep the last report
    [{ name: 'closed' }, ['no-consent'], { recording: false, reasons: ['no-consent'] }],
    [{ name: 'refused' }, [], { recording: false, reasons: ['cap-reached'] }],
    [{ name: 'erased', recordingId: 'r_1', refused: false, cause: 'erasure' }, [], { recording: false, reasons: ['consent-withdrawn'] }],
    [{ name: 'erased', recordingId: 'r_1', refused: false, cause: 'deletion' }, [], { recording: false, reasons: ['deleted'] }],
    [{ name: 'erased', recordingId: undefined, refused: true, cause: 'erasure' }, [], { recording: false, reasons: ['cap-reached'] }],
    [{ name: 'erased', recordingId: 'r_1', refused: false, cause: 'erasure' }, ['consent-withdrawn', 'paused'], { recording: false, reasons: ['consent-withdrawn', 'paused'] }],
    [{ name: 'cap-unknown', candidateId: 'r_1', retryAtMs: 0 }, [], { recording: false, reasons: ['cap-unknown'] }],
    [{ name: 'cap-unknown', candidateId: 'r_1', retryAtMs: 0 }, ['paused'], { recording: false, reasons: ['paused'] }],
    [{ name: 'ended', recordingId: 'r_1', erased: false }, ['call-ended'], undefined],
  ];
  it.each(cases)('%o with gate reasons %o', (phase, gateReasons, want) => {
    expect(reportOf(phase, gateReasons as never)).toEqual(want);
  });
});

// ---------------------------------------------------------------------------------------------

interface Deferred {
  callId: string;
  recordingId: string;
  resolve: (ok: boolean) => void;
  reject: (err: Error) => void;
}

/** A call c1 under a CallRecorder whose admissions wait for the test. */
function harness() {
  const state = new PolicyState();
  state.applySnapshot([], [{ agentId: 'agent-1', windows: [{ start: T0 - HOUR, end: T0 + 2 * HOUR }], monthlyCap: 3 }]);
  const apply = (fact: Fact): void => {
    const r = state.applyFact(fact);
    if (!r.ok) throw new Error(`${r.code}: ${r.message}`);
  };
  apply({ type: 'call.started', callId: 'c1', participants: [agent, cust] });
  const pending: Deferred[] = [];
  const admitter: Admitter = {
    admitCall: (s, callId, recordingId) =>
      new Promise<boolean>((resolve, reject) => {
        pending.push({
          callId,
          recordingId,
          // As ControlAdmitter.admitCall: the outcome is recorded in the PolicyState before it resolves.
          resolve: (ok) => {
            if (ok) s.markAdmitted(callId, recordingId, T0);
            else s.markCapRefused(callId);
            resolve(ok);
          },
          reject,
        });
      }),
  };
  const store = { begun: [] as string[], ended: [] as string[], deleted: [] as string[] };
  const callStore: CallStore = {
    putSegment: async () => ({ stored: 'uploaded' }),
    beginRecording: async (input) => {
      store.begun.push(input.recordingId);
    },
    endRecording: async (id) => void store.ended.push(id),
    deleteRecording: async (id) => {
      store.deleted.push(id);
    },
  };
  const audit: { type: string; recordingId?: string; details: Record<string, unknown> }[] = [];
  const reports: string[] = [];
  let evaluations = 0;
  const rec = new CallRecorder('c1', undefined, {
    state,
    store: callStore,
    admitter,
    segmentSamples: 48_000,
    logger: createLogger('silent'),
    // `+id`: the report names the recording.
    onReport: (_id, r) => reports.push(`${r.recording}|${r.reasons.join(',')}${r.recordingId ? '+id' : ''}`),
    onAudit: (e) => audit.push({ type: e.type, recordingId: e.recordingId, details: e.details }),
    requestEvaluate: () => void evaluations++,
  });
  const evaluate = (now = T0): void => void rec.evaluate(now, []);
  const answer = async (ok: boolean): Promise<void> => {
    pending.shift()!.resolve(ok);
    await new Promise((r) => setImmediate(r));
  };
  const gateAudit = () => audit.filter((e) => e.type === 'gate.transition').map((e) => `${String(e.details.to)}:${(e.details.reasons as string[]).join(',')}:run${String(e.details.run)}`);
  return { state, apply, pending, store, audit, reports, rec, evaluate, answer, gateAudit, evaluations: () => evaluations };
}

describe('CallRecorder: what is audited when', () => {
  it('a cap refusal is audited as a refusal; the open gate before it is not a recording start', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    expect(h.rec.gate.isOpen).toBe(true); // the policy allows it...
    expect(h.rec.phase.name).toBe('admitting'); // ...but nothing is kept until the cap says yes
    expect(h.rec.writing).toBe(false);
    expect(h.audit).toEqual([]);
    await h.answer(false);
    expect(h.rec.phase.name).toBe('refused');
    expect(h.evaluations()).toBe(1);
    h.evaluate();
    expect(h.rec.gate.reasons).toEqual(['cap-reached']);
    expect(h.audit.map((e) => e.type)).toEqual(['recording.refused']);
    expect(h.audit[0]!.details.reasons).toEqual(['cap-reached']);
    expect(h.reports).toEqual(['false|cap-reached']);
    expect(h.store.begun).toEqual([]);
  });

  it('recording starts when admitted and the gate is open, and stops with the reason', async () => {
    const h = harness();
    h.evaluate();
    expect(h.reports).toEqual(['false|no-consent']);
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    await h.answer(true);
    expect(h.rec.phase.name).toBe('admitted');
    expect(h.gateAudit()).toEqual([]);
    h.evaluate(); // the requested re-evaluation
    expect(h.rec.phase).toEqual({ name: 'recording', recordingId: h.rec.recordingId, run: 0 });
    expect(h.store.begun).toEqual([h.rec.recordingId]);
    const start = h.audit.find((e) => e.type === 'gate.transition')!;
    expect(start.recordingId).toBe(h.rec.recordingId);
    expect(start.details).toMatchObject({ from: 'closed', to: 'open', reasons: [], run: 0, evidence: [ev] });
    h.apply({ type: 'call.paused', callId: 'c1' });
    h.evaluate(T0 + 1000);
    h.apply({ type: 'call.resumed', callId: 'c1' });
    h.evaluate(T0 + 2000);
    await h.rec.close(T0 + 3000);
    expect(h.gateAudit()).toEqual(['open::run0', 'closed:paused:run0', 'open::run1', 'closed:ended:run1']);
    expect(h.audit.every((e) => e.recordingId === h.rec.recordingId)).toBe(true);
    expect(h.reports).toEqual(['false|no-consent', 'true|+id', 'false|paused+id', 'true|+id']);
    expect(h.store.ended).toEqual([h.rec.recordingId]);
    expect(h.rec.phase).toEqual({ name: 'ended', recordingId: h.rec.recordingId, erased: false });
    h.evaluate(T0 + 4000); // an ended call is not re-decided
    expect(h.gateAudit()).toHaveLength(4);
  });

  it('a gate that opens and closes while the admission is in flight audits nothing', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    h.apply({ type: 'call.paused', callId: 'c1' });
    h.evaluate();
    expect(h.rec.gate.runIndex).toBe(0); // the GateMachine did open once
    await h.answer(true);
    h.evaluate();
    expect(h.rec.phase.name).toBe('admitted');
    expect(h.gateAudit()).toEqual([]);
    expect(h.reports).toEqual(['false|paused', 'false|paused+id']); // admitted: the report now names the recording
    h.apply({ type: 'call.resumed', callId: 'c1' });
    h.evaluate();
    expect(h.gateAudit()).toEqual(['open::run1']); // the first run written is the gate's second opening
  });

  it('an admission whose answer was lost with the stream returns to closed and asks again for the same recording id', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    const first = h.pending[0]!.recordingId;
    h.pending.shift()!.reject(new OptinError('CONTROL_NOT_FRESH', 'stream lost'));
    await new Promise((r) => setImmediate(r));
    expect(h.rec.phase).toEqual({ name: 'closed', candidateId: first });
    h.evaluate();
    expect(h.rec.phase.name).toBe('admitting');
    expect(h.pending).toHaveLength(1);
    // Asking again for the same id is idempotent at the control plane: never counted twice.
    expect(h.pending[0]!.recordingId).toBe(first);
  });

  it('no cap decision in time: cap-unknown (R7), closed, asked again after the retry delay for the same id', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    const first = h.pending[0]!.recordingId;
    h.pending.shift()!.reject(new OptinError('CONTROL_CAP_UNKNOWN', 'no answer'));
    await new Promise((r) => setImmediate(r));
    expect(h.rec.phase.name).toBe('cap-unknown');
    expect(h.rec.writing).toBe(false);
    expect(h.reports.at(-1)).toBe('false|cap-unknown');
    const retryAt = (h.rec.phase as { retryAtMs: number }).retryAtMs;
    h.evaluate(retryAt - 1);
    expect(h.pending).toHaveLength(0); // not before the retry delay
    h.evaluate(retryAt + CAP_RETRY_MS);
    expect(h.rec.phase.name).toBe('admitting');
    expect(h.pending[0]!.recordingId).toBe(first);
    await h.answer(true);
    h.evaluate(retryAt + CAP_RETRY_MS);
    expect(h.rec.writing).toBe(true);
    expect(h.audit.map((e) => e.type)).toEqual(['gate.transition']);
  });

  it('a deletion while recording stops it for good with R7 deleted; the store deletes it', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    await h.answer(true);
    h.evaluate();
    const recordingId = h.rec.recordingId!;
    await h.rec.deleteRecording('deletion-team-lead');
    expect(h.rec.phase).toEqual({ name: 'erased', recordingId, refused: false, cause: 'deletion' });
    expect(h.store.deleted).toEqual([recordingId]);
    h.evaluate();
    expect(h.rec.writing).toBe(false);
    expect(h.reports.at(-1)).toBe('false|deleted+id');
    expect(h.gateAudit()).toEqual(['open::run0', 'closed:erased:run0']);
  });

  it('erasure while recording: the stop is audited as erased, then the deletion', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    await h.answer(true);
    h.evaluate();
    const recordingId = h.rec.recordingId!;
    await h.rec.erase('consent-withdrawn-erase');
    expect(h.rec.erased).toBe(true);
    expect(h.gateAudit()).toEqual(['open::run0', 'closed:erased:run0']);
    expect(h.audit.at(-1)).toMatchObject({ type: 'recording.erased', recordingId });
    expect(h.store.deleted).toEqual([recordingId]);
    // The policy still allows recording here: the call stays erased, and says why it is not recording.
    h.evaluate();
    expect(h.rec.writing).toBe(false);
    expect(h.reports.at(-1)).toBe('false|consent-withdrawn+id');
    await h.rec.close(T0 + 1000);
    expect(h.rec.erased).toBe(true);
    expect(h.store.ended).toEqual([]); // an erased recording is not finalised
  });

  it('an admission that lands after the erasure begins nothing (no manifest naming the participants)', async () => {
    const h = harness();
    h.apply({ type: 'consent.granted', callId: 'c1', participantId: cust.participantId, evidence: ev });
    h.evaluate();
    expect(await h.rec.erase('consent-withdrawn-erase')).toBeUndefined();
    await h.answer(true);
    expect(h.rec.phase).toEqual({ name: 'erased', recordingId: undefined, refused: false, cause: 'erasure' });
    expect(h.rec.recordingId).toBeUndefined();
    expect(h.store.begun).toEqual([]);
    expect(h.evaluations()).toBe(1); // the agents' other calls are still re-decided
    expect(h.gateAudit()).toEqual([]);
  });
});
