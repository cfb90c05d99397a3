/**
 * SIP robustness against the running recording server: malformed start lines, headers, bodies
 * and multipart boundaries, wrong Content-Length, huge messages, unknown methods, out-of-dialog
 * requests, retransmission storms and random mutations. Every case ends in a 4xx or silence; the
 * server keeps answering, and no dialog, stream or transaction is left behind.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingServer } from '../../../src/siprec/RecordingServer.ts';
import { UdpMediaPlane } from '../../../src/siprec/UdpMediaPlane.ts';
import { parseMessage } from '../../../src/sip/parseMessage.ts';
import type { SipResponse } from '../../../src/sip/SipMessage.ts';
import { SipUac } from '../../support/sipUac.ts';
import { CollectingSink, SIPREC_HEADERS, multipart, rsMetadata, sdpOffer, siprecBody, testSiprecConfig } from '../../support/siprecFixtures.ts';

const sink = new CollectingSink();
let media: UdpMediaPlane;
let srs: RecordingServer;
const config = testSiprecConfig({ maxTransactionsPerSource: 64, limits: { maxMessageBytes: 16_384, maxHeaderBytes: 8192, maxHeaders: 64 } });

beforeAll(async () => {
  media = new UdpMediaPlane({ bindAddress: '127.0.0.1', portMin: config.media.portMin, portMax: config.media.portMax, maxStreams: 50, retryAfterSeconds: 7, isReady: () => true, sink });
  srs = new RecordingServer(config, { media });
  await srs.listen();
});

afterAll(async () => {
  await srs.close();
  await media.close();
});

/** A raw UDP client: send bytes, collect parsed responses. */
async function rawUdp() {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const responses: SipResponse[] = [];
  sock.on('message', (d) => {
    const r = parseMessage(d);
    if (r.ok && r.message.kind === 'response') responses.push(r.message);
  });
  return {
    port: sock.address().port,
    responses,
    send: (data: string | Buffer) => new Promise<void>((r) => sock.send(typeof data === 'string' ? Buffer.from(data) : data, srs.ports().udp!, '127.0.0.1', () => r())),
    close: () => sock.close(),
  };
}

