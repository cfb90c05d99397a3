/**
 * A speaker who reconnects mid-call (issue 17: a page reload, a new SIP leg) gets a new producer
 * with a new SSRC and RTP clock. The recorder taps it again as the same participant: the track
 * continues in a new run of the same recording, segment numbers never repeat, and the call never
 * stops reporting "recording" (R7) while the speaker is in fact recorded again.
 */
import { describe, expect, it } from 'vitest';
import { sendRtp } from '../../../src/media/ffmpeg.ts';
import { useStack } from '../../support/stack.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { readTrack } from '../../support/storageFixtures.ts';

const stack = useStack({}, { agents: ['agent-rc1'] });

describe('a speaker who reconnects', () => {
  it('is recorded again as the same participant, in a new run of the same recording', async () => {
    const callId = 'call-reconnect';
    await stack.policy.startCall(callId, [
      { participantId: 'rc-agent', role: 'agent', subjectId: 'agent-rc1', teamLeadId: 'lead-rc1' },
      { participantId: 'rc-cust', role: 'customer', subjectId: 'cust-rc1' },
    ]);
    const room = await stack.app.openCall(callId);
    const call = () => stack.app.recorder.calls.get(callId)!;
    const agentLeg = await room.addPlainLeg('rc-agent', 'opus', 0x5501);
    const custLeg = await room.addPlainLeg('rc-cust', 'pcmu', 0x5502);
    const agentSender = sendRtp({ file: fixturePath('agent-speech.wav'), codec: 'opus', ip: agentLeg.ip, rtpPort: agentLeg.rtpPort, rtcpPort: agentLeg.rtcpPort, ssrc: 0x5501, seconds: 20 });
    const custSender = sendRtp({ file: fixturePath('customer-speech.wav'), codec: 'pcmu', ip: custLeg.ip, rtpPort: custLeg.rtpPort, rtcpPort: custLeg.rtcpPort, ssrc: 0x5502, seconds: 20 });
    const senders = [agentSender, custSender];
    // R7 sampled throughout: once recording, the call must not stop reporting it across the reconnect.
    const phases: string[] = [];
    const sampler = setInterval(() => phases.push(call().phase.name), 20);
    try {
      await expect.poll(() => [...call().tracks.values()].every((t) => t.counters.received > 0), { timeout: 10_000 }).toBe(true);
      await stack.policy.grantConsent(callId, 'rc-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      await expect.poll(() => call().tracks.get('rc-agent')?.counters.written ?? 0, { timeout: 10_000 }).toBeGreaterThan(0);
      const recordingId = call().recordingId!;
      const firstTrack = call().tracks.get('rc-agent')!;
      await new Promise((r) => setTimeout(r, 2500)); // more than one 2 s segment in the first run

      // The reconnect: the old leg goes away (its producer closes), a new one comes for the same participant.
      agentSender.stop();
      agentLeg.transport.close();
      const reconnectAt = Date.now();
      const again = await room.addPlainLeg('rc-agent', 'opus', 0x6601);
      senders.push(sendRtp({ file: fixturePath('agent-speech.wav'), codec: 'opus', ip: again.ip, rtpPort: again.rtpPort, rtcpPort: again.rtcpPort, ssrc: 0x6601, seconds: 20 }));
      const writtenBefore = firstTrack.counters.written;
      // Same codec: the same TrackRecorder goes on writing (a new run inside it).
      await expect.poll(() => call().tracks.get('rc-agent')!.counters.written - writtenBefore, { timeout: 10_000 }).toBeGreaterThan(150);
      expect(call().tracks.get('rc-agent')).toBe(firstTrack);
      expect(call().recordingId).toBe(recordingId);

      // Sampled up to the end of the call: recording from the opening on, without a gap.
      clearInterval(sampler);
      const opened = phases.indexOf('recording');
      expect(opened).toBeGreaterThanOrEqual(0);
      expect(phases.slice(opened).filter((p) => p !== 'recording')).toEqual([]);
      await stack.policy.endCall(callId);
      for (const s of senders) s.stop();
      await stack.app.recorder.detachCall(callId); // seals the last segments and ends the manifest
      room.close();
      await stack.app.store.drained(20_000);

      const segs = await readTrack(stack.app.store, recordingId, 'rc-agent');
      const runs = [...new Set(segs.map((s) => s.meta.run))];
      expect(runs.length, `runs ${runs.join(',')}`).toBe(2);
      expect(runs[1]).toBeGreaterThan(runs[0]!);
      const numbers = segs.map((s) => s.meta.segment);
      expect(new Set(numbers).size).toBe(numbers.length);
      const firstRun = segs.filter((s) => s.meta.run === runs[0]);
      const secondRun = segs.filter((s) => s.meta.run === runs[1]);
      expect(firstRun.length).toBeGreaterThanOrEqual(1);
      // The new run begins after the reconnect and holds seconds of the speaker again.
      expect(Math.min(...secondRun.map((s) => s.meta.startWallClockMs))).toBeGreaterThanOrEqual(reconnectAt - 100);
      expect(secondRun.reduce((a, s) => a + s.meta.durationMs, 0)).toBeGreaterThanOrEqual(2500);
      // The customer's track is one run: nothing of theirs restarted.
      const cust = await readTrack(stack.app.store, recordingId, 'rc-cust');
      expect(new Set(cust.map((s) => s.meta.run)).size).toBe(1);
    } finally {
      clearInterval(sampler);
      for (const s of senders) s.stop();
      room.close();
    }
  }, 90_000);
});
