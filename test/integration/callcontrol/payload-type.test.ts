/**
 * The payload type the gateway declares (issue 19): an Opus leg at PT 111 (the common dynamic
 * type) is recorded, sent by a real RTP sender (ffmpeg) at PT 111 through call control; a type
 * that cannot carry the codec is refused with the rule, not silently recorded as nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorderHttp, type RecorderHttp } from '../../../src/app/recorderHttp.ts';
import { signCallToken } from '../../../src/callcontrol/callToken.ts';
import { sendRtp } from '../../../src/media/ffmpeg.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { callClosed, useStack } from '../../support/stack.ts';
import { ThreadedTrack } from '../../../src/mediathreads/ThreadedTrack.ts';
import { readTrack } from '../../support/storageFixtures.ts';
import { freeUdpPortPair } from '../../support/udpPorts.ts';

const stack = useStack({ segmentSeconds: 1 }, { agents: ['agent-pt1'] });
let http: RecorderHttp;

beforeAll(async () => {
  http = await startRecorderHttp(stack.app, { host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await http?.close();
});

const legToken = (callId: string, participantId: string): string =>
  signCallToken(stack.config.callControl.sipLegSecret!, { aud: 'sip-leg', callId, participantId, lifetimeSeconds: 60 });

async function openLeg(callId: string, body: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${http.url}/calls/${callId}/plain-legs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${legToken(callId, String(body.participantId))}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('the payload type a gateway declares', () => {
  it('refuses a type that cannot carry the codec, naming the rule', async () => {
    const remote = { ip: '127.0.0.1', rtpPort: 40_010, rtcpPort: 40_011 };
    for (const [codec, payloadType] of [['opus', 0], ['opus', 95], ['opus', 128], ['pcmu', 8], ['pcma', 111]] as const) {
      const res = await openLeg('call-pt-bad', { participantId: 'pt-bad', codec, ssrc: 0x7701, payloadType, remote });
      expect(res.status, `${codec} ${payloadType}`).toBe(400);
      expect(String(res.body.message)).toMatch(/payloadType/);
    }
  });

  it('records an Opus leg sent at PT 111', async () => {
    const callId = 'call-pt-111';
    await stack.policy.startCall(callId, [
      { participantId: 'pt-agent', role: 'agent', subjectId: 'agent-pt1', teamLeadId: 'lead-pt1' },
      { participantId: 'pt-cust', role: 'customer', subjectId: 'cust-pt1' },
    ]);
    const from = await freeUdpPortPair();
    const opened = await openLeg(callId, { participantId: 'pt-agent', codec: 'opus', ssrc: 0x7702, payloadType: 111, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } });
    expect(opened.status).toBe(201);
    expect(opened.body.payloadType).toBe(111);
    const leg = opened.body as { ip: string; rtpPort: number; rtcpPort: number };
    const sender = sendRtp({ file: fixturePath('agent-tone.wav'), codec: 'opus', payloadType: 111, ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc: 0x7702, seconds: 30, localRtpPort: from.rtpPort, localRtcpPort: from.rtcpPort });
    try {
      const call = () => stack.app.recorder.calls.get(callId)!;
      await expect.poll(() => call().tracks.get('pt-agent')?.counters.received ?? 0, { timeout: 10_000 }).toBeGreaterThan(0);
      // The default tap (OPTIN_SFU_TAP=thread): the leg's track lives in a media thread, not on the main thread.
      expect(call().tracks.get('pt-agent')).toBeInstanceOf(ThreadedTrack);
      await stack.policy.grantConsent(callId, 'pt-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      await expect.poll(() => call().tracks.get('pt-agent')?.counters.written ?? 0, { timeout: 10_000 }).toBeGreaterThan(0);
      const recordingId = call().recordingId!;
      await new Promise((r) => setTimeout(r, 3000));
      await stack.policy.endCall(callId);
      await callClosed(stack, callId);
      await stack.app.store.drained(20_000);
      const segs = await readTrack(stack.app.store, recordingId, 'pt-agent');
      // About 3 s of the agent's voice (0 ms before the fix: the SFU dropped every packet of PT 111).
      expect(segs.reduce((a, s) => a + s.meta.durationMs, 0)).toBeGreaterThan(2500);
    } finally {
      sender.stop();
    }
  });
});
