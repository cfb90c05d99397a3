/**
 * Admission re-decides a refused call when the load falls (issue 19). A call refused as
 * `overloaded` at an event-loop stall (as right after startup), and one refused at the stream
 * ceiling, are both recorded once the load is back under the ceiling; R7 reports the refusal and
 * then the recording, up to the control plane. Real mediasoup legs, real G.711 RTP senders.
 */
import { describe, expect, it } from 'vitest';
import type { RecordingStateEvent } from '../../../src/recorder/Recorder.ts';
import { useStack } from '../../support/stack.ts';
import { paceTone } from '../../support/rtpTone.ts';
import { storedRecordingState } from '../../support/policyFacts.ts';

const stack = useStack({ 'admission.maxStreams': 4, 'admission.maxEventLoopLagMs': 250 }, { agents: ['agent-ra1'] });

/** A call with two PCMU legs sending tones; its R7 reports collected from the start. */
async function call(callId: string, beforeOpen?: () => Promise<void>): Promise<{ states: RecordingStateEvent[]; stop(): Promise<void> }> {
  const states: RecordingStateEvent[] = [];
  stack.app.recorder.on('state', (id, s) => {
    if (id === callId) states.push(s);
  });
  await stack.policy.startCall(callId, [
    { participantId: `${callId}-a`, role: 'agent', subjectId: 'agent-ra1', teamLeadId: 'lead-ra1' },
    { participantId: `${callId}-c`, role: 'customer', subjectId: `${callId}-cust` },
  ]);
  await expect.poll(() => stack.app.state.call(callId) !== undefined, { timeout: 5000 }).toBe(true);
  await stack.policy.grantConsent(callId, `${callId}-c`, { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
  await beforeOpen?.();
  const room = await stack.app.openCall(callId);
  const senders: { stop(): Promise<number> }[] = [];
  for (const [i, p] of [`${callId}-a`, `${callId}-c`].entries()) {
    const leg = await room.addPlainLeg(p, 'pcmu', 0x8800 + i);
    senders.push(paceTone({ port: leg.rtpPort, freq: 440 + 300 * i, ssrc: 0x8800 + i }));
  }
  return {
    states,
    async stop() {
      for (const s of senders) await s.stop();
      await stack.app.recorder.endCall(callId);
    },
  };
}

const recordingNow = (callId: string) => stack.app.recorder.calls.get(callId)?.tracks.get(`${callId}-c`)?.counters.written ?? 0;

describe('a call refused as overloaded', () => {
  it('at an event-loop stall is recorded once the lag falls, R7 reporting both', async () => {
    const c = await call('call-stall', async () => {
      // A startup-like stall (the loop blocked again and again, as while a bundle is built), seen
      // by the once-a-second lag figure (its 99th percentile: one lone outlier would not show).
      for (let i = 0; i < 4; i++) {
        const until = Date.now() + 350;
        while (Date.now() < until);
        await new Promise((r) => setTimeout(r, 15));
      }
      await expect.poll(() => stack.app.recorder.eventLoopLagP99Ms, { timeout: 3000, interval: 5 }).toBeGreaterThan(250);
    });
    try {
      const refused = c.states.find((s) => !s.recording);
      expect(refused?.reasons).toContain('overloaded');
      // The next lag figure is back under the ceiling: the call is admitted and recorded.
      await expect.poll(() => recordingNow('call-stall'), { timeout: 5000 }).toBeGreaterThan(0);
      const recorded = c.states.findIndex((s) => s.recording);
      expect(recorded).toBeGreaterThan(c.states.indexOf(refused!));
      await expect.poll(async () => (await storedRecordingState(stack.control.cp.db, 'call-stall'))?.recording, { timeout: 5000 }).toBe(true);
    } finally {
      await c.stop();
    }
  });

  it('at the stream ceiling is recorded once another call ends', async () => {
    const a = await call('call-ceil-a');
    const b = await call('call-ceil-b');
    const c = await call('call-ceil-c'); // 4 streams taken: refused
    try {
      await expect.poll(() => recordingNow('call-ceil-b'), { timeout: 5000 }).toBeGreaterThan(0);
      expect(c.states.at(-1)?.reasons).toContain('overloaded');
      await new Promise((r) => setTimeout(r, 1500));
      expect(recordingNow('call-ceil-c')).toBe(0); // still no room: still refused
      await a.stop();
      await expect.poll(() => recordingNow('call-ceil-c'), { timeout: 5000 }).toBeGreaterThan(0);
      expect(c.states.at(-1)?.recording).toBe(true);
      await expect.poll(async () => (await storedRecordingState(stack.control.cp.db, 'call-ceil-c'))?.recording, { timeout: 5000 }).toBe(true);
      // And the recordings already running were never touched.
      expect(b.states.filter((s) => s.recording === false && s.reasons.includes('overloaded'))).toEqual([]);
    } finally {
      await b.stop();
      await c.stop();
    }
  });
});