function request(port: number, o: { method?: string; startLine?: string; headers?: string[]; body?: string; contentLength?: number | null; callId?: string; branch?: string } = {}): string {
  const method = o.method ?? 'OPTIONS';
  const body = o.body ?? '';
  const lines = [
    o.startLine ?? `${method} sip:srs@127.0.0.1 SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=${o.branch ?? 'z9hG4bK' + Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70',
    'From: <sip:src@127.0.0.1>;tag=abc',
    'To: <sip:srs@127.0.0.1>',
    `Call-ID: ${o.callId ?? Math.random().toString(36).slice(2)}@test`,
    `CSeq: 1 ${method}`,
    ...(o.headers ?? []),
  ];
  if (o.contentLength !== null) lines.push(`Content-Length: ${o.contentLength ?? Buffer.byteLength(body)}`);
  return lines.join('\r\n') + '\r\n\r\n' + body;
}

const PLAIN_IDS = ['X-Optin-Call-Id: robust-call', 'X-Optin-Participant-Id: robust-agent'];

async function settle(ms = 150) {
  await new Promise((r) => setTimeout(r, ms));
}

async function alive(): Promise<void> {
  const uac = await SipUac.open('udp', { host: '127.0.0.1', port: srs.ports().udp! });
  const res = await uac.request(uac.build({ method: 'OPTIONS', callId: `alive-${Math.random()}`, fromTag: 'x', cseq: 1 }));
  expect(res.status).toBe(200);
  await uac.close();
}

describe('SIP robustness', () => {
  it('answers malformed requests with 4xx when it can tell who sent them, silence otherwise', async () => {
    const c = await rawUdp();
    const cases: [string, number | undefined][] = [
      [request(c.port, { startLine: 'INVITE sip:srs@127.0.0.1 SIP/3.0' }), 505],
      [request(c.port, { startLine: 'INVITE  SIP/2.0' }), undefined],
      [request(c.port, { startLine: 'HELLO WORLD' }), undefined],
      [request(c.port, { headers: ['this is not a header'] }), 400],
      [request(c.port, { headers: ['CSeq: x'] }), 400],
      [request(c.port, { method: 'INVITE', body: 'v=0\r\n', contentLength: 500 }), 400],
      [request(c.port, { contentLength: -1 as number }), 400],
      ['\x00\x01\x02garbage', undefined],
      ['SIP/2.0 200 OK\r\n\r\n', undefined],
      ['INVITE sip:x SIP/2.0\r\nVia: nothing\r\n\r\n', undefined],
      [request(c.port, { method: 'FROBNICATE' }), 501],
      [request(c.port, { method: 'REGISTER' }), 405],
      [request(c.port, { method: 'BYE' }), 481],
      [request(c.port, { method: 'BYE', headers: [] }).replace('To: <sip:srs@127.0.0.1>', 'To: <sip:srs@127.0.0.1>;tag=nodialog'), 481],
      [request(c.port, { method: 'INFO' }), 481],
      [request(c.port, { method: 'INVITE', headers: ['Require: 100rel, siprec'] }), 420],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: text/html'], body: '<html/>' }), 415],
      [request(c.port, { method: 'INVITE' }), 488],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: multipart/mixed'], body: '--x\r\n\r\n--x--' }), 400],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: multipart/mixed;boundary=nothere'], body: 'no parts at all' }), 400],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: multipart/mixed;boundary=b'], body: '--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n' }), 400],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: application/sdp'], body: 'v=0\r\n' }), 400], // no call mapping: 400 naming it
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: application/sdp', ...PLAIN_IDS], body: 'not sdp at all' }), 488],
      [request(c.port, { method: 'INVITE', headers: ['Content-Type: application/sdp', ...PLAIN_IDS], body: 'v=0\r\nm=video 4000 RTP/AVP 96\r\n' }), 488],
      [request(c.port, { method: 'ACK' }), undefined],
      [request(c.port, { method: 'CANCEL' }), 481],
    ];
    for (const [msg, expected] of cases) {
      const callId = /Call-ID: (\S+)/.exec(msg)?.[1];
      await c.send(msg);
      // Final responses to this request (an INVITE's non-2xx is retransmitted until ACKed: Timer G).
      const finals = () => c.responses.filter((r) => r.status >= 200 && callId !== undefined && r.headers.get('call-id') === callId);
      // An answer is awaited (up to 3 s on a loaded machine); silence is judged after 60 ms.
      if (expected === undefined) await settle(60);
      else for (const end = Date.now() + 3000; finals().length === 0 && Date.now() < end; ) await settle(10);
      const got = [...new Set(finals().map((r) => r.status))];
      if (expected === undefined) expect(got, JSON.stringify(msg.slice(0, 60))).toHaveLength(0);
      else expect(got, JSON.stringify(msg.slice(0, 60))).toEqual([expected]);
    }
    c.close();
    expect(srs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
    await alive();
  });

  it('refuses messages over the size bounds (513) and closes TCP connections that break framing', async () => {
    const c = await rawUdp();
    await c.send(request(c.port, { headers: [`X-Big: ${'a'.repeat(9000)}`] }));
    await c.send(request(c.port, { method: 'INVITE', headers: ['Content-Type: application/sdp'], body: 'v=0\r\n' + 'a=x\r\n'.repeat(4000) }));
    await c.send(request(c.port, { headers: Array.from({ length: 100 }, (_, i) => `X-H${i}: ${i}`) }));
    await settle(150);
    // The oversize header section cannot be read at all: silence. The oversize INVITE: 513
    // (retransmitted until ACKed), too many headers: 400.
    expect([...new Set(c.responses.map((r) => r.status))].sort()).toEqual([400, 513]);
    c.close();

    for (const bad of [
      'OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKa\r\n\r\n', // no Content-Length on a stream
      'OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n',
      'A'.repeat(20_000),
    ]) {
      const sock = net.connect(srs.ports().tcp!, '127.0.0.1');
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.on('error', () => undefined);
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      sock.write(bad);
      await closed;
    }
    await alive();
  });

  it('survives a retransmission storm: one transaction, one answer per copy, bounded per source', async () => {
    const c = await rawUdp();
    const md = rsMetadata({ participants: [{ id: 'p1', aor: 'sip:1@x', sends: ['s1'] }], streams: [{ id: 's1', label: '1' }] });
    const body = siprecBody(sdpOffer([{ port: 40010, label: '1' }]), md);
    const invite = request(c.port, { method: 'INVITE', branch: 'z9hG4bKstorm1', callId: 'storm1', headers: [...SIPREC_HEADERS.map(([n, v]) => `${n}: ${v}`), `Content-Type: ${body.contentType}`], body: body.body });
    await Promise.all(Array.from({ length: 300 }, () => c.send(invite)));
    await settle(300);
    const finals = c.responses.filter((r) => r.status === 200);
    expect(finals.length).toBeGreaterThan(0);
    // All 200s belong to the one dialog: the same To tag.
    expect(new Set(finals.map((r) => r.headers.get('to'))).size).toBe(1);
    expect(srs.sip.dialogCount).toBe(1);
    expect(media.streamCount).toBe(1);
    // The same INVITE by another path (new branch): a merged request, 482, no second session (§8.2.2.2).
    await c.send(invite.replace('z9hG4bKstorm1', 'z9hG4bKstorm2'));
    await settle(100);
    expect(c.responses.some((r) => r.status === 482)).toBe(true);
    expect(srs.sip.dialogCount).toBe(1);
    // Distinct requests beyond the per-source bound are dropped, not queued.
    const before = c.responses.length;
    await Promise.all(Array.from({ length: 200 }, (_, i) => c.send(request(c.port, { method: 'FROBNICATE', branch: `z9hG4bKflood${i}` }))));
    await settle(300);
    const answered = c.responses.length - before;
    expect(answered).toBeLessThanOrEqual(config.maxTransactionsPerSource);
    expect(answered).toBeGreaterThan(0);
    // End the storm's dialog with a BYE built from its 200, once the flood's transactions have
    // expired (Timer J = 64*T1) and this source is below its bound again.
    await settle(64 * config.timers.t1 + 200);
    const ok = finals[0]!;
    const bye = request(c.port, { method: 'BYE', callId: 'storm1' })
      .replace(/To: .*\r\n/, `To: ${ok.headers.get('to')}\r\n`)
      .replace('CSeq: 1 BYE', 'CSeq: 2 BYE');
    await c.send(bye);
    await settle(200);
    expect(srs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
    c.close();
  });

  it('never crashes on random mutations of a valid SIPREC INVITE', async () => {
    const c = await rawUdp();
    const md = rsMetadata({ participants: [{ id: 'p1', aor: 'sip:1@x', sends: ['s1'] }], streams: [{ id: 's1', label: '1' }] });
    const body = siprecBody(sdpOffer([{ port: 40012, label: '1' }]), md);
    const base = Buffer.from(request(c.port, { method: 'INVITE', headers: [`Content-Type: ${body.contentType}`], body: body.body }));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 12 }), fc.nat(base.length), async (edits, cut) => {
        const m = Buffer.from(base);
        for (const [at, v] of edits) m[at] = v;
        await c.send(m.subarray(0, Math.max(1, cut)));
      }),
      { numRuns: 300 },
    );
    await settle(300);
    c.close();
    await alive();
    // Mutations that still parsed as valid INVITEs may have opened sessions (their SRC never sends BYE):
    // ending them must release everything.
    for (const s of srs.sip.sessions()) srs.sip.terminate(s, 'shutdown');
    expect(srs.sip.dialogCount).toBe(0);
    expect(media.streamCount).toBe(0);
  });

  it('keeps multipart parts in any order, with extra parts and per-part Content-Length', async () => {
    const uac = await SipUac.open('udp', { host: '127.0.0.1', port: srs.ports().udp! });
    const md = rsMetadata({ participants: [{ id: 'p1', aor: 'sip:1@x', sends: ['s1'] }], streams: [{ id: 's1', label: '1' }] });
    const sdp = sdpOffer([{ port: 40014, label: '1' }]);
    const body = multipart([
      { type: 'application/vnd.vendor+xml', body: '<x/>' },
      { type: 'application/rs-metadata', body: md, headers: [`Content-Length: ${Buffer.byteLength(md)}`, 'Content-Disposition: recording-session'] },
      { type: 'application/sdp', body: sdp, headers: [`Content-Length: ${Buffer.byteLength(sdp)}`] },
    ]);
    const { response, dialog } = await uac.invite({ ...body, headers: [['Supported', 'siprec']] });
    expect(response.status).toBe(200);
    await dialog!.bye();
    await uac.close();
  });
});
