/**
 * R4 by media time on a direct track (SIPREC: the SBC forks the RTP, no SFU; issue 19 item 5):
 * the same check as on a tapped leg. At the first opening and at a resume, a packet that arrives
 * after the gate opened but whose audio is from before it is dropped and counted; the packets
 * around it are kept. And a media thread's drain: judged by the sleep's start, placed by the read.
 */
import { describe, expect, it } from 'vitest';
import type { Fact } from '../../../src/gate/facts.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';
import { CallRecorder, type CallStore } from '../../../src/recorder/CallRecorder.ts';
import { TrackRecorder } from '../../../src/recorder/TrackRecorder.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import type { SegmentInput } from '../../../src/storage/types.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 4, 12, 9, 0, 0);
const OPUS_20MS = Buffer.from([0xf8, 0xff, 0xfe]);
const DELAY = 5;

describe('a direct track at an opening and a resume', () => {
  it('drops and counts the audio from before each opening, however late it arrives', async () => {
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
});

describe("a media thread's drains at an opening", () => {
  it('judges a drained packet by the sleep it waited out, and places the track by when it was read', async () => {
    const stored: SegmentInput[] = [];
    const track = new TrackRecorder({
      callId: 'c1',
      participantId: 'p1',
      codec: 'opus',
      segmentSamples: 48_000,
      sink: { putSegment: async (meta) => void stored.push(meta) },
      logger: createLogger('silent'),
      onStoreError: () => undefined,
    });
    // Packet k is spoken at T0 + 20·k - 1000 and comes DELAY ms later.
    const at = (k: number): number => T0 - 1000 + 20 * k + DELAY;
    const rtp = (k: number): Buffer => buildRtp({ payloadType: 100, sequenceNumber: 4000 + k, timestamp: 77 + k * 960, ssrc: 0xabc, payload: OPUS_20MS });
    for (let k = 0; k < 50; k++) track.onRtp(rtp(k), at(k), false); // gate closed: the media clock runs
    track.startRun('r_0000000000000001', 0, T0 + 50);
    // A drain whose sleep began at T0 + 40, before the opening, read at T0 + 110 (packets 50-55
    // came at T0 + 5 ... T0 + 105): none can be told to have come after the opening. Dropped.
    for (let k = 50; k < 56; k++) track.onRtp(rtp(k), T0 + 110, true, T0 + 40);
    // The next sleep began at T0 + 111, after the opening; the thread was held up and read it at
    // T0 + 215 (packets 56-60 came at T0 + 125 ... T0 + 205). Kept.
    for (let k = 56; k < 61; k++) track.onRtp(rtp(k), T0 + 215, true, T0 + 111);
    track.tick(T0 + 215);
    for (let k = 61; k < 100; k++) {
      track.onRtp(rtp(k), at(k), true);
      track.tick(at(k));
    }
    await track.endRun(at(100));
    await track.settled();
    expect(track.counters.droppedPreOpening).toBe(6);
    expect(track.counters.written).toBe(44);
    // The track starts where packet 56 came (T0 + 125): placed by the least-delayed packets, the
    // drained ones counted at their read, never at the sleep's start (T0 + 111, 14 ms early).
    expect(stored[0]!.startWallClockMs).toBe(at(56));
  });
});
