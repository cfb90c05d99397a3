/**
 * SIPREC through the recorder, the two mid-call changes an SBC sends by re-INVITE (issue 15):
 *
 * - hold: a re-INVITE marks the streams inactive (or re-offers them sendonly) and the SBC forwards
 *   nothing, then a re-INVITE resumes them and the RTP continues where it stopped (sequence and
 *   timestamp right after the last packet, as if no time had passed). The stored tracks must hold silence of the hold's
 *   wall-clock length, never time compression;
 * - a transfer to a second agent (below);
 * - a codec change of one stream by re-INVITE (PCMU -> PCMA): the track goes on in the new codec.
 *
 * Real control plane on PostgreSQL, real S3 store; the stored tracks are read back, decrypted,
 * decoded and judged by their tones (agent 440 Hz, customer 660 Hz, second agent 523 Hz).
 */
import { describe, expect, it } from 'vitest';
import { useStack } from '../../support/stack.ts';
import { SipUac, type UacDialog } from '../../support/sipUac.ts';
import { SIPREC_HEADERS, sdpOffer, siprecBody, transferBody, twoPartyMetadata } from '../../support/siprecFixtures.ts';
import { paceTone, type PacedTone } from '../../support/rtpTone.ts';
import { rmsDb, toneAdvantageDb } from '../../support/audio.ts';
import { mediaPrefix } from '../../../src/storage/layout.ts';
import { readTrack } from '../../support/storageFixtures.ts';
import { answerPorts, decodeTrack, expectRecordingEnded, pid, reportsOf, sleep, wallRange } from '../../support/siprecRecording.ts';

const AGENT = { id: 'cGFydGljaXBhbnQx', aor: 'sip:4001@pbx.example.com' };
const CUSTOMER = { id: 'cGFydGljaXBhbnQy', aor: 'sip:+46701234567@sbc.example.com' };
const AGENT_B = { id: 'cGFydGljaXBhbnQz', aor: 'sip:4002@pbx.example.com' };

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

