/**
 * The recording server against our SIPREC client over real sockets: two streams with metadata,
 * CANCEL before the answer, a lost ACK, hold by re-INVITE, a transfer to a second agent (a third
 * track), BYE, admission (503 + Retry-After) and OPTIONS readiness, over UDP and TCP.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { RecordingServer } from '../../../src/siprec/RecordingServer.ts';
import { UdpMediaPlane } from '../../../src/siprec/UdpMediaPlane.ts';
import type { MediaPlane, OpenStreamRequest, ReceiveStream } from '../../../src/siprec/MediaPlane.ts';
import { SipUac, type UacTransport } from '../../support/sipUac.ts';
import {
  CollectingSink,
  SIPREC_HEADERS,
  decodeG711Packets,
  rsMetadata,
  sdpOffer,
  sendTone,
  siprecBody,
  testSiprecConfig,
  toneAdvantage8k,
  transferBody,
  twoPartyMetadata,
} from '../../support/siprecFixtures.ts';
import { toId } from '../../../src/siprec/mapping.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const AGENT = { id: 'cGFydGljaXBhbnQx', aor: 'sip:4001@pbx.example.com', name: 'Agent A' };
const CUSTOMER = { id: 'cGFydGljaXBhbnQy', aor: 'sip:+46701234567@sbc.example.com', name: 'Customer' };
const AGENT_B = { id: 'cGFydGljaXBhbnQz', aor: 'sip:4002@pbx.example.com', name: 'Agent B' };

/** Participant ids under the default rule (aor-user, sha256, prefix p-). */
const pid = (aor: string) => toId(/^sip:([^@]+)@/.exec(aor)![1]!, { transform: 'sha256', prefix: 'p-' })!;

function audioPorts(sdp: string): { port: number; direction: string | undefined; label: string | undefined }[] {
  const out: { port: number; direction: string | undefined; label: string | undefined }[] = [];
  for (const block of sdp.split(/\r\n(?=m=)/).slice(1)) {
    const port = Number(/^m=\w+ (\d+)/.exec(block)![1]);
    out.push({ port, direction: /a=(recvonly|inactive|sendonly|sendrecv)/.exec(block)?.[1], label: /a=label:(\S+)/.exec(block)?.[1] });
  }
  return out;
}

let ready = true;
const sink = new CollectingSink();
let media: UdpMediaPlane;
let srs: RecordingServer;
const registry = new Registry();
const config = testSiprecConfig({ mediaTimeoutSeconds: 0, holdTimeoutSeconds: 0 });

beforeAll(async () => {
  media = new UdpMediaPlane({ bindAddress: '127.0.0.1', portMin: config.media.portMin, portMax: config.media.portMax, maxStreams: 6, retryAfterSeconds: 7, isReady: () => ready, sink });
  srs = new RecordingServer(config, { media, registry });
  await srs.listen();
});

afterAll(async () => {
  await srs.close();
  await media.close();
});

afterEach(() => {
  ready = true;
});

function server(transport: UacTransport) {
  const p = srs.ports();
  return { host: '127.0.0.1', port: transport === 'udp' ? p.udp! : p.tcp! };
}

