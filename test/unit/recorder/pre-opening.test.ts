/**
 * R4 by media time on a direct track (SIPREC: the SBC forks the RTP, no SFU; issue 19 item 5):
 * the same check as on a tapped leg. At the first opening and at a resume, a packet that arrives
 * after the gate opened but whose audio is from before it is dropped and counted; the packets
 * around it are kept.
 */
import { describe, expect, it } from 'vitest';
import type { Fact } from '../../../src/gate/facts.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';
import { CallRecorder, type CallStore } from '../../../src/recorder/CallRecorder.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import type { SegmentInput } from '../../../src/storage/types.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 4, 12, 9, 0, 0);
const OPUS_20MS = Buffer.from([0xf8, 0xff, 0xfe]);
const DELAY = 5;

/** A call with one direct customer track, its policy state and what its store was given. */
function directTrack() {
  const state = new PolicyState();
  state.applySnapshot([], [{ agentId: 'agent-1', windows: [{ start: T0 - HOUR, end: T0 + 2 * HOUR }], monthlyCap: 3 }]);
  const apply = (fact: Fact): void => {
    const r = state.applyFact(fact);
    if (!r.ok) throw new Error(`${r.code}: ${r.message}`);
  };
  apply({ type: 'call.started', callId: 'c1', participants: [{ participantId: 'p-agent', role: 'agent', subjectId: 'agent-1' }, { participantId: 'p-cust', role: 'customer', subjectId: 'cust-1' }] });
  const stored: SegmentInput[] = [];
  const store: CallStore = {
    putSegment: async (meta) => void stored.push(meta),
    beginRecording: async () => undefined,
    endRecording: async () => undefined,
    deleteRecording: async () => undefined,
  };
  const rec = new CallRecorder('c1', undefined, {
    state,
    store,
    admitter: {
      admitCall: async (s, callId, recordingId) => {
        s.markAdmitted(callId, recordingId, T0);
        return true;
      },
    },
    segmentSamples: 48_000,
    logger: createLogger('silent'),
    onReport: () => undefined,
    onAudit: () => undefined,
    requestEvaluate: () => undefined,
  });
  const track = rec.openDirectTrack('p-cust', 'opus');
  const t = rec.tracks.get('p-cust')!;
  return { state, apply, stored, rec, track, t };
}

describe('a direct track at an opening and a resume', () => {
  it('drops and counts the audio from before each opening, however late it arrives', async () => {
    const { apply, stored, rec, track, t } = directTrack();
    // Packet k is spoken at T0 + 20·k - 1000 and arrives DELAY ms later (a straggler: later).
    const send = (k: number, lateBy = 0): void => {
      track.push(buildRtp({ payloadType: 100, sequenceNumber: 4000 + k, timestamp: 77 + k * 960, ssrc: 0xabc, payload: OPUS_20MS }), T0 - 1000 + 20 * k + DELAY + lateBy);
      rec.tick(T0 - 1000 + 20 * k + DELAY + lateBy);
    };
    for (let k = 0; k < 50; k++) send(k); // before consent: dropped, but the media clock runs

    apply({ type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: { method: 'dtmf', at: T0 - 100, infoVersion: 'v1' } });
    rec.evaluate(T0, []);
    await new Promise((r) => setImmediate(r)); // the admission's answer
    rec.evaluate(T0, []); // opens at T0: packet 50 is spoken at T0, 49 at T0 - 20
    expect(rec.phase.name).toBe('recording');
    send(51); // arrives at T0 + 25
    send(49, 42); // arrives at T0 + 27, after the opening: its audio is from before it
    send(50, 25); // arrives at T0 + 30: kept (spoken at the opening, not before)
    for (let k = 52; k < 100; k++) send(k);
    expect(t.counters.droppedPreOpening).toBe(1);

    apply({ type: 'call.paused', callId: 'c1' });
    rec.evaluate(T0 - 1000 + 20 * 100, []);
    for (let k = 100; k < 149; k++) send(k); // paused: dropped (gate closed)
    apply({ type: 'call.resumed', callId: 'c1' });
    const resumeAt = T0 - 1000 + 20 * 150 + DELAY - 1; // packet 150's media time is 1 ms after it
    rec.evaluate(resumeAt, []);
    expect(rec.phase.name).toBe('recording');
    send(151);
    send(149, 40); // audio from 19 ms before the resume, arrives 40 ms after it
    send(150, 20);
    for (let k = 152; k < 200; k++) send(k);
    expect(t.counters.droppedPreOpening).toBe(2);
    await rec.close(T0 + 5000);

    // Runs 0 and 1: 50 packets each (50-99 and 150-199), nothing from before either opening.
    const byRun = new Map<number, number>();
    for (const m of stored) byRun.set(m.run, (byRun.get(m.run) ?? 0) + m.durationMs);
    expect([...byRun.values()]).toEqual([1000, 1000]);
    expect(t.counters.written).toBe(100);
  });

  it('drops the audio from before the opening that waited in the socket while the reader was held up', async () => {
    const { apply, stored, rec, track, t } = directTrack();
    const at = (k: number): number => T0 - 1000 + 20 * k + DELAY;
    for (let k = 0; k < 50; k++) {
      track.push(buildRtp({ payloadType: 100, sequenceNumber: 4000 + k, timestamp: 77 + k * 960, ssrc: 0xabc, payload: OPUS_20MS }), at(k));
      rec.tick(at(k));
    }
    apply({ type: 'consent.granted', callId: 'c1', participantId: 'p-cust', evidence: { method: 'dtmf', at: T0 - 100, infoVersion: 'v1' } });
    rec.evaluate(T0 - 10, []);
    await new Promise((r) => setImmediate(r));
    // Opens at T0 + 50 (packet 52 arrives at T0 + 45 and 53 at T0 + 65) ...
    rec.evaluate(T0 + 50, []);
    expect(rec.phase.name).toBe('recording');
    // ... but the reader was held up from T0 - 20 to T0 + 110: packets 49-55 waited in the socket
    // and are read together, in order, all after the opening. 49-52 came before it.
    const readAt = T0 + 110;
    for (let k = 49; k < 56; k++) track.push(buildRtp({ payloadType: 100, sequenceNumber: 4000 + k, timestamp: 77 + k * 960, ssrc: 0xabc, payload: OPUS_20MS }), readAt);
    rec.tick(readAt);
    for (let k = 56; k < 100; k++) {
      track.push(buildRtp({ payloadType: 100, sequenceNumber: 4000 + k, timestamp: 77 + k * 960, ssrc: 0xabc, payload: OPUS_20MS }), at(k));
      rec.tick(at(k));
    }
    expect(t.counters.droppedPreOpening).toBe(4);
    await rec.close(T0 + 5000);
    expect(t.counters.written).toBe(100 - 53);
    // The first segment starts at packet 53's arrival on the media clock: after the opening.
    expect(Math.min(...stored.map((m) => m.startWallClockMs))).toBeGreaterThanOrEqual(T0 + 50);
  });
});
