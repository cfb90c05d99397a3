/**
 * SIPREC through the recorder, the two mid-call changes an SBC sends by re-INVITE (issue 15):
 *
 * - hold: a re-INVITE marks the streams inactive and the SBC forwards nothing, then a re-INVITE
 *   resumes them and the RTP continues where it stopped (sequence and timestamp right after the
 *   last packet, as if no time had passed). The stored tracks must hold silence of the hold's
 *   wall-clock length, never time compression;
 * - a transfer to a second agent (below).
 *
 * Real control plane on PostgreSQL, real S3 store; the stored tracks are read back, decrypted,
 * decoded and judged by their tones (agent 440 Hz, customer 660 Hz, second agent 523 Hz).
 */
import { describe, expect, it } from 'vitest';
import { useStack } from '../../support/stack.ts';
import { SipUac } from '../../support/sipUac.ts';
import { SIPREC_HEADERS, rsMetadata, sdpOffer, siprecBody } from '../../support/siprecFixtures.ts';
import { paceTone } from '../../support/rtpTone.ts';
import { rmsDb, toneAdvantageDb } from '../../support/audio.ts';
import { answerPorts, decodeTrack, expectRecordingEnded, pid, reportsOf, sleep, wallRange } from '../../support/siprecRecording.ts';

const AGENT = { id: 'cGFydGljaXBhbnQx', aor: 'sip:4001@pbx.example.com' };
const CUSTOMER = { id: 'cGFydGljaXBhbnQy', aor: 'sip:+46701234567@sbc.example.com' };

const mediaBase = 43000 + Math.floor(Math.random() * 100) * 20;
const stack = useStack(
  {
    'siprec.enabled': true,
    'siprec.udpPort': 0,
    'siprec.tcpPort': null,
    'siprec.media': { portMin: mediaBase, portMax: mediaBase + 19 },
  },
  { agents: ['agent-th1'] },
);

const EVIDENCE = { method: 'dtmf' as const, infoVersion: 'training-notice-v1' };

function twoStreamOffer(version: number, direction: 'sendonly' | 'inactive' = 'sendonly'): { body: string; contentType: string } {
  const md = rsMetadata({
    participants: [
      { ...CUSTOMER, sends: ['c3RyZWFtMQ=='], recvs: ['c3RyZWFtMg=='] },
      { ...AGENT, sends: ['c3RyZWFtMg=='], recvs: ['c3RyZWFtMQ=='] },
    ],
    streams: [
      { id: 'c3RyZWFtMQ==', label: '1' },
      { id: 'c3RyZWFtMg==', label: '2' },
    ],
  });
  return siprecBody(
    sdpOffer(
      [
        { port: 40002, label: '1', direction },
        { port: 40004, label: '2', direction },
      ],
      { version },
    ),
    md,
  );
}

async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(20);
  }
}

describe('SIPREC hold by re-INVITE, recorded', () => {
  it('a hold is silence of its wall-clock length in every track: the tone stops for the hold and comes back, the track as long as gate-open to BYE', async () => {
    const siprec = stack.app.siprec!;
    const callId = `th-${Math.random().toString(36).slice(2, 10)}`;
    const agentId = pid(AGENT.aor);
    const customerId = pid(CUSTOMER.aor);
    await stack.policy.startCall(callId, [
      { participantId: agentId, role: 'agent', subjectId: 'agent-th1', teamLeadId: 'lead-th1' },
      { participantId: customerId, role: 'customer', subjectId: 'cust-th1' },
    ]);
    await stack.policy.grantConsent(callId, customerId, { ...EVIDENCE, at: Date.now() });
    const reports = reportsOf(stack, callId);
    const uac = await SipUac.open('udp', { host: '127.0.0.1', port: siprec.server.ports().udp! });
    try {
      const offer = twoStreamOffer(1);
      const { response, dialog } = await uac.invite({ ...offer, headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', callId]] });
      expect(response.status).toBe(200);
      const [customerPort, agentPort] = answerPorts(response.body.toString());
      const senders = [paceTone({ port: customerPort!, freq: 660 }), paceTone({ port: agentPort!, freq: 440 })];
      const opened = await waitFor('the gate opens', () => reports.find((r) => r.recording));
      await sleep(2000);

      // Hold: the SBC stops forwarding and says so by re-INVITE (RFC 3264 §8.4: inactive).
      const holdAt = Date.now();
      for (const s of senders) s.pause();
      const hold = await dialog!.reinvite(twoStreamOffer(2, 'inactive').body, twoStreamOffer(2).contentType);
      expect(hold.status).toBe(200);
      expect(hold.body.toString().match(/a=inactive/g)).toHaveLength(2);
      await sleep(3000);
      const resume = await dialog!.reinvite(twoStreamOffer(3).body, twoStreamOffer(3).contentType);
      expect(resume.status).toBe(200);
      expect(answerPorts(resume.body.toString())).toEqual([customerPort, agentPort]);
      const resumeAt = Date.now();
      for (const s of senders) s.resume();
      await sleep(2000);
      const endAt = Date.now();
      const bye = await dialog!.bye();
      expect(bye.status).toBe(200);
      for (const s of senders) await s.stop();

      const recordingId = opened.recordingId!;
      await expectRecordingEnded(stack, recordingId);
      await stack.app.store.drained(30_000);
      const measured: Record<string, unknown> = { gateOpenToByeMs: endAt - opened.at, holdMs: resumeAt - holdAt };
      for (const [participantId, own, other] of [
        [agentId, 440, 660],
        [customerId, 660, 440],
      ] as const) {
        const track = await decodeTrack(stack, recordingId, participantId);
        const seconds = track.pcm.length / 48000;
        const before = wallRange(track, opened.at + 200, holdAt - 200);
        const during = wallRange(track, holdAt + 150, resumeAt - 150);
        const after = wallRange(track, resumeAt + 300, endAt - 300);
        const m = {
          seconds,
          startOffsetMs: track.startWallClockMs - opened.at,
          beforeDb: rmsDb(track.pcm, ...before),
          duringDb: rmsDb(track.pcm, ...during),
          afterDb: rmsDb(track.pcm, ...after),
          beforeAdvantageDb: toneAdvantageDb(track.pcm, own, other, 48000, ...before),
          afterAdvantageDb: toneAdvantageDb(track.pcm, own, other, 48000, ...after),
        };
        measured[own] = m;
        const why = JSON.stringify(measured);
        // Never compressed: from the gate's opening to the BYE, within the jitter buffer's and the
        // segment anchor's few tens of ms (the hold alone is 3 s).
        expect(Math.abs(seconds - (endAt - opened.at) / 1000), why).toBeLessThan(0.3);
        expect(during[1] - during[0], why).toBeGreaterThan(2.5 * 48000);
        // The tone around the hold, silence during it.
        expect(m.beforeDb, why).toBeGreaterThan(-20);
        expect(m.afterDb, why).toBeGreaterThan(-20);
        expect(m.duringDb, why).toBeLessThan(m.beforeDb - 40);
        expect(m.beforeAdvantageDb, why).toBeGreaterThan(40);
        expect(m.afterAdvantageDb, why).toBeGreaterThan(40);
      }
      console.log(`hold measured: ${JSON.stringify(measured)}`);
    } finally {
      await uac.close();
    }
  }, 60_000);
});
