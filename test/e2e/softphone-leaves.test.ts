/**
 * A room lives while any leg of either kind lives (issue 19): a call with a browser agent
 * (WebRTC) and a customer on a SIP gateway's plain leg (ffmpeg PCMU RTP, pinned to its declared
 * address). When the agent's softphone leaves, the customer's leg stays up and stays recorded:
 * the room is not closed with the last page, the call stays attached, and the customer's track
 * holds audio from after the page left. The call then ends on `call.ended`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { signCallToken } from '../../src/callcontrol/callToken.ts';
import { sendRtp } from '../../src/media/ffmpeg.ts';
import { callClosed, useStack } from '../support/stack.ts';
import { useSoftphoneHost } from '../support/softphone.ts';
import { fixturePath } from '../support/fixtures.ts';
import { freeUdpPortPair } from '../support/udpPorts.ts';
import { readTrack } from '../support/storageFixtures.ts';

const stack = useStack({ segmentSeconds: 1 }, { agents: ['agent-sl1'] });
const host = useSoftphoneHost(stack);

describe('the last softphone leaves a call with a SIP leg', () => {
  it('keeps the SIP leg up and recorded', async () => {
    const callId = 'call-page-leaves';
    await stack.policy.startCall(callId, [
      { participantId: 'sl-agent', role: 'agent', subjectId: 'agent-sl1', teamLeadId: 'lead-sl1' },
      { participantId: 'sl-cust', role: 'customer', subjectId: 'cust-sl1' },
    ]);
    const agent = await host.openPhone(callId, 'sl-agent', fixturePath('agent-tone-44k.wav'));
    await agent.page.waitForFunction('window.__joined === true', undefined, { timeout: 20_000, polling: 100 });

    const from = await freeUdpPortPair();
    const token = signCallToken(stack.config.callControl.sipLegSecret!, { aud: 'sip-leg', callId, participantId: 'sl-cust', lifetimeSeconds: 60 });
    const res = await fetch(`${host.http.url}/calls/${callId}/plain-legs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ participantId: 'sl-cust', codec: 'pcmu', ssrc: 0x5c01, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } }),
    });
    expect(res.status).toBe(201);
    const leg = (await res.json()) as { ip: string; rtpPort: number; rtcpPort: number };
    const sender = sendRtp({ file: fixturePath('customer-tone.wav'), codec: 'pcmu', ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc: 0x5c01, seconds: 30, localRtpPort: from.rtpPort, localRtcpPort: from.rtcpPort });
    try {
      const call = () => stack.app.recorder.calls.get(callId);
      await stack.policy.grantConsent(callId, 'sl-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      await expect.poll(() => call()?.tracks.get('sl-agent')?.counters.written ?? 0, { timeout: 20_000 }).toBeGreaterThan(0);
      await expect.poll(() => call()?.tracks.get('sl-cust')?.counters.written ?? 0, { timeout: 20_000 }).toBeGreaterThan(0);
      const recordingId = call()!.recordingId!;
      const room = call()!.room!;

      // The only page leaves (the browser goes away: its socket closes, its transports with it).
      await agent.close();
      await expect.poll(() => room.legs.map((l) => l.participantId), { timeout: 10_000 }).toEqual(['sl-cust']);
      const leftAt = Date.now();
      const writtenAtLeave = call()!.tracks.get('sl-cust')!.counters.written;
      // Longer than the 15 s the room used to wait for a page to come back before it closed
      // with the SIP leg still in it (the behaviour this test is here for).
      await sleep(16_000);
      expect(room.closed).toBe(false);
      expect(call()).toBeDefined();
      // 16 s of 20 ms packets: about 800 more written after the page left.
      expect(call()!.tracks.get('sl-cust')!.counters.written - writtenAtLeave).toBeGreaterThan(600);
      expect(stack.app.recorder.lastState(callId)?.recording).toBe(true);

      await stack.policy.endCall(callId);
      await callClosed(stack, callId);
      expect(room.closed).toBe(true);
      await stack.app.store.drained(30_000);
      const segs = await readTrack(stack.app.store, recordingId, 'sl-cust');
      const end = Math.max(...segs.map((s) => s.meta.startWallClockMs + s.meta.durationMs));
      expect(end - leftAt).toBeGreaterThan(15_000);
      expect((await stack.app.store.getManifest(recordingId)).state).toBe('ended');
    } finally {
      sender.stop();
    }
  }, 90_000);
});
