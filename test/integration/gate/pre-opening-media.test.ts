/**
 * R4 by media time (issue 19 item 5): at a reopening, a packet that reaches the recorder after the
 * gate opened but carries audio from before the opening (a reordered packet: its RTP timestamp,
 * mapped to wall-clock time through the track's media clock, lies before the opening instant) is
 * dropped and counted. Issue 17's receive-time fence cannot catch it: the packet really arrived
 * after the opening. Through real mediasoup, a plain leg and a gateway-like UDP sender on hold
 * around the resume; after the resume the gateway's next packet arrives, then the one before it
 * (reordered), whose audio is from ~30 ms before the resume. Before the fix the new run's jitter
 * buffer took both (the first two packets of a run define where it starts): it was written.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import type { RecordingStateEvent } from '../../../src/recorder/Recorder.ts';
import { startOpusGateway } from '../../support/rtpGateway.ts';
import { callClosed, useStack } from '../../support/stack.ts';
import { readTrack } from '../../support/storageFixtures.ts';
import { freeUdpPortPair } from '../../support/udpPorts.ts';

const stack = useStack({ segmentSeconds: 1 }, { agents: ['agent-pre1'] });

async function droppedPreOpening(): Promise<number> {
  const m = await stack.app.metrics.registry.getSingleMetric('optin_packets_dropped_total')?.get();
  return m?.values.find((v) => v.labels.reason === 'pre-opening')?.value ?? 0;
}

describe('a reordered packet from before a reopening', () => {
  it('is not written, and is counted', async () => {
    const callId = 'call-pre-1';
    const pid = 'pre-agent';
    await stack.policy.startCall(callId, [
      { participantId: pid, role: 'agent', subjectId: 'agent-pre1', teamLeadId: 'lead-pre1' },
      { participantId: 'pre-cust', role: 'customer', subjectId: 'cust-pre1' },
    ]);
    const room = await stack.app.openCall(callId);
    const from = await freeUdpPortPair();
    const ssrc = 0x3c3c0001;
    const leg = await room.addPlainLeg(pid, 'opus', ssrc, 100, { ip: '127.0.0.1', ...from });
    const states: RecordingStateEvent[] = [];
    const onState = (id: string, s: RecordingStateEvent): void => {
      if (id === callId) states.push(s);
    };
    stack.app.recorder.on('state', onState);

    // One source, its timestamps following the clock throughout: talking 0-2.6 s, on hold (nothing
    // sent) 2.6-4.6 s, talking again from 4.6 s. Packet k is sent at start + 20·k ms with ts0 + 960·k.
    const seq0 = 2000;
    const ts0 = 10_000;
    const gw = await startOpusGateway({
      host: leg.ip,
      port: leg.rtpPort,
      fromPort: from.rtpPort,
      phases: [
        { fromMs: 0, toMs: 2600, ssrc, payloadType: 100, seq0, ts0 },
        // Sequences 2130 and 2131 (the hold's first slots) are sent by hand below.
        { fromMs: 4600, toMs: 60_000, ssrc, payloadType: 100, seq0: seq0 + 132, ts0: ts0 + 230 * 960 },
      ],
    });
    try {
      const call = () => stack.app.recorder.calls.get(callId)!;
      await expect.poll(() => call().tracks.get(pid)?.counters.received ?? 0, { timeout: 10_000 }).toBeGreaterThan(10);
      await sleep(gw.startedAt + 600 - Date.now());
      await stack.policy.grantConsent(callId, 'pre-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      await expect.poll(() => call().writing, { timeout: 10_000 }).toBe(true);
      await sleep(gw.startedAt + 1500 - Date.now());
      await stack.policy.pause(callId);
      await expect.poll(() => call().phase.name, { timeout: 5_000 }).toBe('admitted');
      await sleep(gw.startedAt + 3400 - Date.now());
      const recordingId = call().recordingId!;
      await stack.policy.resume(callId);
      await expect.poll(() => call().writing, { timeout: 5_000 }).toBe(true);
      const reopened = states.filter((s) => s.recording).at(-1)!;
      expect(reopened.at).toBeGreaterThan(gw.startedAt + 2600); // reopened during the hold

      // After the resume: the gateway's packet of ~10 ms after it (in order, kept), then the one
      // before it, reordered: audio from ~30 ms before the resume (by the sender's clock, which
      // the media clock maps onto the recorder's), with a payload of its own.
      const k = Math.round((reopened.at - 30 - gw.startedAt) / 20);
      const before = await droppedPreOpening();
      const track = call().tracks.get(pid)!;
      const trackBefore = track.counters.droppedPreOpening;
      const marker = Buffer.concat([Buffer.from([0xf8]), Buffer.from('pre-opening audio, must not be stored', 'ascii')]);
      gw.sendRaw(buildRtp({ payloadType: 100, sequenceNumber: seq0 + 131, timestamp: ts0 + (k + 2) * 960, ssrc, payload: gw.frame() }));
      await sleep(5);
      gw.sendRaw(buildRtp({ payloadType: 100, sequenceNumber: seq0 + 130, timestamp: ts0 + k * 960, ssrc, payload: marker }));
      const mappedMs = gw.startedAt + k * 20;
      console.log(`reopened at +${reopened.at - gw.startedAt} ms; straggler's audio at +${mappedMs - gw.startedAt} ms (${reopened.at - mappedMs} ms before), sent ${Date.now() - reopened.at} ms after the reopening`);

      await sleep(gw.startedAt + 6000 - Date.now());
      await stack.policy.endCall(callId);
      await callClosed(stack, callId);
      await stack.app.store.drained(20_000);

      const segs = await readTrack(stack.app.store, recordingId, pid);
      const runs = [...new Set(segs.map((s) => s.meta.run))];
      expect(runs.length).toBe(2);
      const ogg = Buffer.concat(segs.map((s) => s.ogg));
      expect(ogg.indexOf(marker.subarray(1))).toBe(-1);
      expect((await droppedPreOpening()) - before).toBe(1);
      expect(track.counters.droppedPreOpening - trackBefore).toBe(1);
      // What the gateway said after the resume is there: the hand-sent packet, the rest of the
      // hold as silence, then the talk.
      const secondRunMs = segs.filter((s) => s.meta.run === runs[1]).reduce((a, s) => a + s.meta.durationMs, 0);
      const closedAt = states.find((st) => !st.recording && st.at > reopened.at)!.at;
      console.log(`second run ${secondRunMs} ms for ${closedAt - reopened.at} ms of gate-open time`);
      // About the gate-open time when the machine is idle (2560 for 2565 ms); packets still in
      // the ingress when the call ends under load are not, hence only a floor here.
      expect(secondRunMs).toBeGreaterThan(1000);
      expect(secondRunMs).toBeLessThanOrEqual(closedAt - reopened.at + 20);
    } finally {
      stack.app.recorder.off('state', onState);
      await gw.stop();
    }
  });
});