function twoStreamOffer(headers: readonly (readonly [string, string])[] = []) {
  const md = twoPartyMetadata(CUSTOMER, AGENT);
  const sdp = sdpOffer([
    { port: 40002, label: '1' },
    { port: 40004, label: '2' },
  ]);
  return { ...siprecBody(sdp, md), headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', `call-${Math.random().toString(36).slice(2, 10)}`], ...headers] as [string, string][] };
}

describe.each(['udp', 'tcp'] as const)('SIPREC over %s', (transport) => {
  it('records two streams, each under its own participant, each holding its own tone', async () => {
    const uac = await SipUac.open(transport, server(transport));
    const offer = twoStreamOffer();
    const callId = offer.headers.find(([n]) => n === 'X-Optin-Call-Id')![1];
    const t0 = performance.now();
    const { response, dialog } = await uac.invite(offer);
    const latency = performance.now() - t0;
    expect(response.status).toBe(200);
    expect(response.headers.get('contact')).toContain('+sip.srs');
    const lines = audioPorts(response.body.toString());
    expect(lines.map((l) => l.direction)).toEqual(['recvonly', 'recvonly']);
    expect(lines.map((l) => l.label)).toEqual(['1', '2']);
    // Customer on line 1 at 660 Hz, agent on line 2 at 440 Hz.
    await Promise.all([sendTone({ port: lines[0]!.port, freq: 660, packets: 50 }), sendTone({ port: lines[1]!.port, freq: 440, packets: 50 })]);
    const customer = pid(CUSTOMER.aor);
    const agent = pid(AGENT.aor);
    await sink.waitFor(() => sink.count(callId, customer) >= 50 && sink.count(callId, agent) >= 50);
    const cust = decodeG711Packets(sink.streams.get(`${callId}/${customer}`)!.packets);
    const ag = decodeG711Packets(sink.streams.get(`${callId}/${agent}`)!.packets);
    expect(toneAdvantage8k(cust, 660, 440)).toBeGreaterThan(40);
    expect(toneAdvantage8k(ag, 440, 660)).toBeGreaterThan(40);
    const bye = await dialog!.bye();
    expect(bye.status).toBe(200);
    expect(srs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
    console.log(`[siprec ${transport}] INVITE->200 ${latency.toFixed(1)} ms (loopback, client-measured)`);
    await uac.close();
  });
});

describe('TLS and privacy', () => {
  it('answers over TLS and logs no AoR, number or display name', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'optin-sip-tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    const lines: string[] = [];
    const logger = createLogger('debug', { write: (s: string) => void lines.push(s) });
    const tlsSrs = new RecordingServer(testSiprecConfig({ udpPort: null, tcpPort: null, tlsPort: 0, tls: { keyFile: path.join(dir, 'key.pem'), certFile: path.join(dir, 'cert.pem') } }), { media, logger });
    await tlsSrs.listen();
    const uac = await SipUac.open('tls', { host: '127.0.0.1', port: tlsSrs.ports().tls! });
    const { response, dialog } = await uac.invite(twoStreamOffer());
    expect(response.status).toBe(200);
    expect(response.headers.get('contact')).toContain('transport=tls');
    await dialog!.bye();
    const bad = await uac.invite({ ...siprecBody(sdpOffer([{ port: 4000, label: '1' }]), '<recording><participant>'), headers: SIPREC_HEADERS });
    expect(bad.response.status).toBe(400);
    await tlsSrs.close();
    await uac.close();
    rmSync(dir, { recursive: true, force: true });
    const log = lines.join('');
    expect(log).toContain('recording session answered');
    for (const personal of ['4001', '46701234567', 'Agent A', 'Customer', 'pbx.example.com', 'src.test']) expect(log).not.toContain(personal);
  });
});

describe('SIPREC dialogs', () => {
  it('a CANCEL before the answer gets 200, the INVITE 487, and nothing stays open', async () => {
    // A media plane slow to open sockets keeps the INVITE unanswered long enough to cancel it.
    const slow: MediaPlane = {
      admit: (n) => media.admit(n),
      ready: () => media.ready(),
      open: async (req: OpenStreamRequest): Promise<ReceiveStream> => {
        await new Promise((r) => setTimeout(r, 300));
        return media.open(req);
      },
      close: () => Promise.resolve(),
    };
    const slowSrs = new RecordingServer(testSiprecConfig({ tcpPort: null }), { media: slow });
    await slowSrs.listen();
    const uac = await SipUac.open('udp', { host: '127.0.0.1', port: slowSrs.ports().udp! });
    const offer = twoStreamOffer();
    const invite = uac.build({ method: 'INVITE', callId: 'cancel-1@src', fromTag: 'f1', cseq: 1, headers: offer.headers, body: offer.body, contentType: offer.contentType });
    const final = uac.request(invite);
    await uac.waitFor((m) => m.kind === 'response' && m.status === 100);
    const cancel = uac.build({ method: 'CANCEL', callId: 'cancel-1@src', fromTag: 'f1', cseq: 1, branch: /branch=([^;]+)/.exec(invite.headers.get('via')!)![1]! });
    const cancelRes = await uac.request(cancel);
    expect(cancelRes.status).toBe(200);
    const res = await final;
    expect(res.status).toBe(487);
    uac.ackFailure(invite, res);
    await new Promise((r) => setTimeout(r, 500));
    expect(slowSrs.sip.dialogCount).toBe(0);
    expect(slowSrs.sip.pendingInviteCount).toBe(0);
    expect(media.streamCount).toBe(0);
    await slowSrs.close();
    await uac.close();
  });

  it('a handler slower than handlerTimeoutMs gets 500, and the late session is closed, not leaked', async () => {
    const slow: MediaPlane = {
      admit: (n) => media.admit(n),
      ready: () => media.ready(),
      open: async (req: OpenStreamRequest): Promise<ReceiveStream> => {
        await new Promise((r) => setTimeout(r, 250));
        return media.open(req);
      },
      close: () => Promise.resolve(),
    };
    const slowSrs = new RecordingServer(testSiprecConfig({ tcpPort: null, handlerTimeoutMs: 200 }), { media: slow });
    await slowSrs.listen();
    const uac = await SipUac.open('udp', { host: '127.0.0.1', port: slowSrs.ports().udp! });
    const { response } = await uac.invite(twoStreamOffer());
    expect(response.status).toBe(500);
    await new Promise((r) => setTimeout(r, 700));
    expect(slowSrs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
    await slowSrs.close();
    await uac.close();
  });

  it('retransmits the 200 while the ACK is lost, stops on the ACK', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const offer = twoStreamOffer();
    const callId = offer.headers.find(([n]) => n === 'X-Optin-Call-Id')![1];
    const { response, dialog } = await uac.invite({ ...offer, ack: false });
    expect(response.status).toBe(200);
    // Media before the ACK is received: the sockets are open once the 200 is sent.
    await sendTone({ port: audioPorts(response.body.toString())[0]!.port, freq: 660, packets: 5 });
    await sink.waitFor(() => sink.count(callId, pid(CUSTOMER.aor)) >= 5);
    const okCount = () => uac.received.filter((r) => r.message.kind === 'response' && r.message.status === 200 && r.message.headers.get('cseq') === '1 INVITE').length;
    // T1 = 50 ms in tests: retransmissions at 50, 150, 350 ms...
    await new Promise((r) => setTimeout(r, 400));
    expect(okCount()).toBeGreaterThanOrEqual(3);
    uac.ack(dialog!, 1);
    await new Promise((r) => setTimeout(r, 100));
    const after = okCount();
    await new Promise((r) => setTimeout(r, 900));
    expect(okCount()).toBe(after);
    expect(srs.sip.dialogCount).toBe(1);
    await dialog!.bye();
    expect(srs.sip.dialogCount).toBe(0);
    await uac.close();
  });

  it('with no ACK at all, gives up after 64*T1, sends a BYE and closes the session', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const { response } = await uac.invite({ ...twoStreamOffer(), ack: false });
    expect(response.status).toBe(200);
    const bye = await uac.waitFor((m) => m.kind === 'request' && m.method === 'BYE', 6000);
    expect(bye.headers.get('call-id')).toBe(response.headers.get('call-id'));
    await new Promise((r) => setTimeout(r, 100));
    expect(srs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
    await uac.close();
  });

  it('hold by re-INVITE: answered inactive, packets dropped while held, delivered again on resume', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const offer = twoStreamOffer();
    const callId = offer.headers.find(([n]) => n === 'X-Optin-Call-Id')![1];
    const { dialog, response } = await uac.invite(offer);
    const [l1] = audioPorts(response.body.toString());
    const customer = pid(CUSTOMER.aor);
    await sendTone({ port: l1!.port, freq: 660, packets: 10 });
    await sink.waitFor(() => sink.count(callId, customer) >= 10);
    const hold = await dialog!.reinvite(sdpOffer([{ port: 40002, label: '1', direction: 'inactive' }, { port: 40004, label: '2', direction: 'inactive' }], { version: 2 }), 'application/sdp');
    expect(hold.status).toBe(200);
    expect(audioPorts(hold.body.toString()).map((l) => l.direction)).toEqual(['inactive', 'inactive']);
    expect(sink.events.some((e) => e.type === 'held' && e.callId === callId && e.participantId === customer)).toBe(true);
    await sendTone({ port: l1!.port, freq: 660, packets: 10, seqStart: 2000 });
    await new Promise((r) => setTimeout(r, 100));
    expect(sink.count(callId, customer)).toBe(10);
    const resume = await dialog!.reinvite(sdpOffer([{ port: 40002, label: '1' }, { port: 40004, label: '2' }], { version: 3 }), 'application/sdp');
    expect(resume.status).toBe(200);
    const resumed = audioPorts(resume.body.toString());
    // The same ports stay in use across hold and resume.
    expect(resumed[0]!.port).toBe(l1!.port);
    expect(resumed.map((l) => l.direction)).toEqual(['recvonly', 'recvonly']);
    await sendTone({ port: l1!.port, freq: 660, packets: 10, seqStart: 3000 });
    await sink.waitFor(() => sink.count(callId, customer) >= 20);
    expect(sink.events.some((e) => e.type === 'resumed' && e.callId === callId)).toBe(true);
    await dialog!.bye();
    await uac.close();
  });

  it('a metadata update transferring to a second agent opens a third track under that agent', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const offer = twoStreamOffer();
    const callId = offer.headers.find(([n]) => n === 'X-Optin-Call-Id')![1];
    const { dialog, response } = await uac.invite(offer);
    const [, l2] = audioPorts(response.body.toString());
    await sendTone({ port: l2!.port, freq: 440, packets: 10 });
    const agentA = pid(AGENT.aor);
    const agentB = pid(AGENT_B.aor);
    await sink.waitFor(() => sink.count(callId, agentA) >= 10);
    // Agent A leaves; agent B joins on a new stream (label 3); the SRC drops A's m-line (port 0).
    const body = transferBody(AGENT, AGENT_B);
    const res = await dialog!.reinvite(body.body, body.contentType);
    expect(res.status).toBe(200);
    const lines = audioPorts(res.body.toString());
    expect(lines.map((l) => l.port === 0)).toEqual([false, true, false]);
    await sendTone({ port: lines[2]!.port, freq: 523, packets: 12 });
    await sink.waitFor(() => sink.count(callId, agentB) >= 12);
    expect(sink.count(callId, agentA)).toBe(10);
    expect(sink.events.some((e) => e.type === 'closed' && e.participantId === agentA && e.reason === 'removed')).toBe(true);
    const tracks = new Set([...sink.streams.keys()].filter((k) => k.startsWith(`${callId}/`)));
    expect(tracks.size).toBe(2); // customer sent nothing in this test; agent A and agent B did
    await dialog!.bye();
    await uac.close();
  });

  it('an UPDATE with metadata alone moves a stream to a new speaker (same port, new track)', async () => {
    const uac = await SipUac.open('tcp', server('tcp'));
    const offer = twoStreamOffer();
    const callId = offer.headers.find(([n]) => n === 'X-Optin-Call-Id')![1];
    const { dialog, response } = await uac.invite(offer);
    const [, l2] = audioPorts(response.body.toString());
    const md = rsMetadata({
      dataMode: 'partial',
      participants: [
        { ...AGENT, left: true },
        { ...AGENT_B, sends: ['c3RyZWFtMg=='] },
      ],
      streams: [],
    });
    const res = await dialog!.update(md, 'application/rs-metadata+xml');
    expect(res.status).toBe(200);
    await sendTone({ port: l2!.port, freq: 440, packets: 8 });
    await sink.waitFor(() => sink.count(callId, pid(AGENT_B.aor)) >= 8);
    expect(sink.events.some((e) => e.type === 'reassigned' && e.callId === callId && e.participantId === pid(AGENT_B.aor))).toBe(true);
    await dialog!.bye();
    await uac.close();
  });

  it('bad metadata gets a 4xx naming the problem, and nothing is opened', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const sdp = sdpOffer([{ port: 40002, label: '1' }]);
    for (const [md, expected] of [
      ['<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><recording xmlns="urn:ietf:params:xml:ns:recording:1"/>', /DOCTYPE/],
      ['<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant>', /not well-formed/],
      ['<recording xmlns="urn:example:other"/>', /namespace/],
      ['<foo/>', /root element/],
    ] as const) {
      const body = siprecBody(sdp, md);
      const before = media.streamCount;
      const { response } = await uac.invite({ ...body, headers: SIPREC_HEADERS });
      expect(response.status).toBe(400);
      expect(response.reason).toMatch(expected);
      expect(response.headers.get('warning')).toMatch(/^399 optin "/);
      expect(media.streamCount).toBe(before);
    }
    expect(srs.sip.dialogCount).toBe(0);
    await uac.close();
  });

  it('503 with Retry-After above the stream ceiling; OPTIONS 200 only while ready', async () => {
    const uac = await SipUac.open('udp', server('udp'));
    const a = await uac.invite(twoStreamOffer());
    const b = await uac.invite(twoStreamOffer());
    const c = await uac.invite(twoStreamOffer());
    expect([a.response.status, b.response.status, c.response.status]).toEqual([200, 200, 200]);
    const d = await uac.invite(twoStreamOffer());
    expect(d.response.status).toBe(503);
    expect(d.response.headers.get('retry-after')).toBe('7');
    const options = () => uac.request(uac.build({ method: 'OPTIONS', callId: `opt-${Math.random()}`, fromTag: 'o1', cseq: 1 }));
    expect((await options()).status).toBe(200);
    ready = false;
    const notReady = await options();
    expect(notReady.status).toBe(503);
    expect(notReady.headers.get('retry-after')).toBe('7');
    const e = await uac.invite(twoStreamOffer());
    expect(e.response.status).toBe(503);
    ready = true;
    expect((await options()).status).toBe(200);
    for (const x of [a, b, c]) await x.dialog!.bye();
    expect(media.streamCount).toBe(0);
    const text = await registry.metrics();
    expect(text).toMatch(/optin_sip_503_total\{reason="streams"\} [1-9]/);
    expect(text).toMatch(/optin_sip_503_total\{reason="not-ready"\} [1-9]/);
    expect(text).toMatch(/optin_siprec_streams_opened_total\{codec="PCMU"\} [1-9]/);
    expect(text).toMatch(/optin_sip_invites_total\{outcome="accepted"\} [1-9]/);
    await uac.close();
  });
});
