/**
 * Calls end (issue 19): `call.ended` on the policy stream ends the call in the recorder whatever
 * its legs (recording finalised, legs and room closed, admission freed), and so does the gateway
 * hanging up the call's last plain leg (`DELETE /calls/{callId}/plain-legs/{participantId}`).
 * With a ceiling of 4 streams, a thousand calls in sequence are all admitted and
 * `optin_calls_active` ends at 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorderHttp, type RecorderHttp } from '../../../src/app/recorderHttp.ts';
import { signCallToken } from '../../../src/callcontrol/callToken.ts';
import { sendRtp } from '../../../src/media/ffmpeg.ts';
import type { FfmpegRun } from '../../../src/media/ffmpeg.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { useStack } from '../../support/stack.ts';
import { freeUdpPortPair } from '../../support/udpPorts.ts';

const stack = useStack({ 'admission.maxStreams': 4 }, { agents: ['agent-end1'] });
let http: RecorderHttp;

beforeAll(async () => {
  http = await startRecorderHttp(stack.app, { host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await http?.close();
});

const legToken = (callId: string, participantId: string): string =>
  signCallToken(stack.config.callControl.sipLegSecret!, { aud: 'sip-leg', callId, participantId, lifetimeSeconds: 60 });

const participants = (callId: string) => [
  { participantId: `${callId}-a`, role: 'agent' as const, subjectId: 'agent-end1', teamLeadId: 'lead-end1' },
  { participantId: `${callId}-c`, role: 'customer' as const, subjectId: 'cust-end1' },
];

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${http.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

/** A recorded call with two real PCMU legs through call control (ffmpeg senders from the declared ports). */
async function recordedCall(callId: string): Promise<{ recordingId: string; senders: FfmpegRun[] }> {
  await stack.policy.startCall(callId, participants(callId));
  const senders: FfmpegRun[] = [];
  for (const [participantId, file, ssrc] of [
    [`${callId}-a`, 'agent-tone.wav', 0x4401],
    [`${callId}-c`, 'customer-tone.wav', 0x4402],
  ] as const) {
    const from = await freeUdpPortPair();
    const res = await fetch(`${http.url}/calls/${callId}/plain-legs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${legToken(callId, participantId)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ participantId, codec: 'pcmu', ssrc, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } }),
    });
    expect(res.status).toBe(201);
    const leg = (await res.json()) as { ip: string; rtpPort: number; rtcpPort: number };
    senders.push(sendRtp({ file: fixturePath(file), codec: 'pcmu', ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc, seconds: 30, localRtpPort: from.rtpPort, localRtcpPort: from.rtcpPort }));
  }
  await stack.policy.grantConsent(callId, `${callId}-c`, { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
  const call = () => stack.app.recorder.calls.get(callId);
  await expect.poll(() => [...(call()?.tracks.values() ?? [])].filter((t) => t.counters.written > 0).length, { timeout: 15_000 }).toBe(2);
  return { recordingId: call()!.recordingId!, senders };
}

/** The control plane's record of the call's last R7 report. */
async function lastR7(callId: string): Promise<{ recording: boolean; reasons: string[] } | undefined> {
  const { rows } = await stack.control.cp.db.query<{ recording: boolean; reasons: string[] }>('SELECT recording, reasons FROM call_recording_states WHERE call_id = $1', [callId]);
  return rows[0];
}

async function expectFinalised(recordingId: string, endedBy: number): Promise<void> {
  // The call leaves the recorder's table first; its manifest is final a moment later.
  await expect.poll(async () => (await stack.app.store.getManifest(recordingId)).state, { timeout: 10_000 }).toBe('ended');
  const manifest = await stack.app.store.getManifest(recordingId);
  expect(manifest.endedAtMs).toBeGreaterThanOrEqual(endedBy);
  // Both tracks' audio is in the store, sealed.
  expect(new Set(manifest.segments.map((s) => s.participantId)).size).toBe(2);
}

describe('a call ends', () => {
  it('on call.ended: recording finalised, room and legs closed, admission freed', async () => {
    const callId = 'call-end-fact';
    const { recordingId, senders } = await recordedCall(callId);
    const room = stack.app.recorder.calls.get(callId)!.room!;
    try {
      const endedAt = Date.now();
      await stack.policy.endCall(callId);
      await expect.poll(() => stack.app.recorder.calls.has(callId), { timeout: 10_000 }).toBe(false);
      expect(room.closed).toBe(true);
      await stack.app.store.drained(20_000);
      await expectFinalised(recordingId, endedAt);
      expect(stack.app.recorder.streams).toBe(0);
      await expect.poll(() => lastR7(callId), { timeout: 10_000 }).toEqual({ recording: false, reasons: ['call-ended'] });
    } finally {
      for (const s of senders) s.stop();
    }
  });

  it('when the gateway hangs up its last plain leg (DELETE, with a sip-leg token)', async () => {
    const callId = 'call-end-legs';
    const { recordingId, senders } = await recordedCall(callId);
    const hangUp = (participantId: string, token = legToken(callId, participantId)) =>
      fetch(`${http.url}/calls/${callId}/plain-legs/${participantId}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    try {
      // Authorised like the create route: no token, or one for another participant, is refused.
      expect((await fetch(`${http.url}/calls/${callId}/plain-legs/${callId}-a`, { method: 'DELETE' })).status).toBe(401);
      const wrong = await hangUp(`${callId}-a`, legToken(callId, `${callId}-c`));
      expect(wrong.status).toBe(401);
      expect(((await wrong.json()) as { reason: string }).reason).toBe('wrong-participant');
      expect(stack.app.recorder.calls.get(callId)!.room!.legs).toHaveLength(2);

      const first = await hangUp(`${callId}-a`);
      expect(first.status).toBe(200);
      expect(await first.json()).toEqual({ callEnded: false });
      expect(stack.app.recorder.calls.get(callId)!.room!.legs.map((l) => l.participantId)).toEqual([`${callId}-c`]);
      expect((await hangUp(`${callId}-a`)).status).toBe(404);

      const endedAt = Date.now();
      const last = await hangUp(`${callId}-c`);
      expect(last.status).toBe(200);
      expect(await last.json()).toEqual({ callEnded: true });
      expect(stack.app.recorder.calls.has(callId)).toBe(false);
      await stack.app.store.drained(20_000);
      await expectFinalised(recordingId, endedAt);
      // R7's last word reaches the control plane, which had no call.ended fact for this call.
      await expect.poll(() => lastR7(callId), { timeout: 10_000 }).toEqual({ recording: false, reasons: ['call-ended'] });
    } finally {
      for (const s of senders) s.stop();
    }
  });

  it('a thousand calls started and ended in sequence leave optin_calls_active at 0 and admission unaffected', async () => {
    const rejectedBefore = await metric('optin_admission_rejections_total');
    const t0 = Date.now();
    for (let i = 0; i < 1000; i++) {
      const callId = `call-bulk-${i}`;
      await stack.policy.startCall(callId, participants(callId));
      await stack.app.openCall(callId);
      // Not overloaded: every earlier call gave back its streams (ceiling 4, 2 per call).
      if (stack.app.recorder.calls.get(callId)!.gate.reasons.includes('overloaded')) throw new Error(`call ${i} refused as overloaded`);
      await stack.policy.endCall(callId);
      await expect.poll(() => stack.app.recorder.calls.has(callId), { timeout: 5000, interval: 5 }).toBe(false);
    }
    console.log(`1000 calls started and ended through the control plane in ${Date.now() - t0} ms`);
    expect(await metric('optin_calls_active')).toBe(0);
    expect(await metric('optin_admission_rejections_total')).toBe(rejectedBefore);
    expect(stack.app.recorder.streams).toBe(0);
    // And a call after them is recorded.
    const { recordingId, senders } = await recordedCall('call-after-bulk');
    for (const s of senders) s.stop();
    await stack.policy.endCall('call-after-bulk');
    await expect.poll(() => stack.app.recorder.calls.has('call-after-bulk'), { timeout: 10_000 }).toBe(false);
    await stack.app.store.drained(20_000);
    await expectFinalised(recordingId, t0);
  }, 180_000);
});