function twoStreamOffer(version: number, direction: 'sendonly' | 'inactive' = 'sendonly', customerPayloads: readonly number[] = [0]): { body: string; contentType: string } {
  const md = twoPartyMetadata(CUSTOMER, AGENT);
  return siprecBody(
    sdpOffer(
      [
        { port: 40002, label: '1', direction, payloads: customerPayloads },
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

/**
 * A consented two-stream SIPREC call being recorded: the control plane knows agent A and the
 * customer (who has consented), the SBC's INVITE is answered and both tones flow (customer 660 Hz,
 * A 440 Hz) until the gate has opened. The caller closes `uac`.
 */
async function recordedCall(prefix: string): Promise<{
  callId: string;
  ids: { agentA: string; customer: string; agentB: string };
  reports: ReturnType<typeof reportsOf>;
  uac: SipUac;
  dialog: UacDialog;
  ports: { customer: number; agentA: number };
  tones: { customer: PacedTone; agentA: PacedTone };
  opened: { at: number; recordingId: string };
}> {
  const callId = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  const ids = { agentA: pid(AGENT.aor), customer: pid(CUSTOMER.aor), agentB: pid(AGENT_B.aor) };
  await stack.policy.startCall(callId, [
    { participantId: ids.agentA, role: 'agent', subjectId: 'agent-th1', teamLeadId: 'lead-th1' },
    { participantId: ids.customer, role: 'customer', subjectId: `cust-${prefix}` },
  ]);
  await stack.policy.grantConsent(callId, ids.customer, { ...EVIDENCE, at: Date.now() });
  const reports = reportsOf(stack, callId);
  const uac = await SipUac.open('udp', { host: '127.0.0.1', port: stack.app.siprec!.server.ports().udp! });
  try {
    const { response, dialog } = await uac.invite({ ...twoStreamOffer(1), headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', callId]] });
    expect(response.status).toBe(200);
    const [customer, agentA] = answerPorts(response.body.toString()) as [number, number];
    const tones = { customer: paceTone({ port: customer, freq: 660 }), agentA: paceTone({ port: agentA, freq: 440 }) };
    const opened = await waitFor('the gate opens', () => reports.find((r) => r.recording));
    return { callId, ids, reports, uac, dialog: dialog!, ports: { customer, agentA }, tones, opened: { at: opened.at, recordingId: opened.recordingId! } };
  } catch (err) {
    await uac.close();
    throw err;
  }
}

describe('SIPREC hold by re-INVITE, recorded', () => {
  // `inactive`: the hold as RFC 3264 §8.4 says it; `sendonly`: an SRC that re-offers the streams
  // unchanged and simply stops forwarding (its direction towards the SRS is always sendonly).
  it.each(['inactive', 'sendonly'] as const)('hold offered %s: silence of its wall-clock length in every track, the tone gone during the hold and back after it, the track as long as gate-open to BYE', async (holdDirection) => {
    const { ids, uac, dialog, ports, tones, opened } = await recordedCall('th');
    const senders = [tones.customer, tones.agentA];
    try {
      await sleep(2000);

      // Hold: the SBC stops forwarding and says so by re-INVITE (RFC 3264 §8.4: inactive).
      const holdAt = Date.now();
      for (const s of senders) s.pause();
      const hold = await dialog.reinvite(twoStreamOffer(2, holdDirection).body, twoStreamOffer(2).contentType);
      expect(hold.status).toBe(200);
      expect(hold.body.toString().match(holdDirection === 'inactive' ? /a=inactive/g : /a=recvonly/g)).toHaveLength(2);
      await sleep(3000);
      const resume = await dialog.reinvite(twoStreamOffer(3).body, twoStreamOffer(3).contentType);
      expect(resume.status).toBe(200);
      expect(answerPorts(resume.body.toString())).toEqual([ports.customer, ports.agentA]);
      const resumeAt = Date.now();
      for (const s of senders) s.resume();
      await sleep(2000);
      const endAt = Date.now();
      const bye = await dialog.bye();
      expect(bye.status).toBe(200);
      for (const s of senders) await s.stop();

      const recordingId = opened.recordingId;
      await expectRecordingEnded(stack, recordingId);
      await stack.app.store.drained(30_000);
      const measured: Record<string, unknown> = { gateOpenToByeMs: endAt - opened.at, holdMs: resumeAt - holdAt };
      for (const [participantId, own, other] of [
        [ids.agentA, 440, 660],
        [ids.customer, 660, 440],
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
      console.log(`hold (${holdDirection}) measured: ${JSON.stringify(measured)}`);
    } finally {
      await uac.close();
    }
  }, 60_000);
});


/**
 * A transfer as an SBC and the IVR report it: the control plane hears that agent B joined and
 * agent A left (one `participants.changed` fact), and the SBC sends a metadata re-INVITE that ends
 * A's stream (port 0, `disassociate-time`) and adds B's (a third m-line, label 3). Tones: customer
 * 660 Hz from the start, A 440 Hz until the transfer, B 523 Hz after it.
 */
async function transferredCall(agentB: { subjectId: string }): Promise<{
  callId: string;
  ids: { agentA: string; customer: string; agentB: string };
  openedAt: number;
  transferAt: number;
  endAt: number;
  recordingId: string;
  reports: ReturnType<typeof reportsOf>;
  bReceived: number;
}> {
  const { callId, ids, reports, uac, dialog, ports, tones, opened } = await recordedCall('tr');
  try {
    await sleep(2000);

    const transferAt = Date.now();
    await tones.agentA.stop();
    await stack.policy.changeParticipants(callId, {
      joined: [{ participantId: ids.agentB, role: 'agent', subjectId: agentB.subjectId, teamLeadId: 'lead-th2' }],
      left: [ids.agentA],
    });
    const body = transferBody(AGENT, AGENT_B);
    const res = await dialog.reinvite(body.body, body.contentType);
    expect(res.status).toBe(200);
    const after = answerPorts(res.body.toString());
    expect(after[0]).toBe(ports.customer);
    expect(after[1]).toBe(0);
    const agentBTone = paceTone({ port: after[2]!, freq: 523 });
    await sleep(2500);
    const bReceived = stack.app.recorder.calls.get(callId)?.tracks.get(ids.agentB)?.counters.received ?? 0;
    const endAt = Date.now();
    const bye = await dialog.bye();
    expect(bye.status).toBe(200);
    await tones.customer.stop();
    await agentBTone.stop();
    const recordingId = opened.recordingId;
    await expectRecordingEnded(stack, recordingId);
    await stack.app.store.drained(30_000);
    return { callId, ids, openedAt: opened.at, transferAt, endAt, recordingId, reports, bReceived };
  } finally {
    await uac.close();
  }
}

/** Seconds of a track and where it ends on the wall clock. */
const spanOf = (t: { pcm: Float32Array; startWallClockMs: number }): { seconds: number; endWallClockMs: number } => ({
  seconds: t.pcm.length / 48000,
  endWallClockMs: t.startWallClockMs + (t.pcm.length / 48000) * 1000,
});

describe('SIPREC transfer to a second agent, recorded (the gate follows the agents in the call now)', () => {
  it('the new agent inside a training window: a third track with their own voice; the customer recorded throughout, the first agent until they left', async () => {
    await stack.policy.setSchedule('agent-th2', [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const r = await transferredCall({ subjectId: 'agent-th2' });
    // One recording, never interrupted: B's window holds as A's did.
    expect(r.reports.filter((x) => x.recording).map((x) => x.recordingId)).toEqual([r.recordingId]);
    // Not recording only once the session ended (BYE: R7 says `call-ended`).
    expect(r.reports.filter((x) => !x.recording && x.at > r.openedAt).map((x) => x.reasons)).toEqual([['call-ended']]);
    expect(r.reports.find((x) => !x.recording && x.at > r.openedAt)!.at).toBeGreaterThanOrEqual(r.endAt);
    const customer = await decodeTrack(stack, r.recordingId, r.ids.customer);
    const agentA = await decodeTrack(stack, r.recordingId, r.ids.agentA);
    const agentB = await decodeTrack(stack, r.recordingId, r.ids.agentB);
    const m = {
      gateOpenToByeMs: r.endAt - r.openedAt,
      gateOpenToTransferMs: r.transferAt - r.openedAt,
      customer: { ...spanOf(customer), own: toneAdvantageDb(customer.pcm.subarray(4800), 660, 440), vsB: toneAdvantageDb(customer.pcm.subarray(4800), 660, 523) },
      agentA: { ...spanOf(agentA), own: toneAdvantageDb(agentA.pcm.subarray(4800), 440, 660), vsB: toneAdvantageDb(agentA.pcm.subarray(4800), 440, 523) },
      agentB: { ...spanOf(agentB), startAfterTransferMs: agentB.startWallClockMs - r.transferAt, own: toneAdvantageDb(agentB.pcm.subarray(4800), 523, 660), vsA: toneAdvantageDb(agentB.pcm.subarray(4800), 523, 440) },
    };
    const why = JSON.stringify(m);
    console.log(`transfer inside a window measured: ${why}`);
    expect(Math.abs(m.customer.seconds - m.gateOpenToByeMs / 1000), why).toBeLessThan(0.3);
    expect(Math.abs(m.agentA.seconds - m.gateOpenToTransferMs / 1000), why).toBeLessThan(0.3);
    expect(m.agentB.startAfterTransferMs, why).toBeGreaterThanOrEqual(-20);
    expect(Math.abs(m.agentB.endWallClockMs - r.endAt), why).toBeLessThan(300);
    expect(m.agentB.seconds, why).toBeGreaterThan(2);
    for (const [own, other] of [
      [m.customer.own, m.customer.vsB],
      [m.agentA.own, m.agentA.vsB],
      [m.agentB.own, m.agentB.vsA],
    ]) {
      expect(own, why).toBeGreaterThan(40);
      expect(other, why).toBeGreaterThan(40);
    }
    // R6: the same recording admitted for B under B's own monthly cap, A counted once.
    const { rows } = await stack.control.cp.db.query<{ agent_id: string }>('SELECT agent_id FROM cap_admissions WHERE recording_id = $1 ORDER BY agent_id', [r.recordingId]);
    expect(rows.map((x) => x.agent_id)).toEqual(['agent-th1', 'agent-th2']);
    // Listed in the catalogue for the new agent (and so for their team lead, R10).
    const listed = await stack.policy.recording(r.recordingId);
    expect(JSON.stringify(listed.body)).toContain('agent-th2');
  }, 60_000);

  it('the new agent inside a window but at their monthly cap: the gate closes for the whole call at the transfer (cap-reached); nothing of the new agent is stored', async () => {
    await stack.policy.setSchedule('agent-th4', [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 0);
    const r = await transferredCall({ subjectId: 'agent-th4' });
    const closed = r.reports.find((x) => !x.recording && x.at > r.openedAt);
    expect(closed?.reasons).toEqual(['cap-reached']);
    expect(closed!.at).toBeGreaterThanOrEqual(r.transferAt);
    const customer = await decodeTrack(stack, r.recordingId, r.ids.customer);
    expect(Math.abs(customer.pcm.length / 48000 - (closed!.at - r.openedAt) / 1000)).toBeLessThan(0.3);
    await expect(readTrack(stack.app.store, r.recordingId, r.ids.agentB)).rejects.toThrow(/has no participant/);
    const { rows } = await stack.control.cp.db.query<{ agent_id: string }>('SELECT agent_id FROM cap_admissions WHERE recording_id = $1', [r.recordingId]);
    expect(rows.map((x) => x.agent_id)).toEqual(['agent-th1']);
  }, 60_000);

  it('the new agent outside every window: the gate closes for the whole call at the transfer (decideGate is per call); nothing of the new agent is stored', async () => {
    // A window later today: a schedule, but not now.
    await stack.policy.setSchedule('agent-th3', [{ start: Date.now() + 3_600_000, end: Date.now() + 7_200_000 }], 50);
    const r = await transferredCall({ subjectId: 'agent-th3' });
    const closed = r.reports.find((x) => !x.recording && x.at > r.openedAt);
    expect(closed?.reasons).toEqual(['outside-window']);
    expect(closed!.at).toBeGreaterThanOrEqual(r.transferAt);
    // B's stream was received (and dropped), not missing.
    expect(r.bReceived).toBeGreaterThan(50);
    const customer = await decodeTrack(stack, r.recordingId, r.ids.customer);
    const agentA = await decodeTrack(stack, r.recordingId, r.ids.agentA);
    const m = {
      gateOpenToTransferMs: r.transferAt - r.openedAt,
      gateOpenToCloseMs: closed!.at - r.openedAt,
      customer: { ...spanOf(customer), endAfterCloseMs: spanOf(customer).endWallClockMs - closed!.at, own: toneAdvantageDb(customer.pcm.subarray(4800), 660, 440) },
      agentA: { ...spanOf(agentA), endAfterCloseMs: spanOf(agentA).endWallClockMs - closed!.at, own: toneAdvantageDb(agentA.pcm.subarray(4800), 440, 660) },
    };
    const why = JSON.stringify(m);
    console.log(`transfer outside a window measured: ${why}`);
    // The customer's track follows the gate: recorded until the worker closed it, nothing after.
    expect(Math.abs(m.customer.seconds - m.gateOpenToCloseMs / 1000), why).toBeLessThan(0.3);
    expect(m.customer.endAfterCloseMs, why).toBeLessThan(100);
    // The first agent's until they left (their stream ended at the transfer, before the close).
    expect(Math.abs(m.agentA.seconds - m.gateOpenToTransferMs / 1000), why).toBeLessThan(0.3);
    expect(m.agentA.endAfterCloseMs, why).toBeLessThan(100);
    expect(m.customer.own, why).toBeGreaterThan(40);
    expect(m.agentA.own, why).toBeGreaterThan(40);
    // Nothing of B: not in the manifest, no object in the media bucket.
    await expect(readTrack(stack.app.store, r.recordingId, r.ids.agentB)).rejects.toThrow(/has no participant/);
    const bucket = `${stack.config.s3.bucketPrefix}${stack.config.s3.mediaBucket}`;
    const objects: string[] = [];
    for await (const o of stack.app.s3.listObjectsV2(bucket, mediaPrefix(r.recordingId), true)) objects.push((o as { name: string }).name);
    expect(objects.some((o) => o.includes(r.ids.agentB)), JSON.stringify(objects)).toBe(false);
  }, 60_000);
});

describe('SIPREC re-INVITE changing a stream\'s codec, recorded', () => {
  it('PCMU -> PCMA on the customer\'s stream: the customer\'s track goes on in the new codec (a new run, the same track), its tone on both sides of the switch', async () => {
    const { ids, uac, dialog, ports, tones, opened } = await recordedCall('cc');
    try {
      await sleep(2000);
      const switchAt = Date.now();
      await tones.customer.stop();
      const res = await dialog.reinvite(twoStreamOffer(2, 'sendonly', [8]).body, twoStreamOffer(2).contentType);
      expect(res.status).toBe(200);
      const answer = res.body.toString();
      expect(answer).toContain('a=rtpmap:8 PCMA/8000');
      expect(answerPorts(answer)).toEqual([ports.customer, ports.agentA]);
      const pcma = paceTone({ port: ports.customer, freq: 660, pt: 8 });
      const resumedAt = Date.now();
      await sleep(2000);
      const endAt = Date.now();
      expect((await dialog.bye()).status).toBe(200);
      await pcma.stop();
      await tones.agentA.stop();
      await expectRecordingEnded(stack, opened.recordingId);
      await stack.app.store.drained(30_000);
      const customer = await decodeTrack(stack, opened.recordingId, ids.customer);
      const before = wallRange(customer, opened.at + 200, switchAt - 200);
      const after = wallRange(customer, resumedAt + 300, endAt - 300);
      const m = {
        gateOpenToByeMs: endAt - opened.at,
        switchMs: resumedAt - switchAt,
        seconds: customer.pcm.length / 48000,
        segments: customer.segments,
        beforeDb: toneAdvantageDb(customer.pcm, 660, 440, 48000, ...before),
        afterDb: toneAdvantageDb(customer.pcm, 660, 440, 48000, ...after),
        afterLevelDb: rmsDb(customer.pcm, ...after),
      };
      const why = JSON.stringify(m);
      console.log(`codec change measured: ${why}`);
      // The whole call, less at most the switch itself (the new codec's run starts at its first packet).
      expect(Math.abs(m.seconds - m.gateOpenToByeMs / 1000), why).toBeLessThan(0.3);
      expect(m.segments, why).toBeGreaterThanOrEqual(2);
      expect(m.beforeDb, why).toBeGreaterThan(40);
      expect(m.afterDb, why).toBeGreaterThan(40);
      expect(m.afterLevelDb, why).toBeGreaterThan(-20);
    } finally {
      await uac.close();
    }
  }, 60_000);
});
