/**
 * SIPREC into the recorder, end to end: our SIPREC client (an SBC's fork: two streams and
 * RFC 7865 metadata) opens a session with a recorder worker whose SIPREC front door is enabled;
 * the control plane knows the call and its participants (the mapped ids); the customer consents
 * mid-call through the ingest API; BYE ends it. The stored tracks are read back, decrypted and
 * decoded: one per speaker, each holding its own tone with the other far below, nothing from
 * before the consent, nothing of a speaker the control plane does not know.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertBaresip, baresipCall } from '../../support/baresip.ts';
import { decodeToPcm } from '../../../src/media/ffmpeg.ts';
import { joinOggOpus } from '../../../src/media/OggOpusReader.ts';
import { mediaPrefix } from '../../../src/storage/layout.ts';
import { openingEarlyBoundMs, useStack } from '../../support/stack.ts';
import { readTrack } from '../../support/storageFixtures.ts';
import { SipUac } from '../../support/sipUac.ts';
import { SIPREC_HEADERS, rsMetadata, sdpOffer, siprecBody } from '../../support/siprecFixtures.ts';
import { paceTone } from '../../support/rtpTone.ts';
import { toneAdvantageDb } from '../../support/audio.ts';
import { answerPorts, expectRecordingEnded, pid, reportsOf as reportsOfStack, sleep } from '../../support/siprecRecording.ts';

const AGENT = { id: 'cGFydGljaXBhbnQx', aor: 'sip:4001@pbx.example.com' };
const CUSTOMER = { id: 'cGFydGljaXBhbnQy', aor: 'sip:+46701234567@sbc.example.com' };
const STRANGER = { id: 'cGFydGljaXBhbnQz', aor: 'sip:4999@pbx.example.com' };

const mediaBase = 41000 + Math.floor(Math.random() * 100) * 20;
const stack = useStack(
  {
    'siprec.enabled': true,
    'siprec.udpPort': 0,
    'siprec.tcpPort': null,
    'siprec.media': { portMin: mediaBase, portMax: mediaBase + 19 },
  },
  { agents: ['agent-sr1'] },
);

const reportsOf = (callId: string) => reportsOfStack(stack, callId);

describe('SIPREC session recorded through the gate', () => {
  it('records one track per known speaker, from the consent on; a speaker the control plane does not know is never kept', async () => {
    const siprec = stack.app.siprec;
    expect(siprec, 'siprec.enabled must start the front door').toBeDefined();
    const callId = `sr-${Math.random().toString(36).slice(2, 10)}`;
    const agentId = pid(AGENT.aor);
    const customerId = pid(CUSTOMER.aor);
    await stack.policy.startCall(callId, [
      { participantId: agentId, role: 'agent', subjectId: 'agent-sr1', teamLeadId: 'lead-sr1' },
      { participantId: customerId, role: 'customer', subjectId: 'cust-sr1' },
    ]);
    const reports = reportsOf(callId);
    const md = rsMetadata({
      participants: [
        { ...CUSTOMER, sends: ['c3RyZWFtMQ=='] },
        { ...AGENT, sends: ['c3RyZWFtMg=='] },
        { ...STRANGER, sends: ['c3RyZWFtMw=='] },
      ],
      streams: [
        { id: 'c3RyZWFtMQ==', label: '1' },
        { id: 'c3RyZWFtMg==', label: '2' },
        { id: 'c3RyZWFtMw==', label: '3' },
      ],
    });
    const offer = siprecBody(
      sdpOffer([
        { port: 40002, label: '1' },
        { port: 40004, label: '2' },
        { port: 40006, label: '3' },
      ]),
      md,
    );
    const uac = await SipUac.open('udp', { host: '127.0.0.1', port: siprec!.server.ports().udp! });
    try {
      const { response, dialog } = await uac.invite({ ...offer, headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', callId]] });
      expect(response.status).toBe(200);
      const [customerPort, agentPort, strangerPort] = answerPorts(response.body.toString());
      const senders = [
        paceTone({ port: customerPort!, freq: 660 }),
        paceTone({ port: agentPort!, freq: 440 }),
        paceTone({ port: strangerPort!, freq: 1000 }),
      ];
      await sleep(2000);
      expect(reports.every((r) => !r.recording)).toBe(true);
      const consentAt = Date.now();
      await stack.policy.grantConsent(callId, customerId, { method: 'dtmf', at: consentAt, infoVersion: 'training-notice-v1' });
      await sleep(4000);
      const endAt = Date.now();
      const bye = await dialog!.bye();
      for (const s of senders) await s.stop();
      expect(bye.status).toBe(200);
      const opened = reports.find((r) => r.recording);
      expect(opened?.recordingId).toMatch(/^r_[0-9a-f]{16}$/);
      expect(opened!.at).toBeGreaterThanOrEqual(consentAt - 5);
      const recordingId = opened!.recordingId!;
      // The call ends with its last stream: the recorder seals it and writes the final manifest.
      await expectRecordingEnded(stack, recordingId);
      expect(stack.app.recorder.calls.has(callId)).toBe(false);
      await stack.app.store.drained(30_000);
      const agent = await readTrack(stack.app.store, recordingId, agentId);
      const customer = await readTrack(stack.app.store, recordingId, customerId);
      expect(agent.length).toBeGreaterThanOrEqual(1);
      expect(customer.length).toBeGreaterThanOrEqual(1);
      // The stranger's stream was received but never kept: not in the manifest, no object stored.
      await expect(readTrack(stack.app.store, recordingId, pid(STRANGER.aor))).rejects.toThrow(/has no participant/);
      const bucket = `${stack.config.s3.bucketPrefix}${stack.config.s3.mediaBucket}`;
      const objects: string[] = [];
      for await (const o of stack.app.s3.listObjectsV2(bucket, mediaPrefix(recordingId), true)) objects.push((o as { name: string }).name);
      expect(objects, JSON.stringify({ objects, agent: agent.map((s) => s.meta.segment), customer: customer.map((s) => s.meta.segment) })).toHaveLength(agent.length + customer.length);

      for (const [segs, own, other] of [
        [agent, 440, 660],
        [customer, 660, 440],
      ] as const) {
        // Nothing before the consent, within one packet and the threads' longest stall (106 ms
        // over a bare 20 ms in a full .ci/run here).
        expect(segs[0]!.meta.startWallClockMs).toBeGreaterThanOrEqual(consentAt - openingEarlyBoundMs(stack));
        const { pcm, stderr } = await decodeToPcm(joinOggOpus(segs.map((s) => s.ogg)));
        expect(stderr.trim()).toBe('');
        const seconds = pcm.length / 48000;
        // From the worker's own opening (its R7 report; the consent reaches it through the control
        // plane a little later under load) to the BYE: everything, and never more than consent to BYE.
        expect(seconds).toBeGreaterThan((endAt - opened!.at) / 1000 - 0.3);
        expect(seconds).toBeLessThan((endAt - consentAt) / 1000 + 0.3);
        // Skip the first 100 ms (encoder start-up): each track holds its own speaker.
        expect(toneAdvantageDb(pcm.subarray(4800), own, other)).toBeGreaterThan(40);
        expect(toneAdvantageDb(pcm.subarray(4800), own, 1000)).toBeGreaterThan(40);
      }
    } finally {
      await uac.close();
    }
  }, 60_000);
});

describe('a plain SIP recording leg from a SIP user agent nobody here wrote (Debian baresip)', () => {
  it.each(['PCMU', 'opus'] as const)('%s: the recorded track holds its 440 Hz tone and starts only after the consent', async (codec) => {
    assertBaresip();
    const siprec = stack.app.siprec!;
    const callId = `bs-${codec.toLowerCase()}-${Math.random().toString(36).slice(2, 8)}`;
    await stack.policy.startCall(callId, [
      { participantId: 'bs-agent', role: 'agent', subjectId: 'agent-sr1', teamLeadId: 'lead-sr1' },
      { participantId: 'bs-cust', role: 'customer', subjectId: 'cust-sr2' },
    ]);
    const reports = reportsOf(callId);
    const dir = mkdtempSync(path.join(tmpdir(), 'optin-baresip-rec-'));
    try {
      // The PBX forks the agent's leg by calling the recording URI (the default plain-leg rule).
      const uri = `sip:rec.${callId}.bs-agent@127.0.0.1:${siprec.server.ports().udp!}`;
      const call = baresipCall({ dir, codec, uri, seconds: 7, transport: 'udp' });
      // Consent once the leg's media flows (baresip takes a moment to start and dial).
      for (let i = 0; i < 100 && !stack.app.recorder.calls.get(callId)?.tracks.get('bs-agent')?.counters.received; i++) await sleep(50);
      await sleep(1000);
      expect(reports.every((r) => !r.recording)).toBe(true);
      const consentAt = Date.now();
      await stack.policy.grantConsent(callId, 'bs-cust', { method: 'dtmf', at: consentAt, infoVersion: 'training-notice-v1' });
      const out = await call;
      expect(out).toContain('Call established');
      const opened = reports.find((r) => r.recording);
      expect(opened?.recordingId).toBeDefined();
      const recordingId = opened!.recordingId!;
      await expectRecordingEnded(stack, recordingId);
      const segs = await readTrack(stack.app.store, recordingId, 'bs-agent');
      expect(segs.length).toBeGreaterThanOrEqual(1);
      expect(segs[0]!.meta.startWallClockMs).toBeGreaterThanOrEqual(consentAt - 20);
      const { pcm, stderr } = await decodeToPcm(joinOggOpus(segs.map((s) => s.ogg)));
      expect(stderr.trim()).toBe('');
      expect(pcm.length / 48000).toBeGreaterThan(1);
      expect(toneAdvantageDb(pcm.subarray(4800), 440, 660)).toBeGreaterThan(30);
      expect(toneAdvantageDb(pcm.subarray(4800), 440, 1000)).toBeGreaterThan(30);
      // The customer's side had no stream: no track.
      await expect(readTrack(stack.app.store, recordingId, 'bs-cust')).resolves.toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
