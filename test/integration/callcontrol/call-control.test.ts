/**
 * Call control against a real recorder (mediasoup, HTTP, WebSocket): every misuse of a token is
 * refused with its reason; a plain leg takes RTP only from the address its gateway declared, so a
 * stranger who reaches the port first gets nowhere; /signal checks the Origin, closes sockets that
 * do not join, bounds each peer, and a double join never leaks a peer (docs/call-control.md).
 */
import { createSocket, type Socket } from 'node:dgram';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startRecorderHttp, type RecorderHttp } from '../../../src/app/recorderHttp.ts';
import { signCallToken } from '../../../src/callcontrol/callToken.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import { useStack } from '../../support/stack.ts';
import { freeUdpPortPair } from '../../support/udpPorts.ts';

const stack = useStack({ 'callControl.joinTimeoutMs': 600, 'callControl.allowedOrigins': ['https://agent.example.com'] });
let http: RecorderHttp;

beforeAll(async () => {
  http = await startRecorderHttp(stack.app, { host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await http?.close();
});

const legToken = (callId: string, participantId: string, extra: Partial<Parameters<typeof signCallToken>[1]> = {}): string =>
  signCallToken(stack.config.callControl.sipLegSecret!, { aud: 'sip-leg', callId, participantId, lifetimeSeconds: 60, ...extra });
const joinToken = (callId: string, participantId: string, extra: Partial<Parameters<typeof signCallToken>[1]> = {}): string =>
  signCallToken(stack.config.callControl.joinSecret!, { aud: 'softphone-join', callId, participantId, lifetimeSeconds: 60, ...extra });

async function openLeg(callId: string, body: Record<string, unknown>, token: string | undefined): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${http.url}/calls/${callId}/plain-legs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('SIP-leg call control: typed, short-lived, single-use tokens', () => {
  const remote = { ip: '127.0.0.1', rtpPort: 40_002, rtcpPort: 40_003 };
  const leg = (participantId: string) => ({ participantId, codec: 'pcmu', ssrc: 0x7001, remote });

  it('refuses every token misuse, each with its reason', async () => {
    const cases: Array<[string, string | undefined, string]> = [
      ['no token', undefined, 'malformed'],
      ['forged', legToken('call-cc', 'cc-a', {}).replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')), 'forged'],
      ['a softphone link (another audience and secret)', joinToken('call-cc', 'cc-a'), 'forged'],
      ['expired', legToken('call-cc', 'cc-a', { iat: Math.floor(Date.now() / 1000) - 120, exp: Math.floor(Date.now() / 1000) - 60 }), 'expired'],
      ['too long-lived', legToken('call-cc', 'cc-a', { lifetimeSeconds: 3600 }), 'lifetime-too-long'],
      ['for another call', legToken('call-other', 'cc-a'), 'wrong-call'],
      ['for another participant', legToken('call-cc', 'cc-b'), 'wrong-participant'],
    ];
    for (const [what, token, reason] of cases) {
      const res = await openLeg('call-cc', leg('cc-a'), token);
      expect(res.status, what).toBe(401);
      expect(res.body.reason, what).toBe(reason);
    }
    // The same secret signing the other audience is told apart too.
    const crossed = signCallToken(stack.config.callControl.sipLegSecret!, { aud: 'softphone-join', callId: 'call-cc', participantId: 'cc-a' });
    expect((await openLeg('call-cc', leg('cc-a'), crossed)).body.reason).toBe('wrong-audience');

    // A good token opens the leg once; the same token again is refused as reused.
    const good = legToken('call-cc', 'cc-a');
    const opened = await openLeg('call-cc', leg('cc-a'), good);
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ comedia: false, rtcpMux: false, remote });
    const again = await openLeg('call-cc', leg('cc-a'), good);
    expect(again.status).toBe(401);
    expect(again.body.reason).toBe('reused');
  });

  it('refuses a leg without a declared remote address, and a phone number as participant id, with a clear error', async () => {
    const { remote: _r, ...noRemote } = leg('cc-c');
    const missing = await openLeg('call-cc', noRemote, legToken('call-cc', 'cc-c'));
    expect(missing.status).toBe(400);
    expect(String(missing.body.message)).toMatch(/remote/);
    const phone = await openLeg('call-cc', leg('46701234567'), legToken('call-cc', 'cc-c'));
    expect(phone.status).toBe(400);
    expect(String(phone.body.message)).toMatch(/phone number/);
    expect(String(phone.body.message)).not.toContain('46701234567');
    const badCall = await openLeg('0046701234567', leg('cc-c'), legToken('call-cc', 'cc-c'));
    expect(badCall.status).toBe(400);
  });
});

describe('a plain leg takes RTP only from the declared address', () => {
  let stranger: Socket;
  let gateway: Socket;
  afterAll(() => {
    stranger?.close();
    gateway?.close();
  });

  async function packets(callId: string, participantId: string): Promise<number> {
    const room = await http.rooms.get(callId);
    const producer = room.legs.find((l) => l.participantId === participantId)!.producer;
    const stats = await producer.getStats();
    return stats.reduce((n, s) => n + (s.packetCount ?? 0), 0);
  }

  it('a stranger who sends first is ignored; the gateway that declared its address is heard', async () => {
    const from = await freeUdpPortPair();
    gateway = createSocket('udp4');
    await new Promise<void>((r) => gateway.bind(from.rtpPort, '127.0.0.1', () => r()));
    stranger = createSocket('udp4');
    await new Promise<void>((r) => stranger.bind(0, '127.0.0.1', () => r()));

    const ssrc = 0x7100;
    const opened = await openLeg('call-pin', { participantId: 'pin-a', codec: 'pcmu', ssrc, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } }, legToken('call-pin', 'pin-a'));
    expect(opened.status).toBe(201);
    const port = opened.body.rtpPort as number;
    const send = async (socket: Socket, first: number, count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        const seq = first + i;
        const packet = buildRtp({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, ssrc, payload: Buffer.alloc(160, 0xff) });
        await new Promise<void>((r, j) => socket.send(packet, port, '127.0.0.1', (err) => (err ? j(err) : r())));
        await sleep(20);
      }
    };

    // The stranger gets there first, with the right SSRC and payload type (what comedia would have locked on to).
    await send(stranger, 1, 25);
    await sleep(200);
    expect(await packets('call-pin', 'pin-a')).toBe(0);
    // The declared gateway is heard, and the stranger still is not.
    await send(gateway, 100, 25);
    await send(stranger, 200, 25);
    await expect.poll(() => packets('call-pin', 'pin-a'), { timeout: 3000 }).toBe(25);
    await sleep(200);
    expect(await packets('call-pin', 'pin-a')).toBe(25);
  });
});

interface Signal {
  ws: WebSocket;
  request(method: string, data?: Record<string, unknown>): Promise<{ ok: boolean; data?: Record<string, unknown>; error?: string; message?: string }>;
  closed: Promise<{ code: number; reason: string }>;
}

function signal(origin: string | undefined): Promise<Signal> {
  const url = `${http.url.replace(/^http/, 'ws')}/signal`;
  const ws = new WebSocket(url, origin === undefined ? {} : { headers: { origin } });
  let next = 1;
  const pending = new Map<number, (m: Record<string, unknown>) => void>();
  ws.on('message', (d) => {
    const m = JSON.parse(String(d)) as Record<string, unknown>;
    if (typeof m.id === 'number') pending.get(m.id)?.(m);
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: String(reason) })));
  return new Promise((resolve, reject) => {
    ws.once('open', () =>
      resolve({
        ws,
        closed,
        request: (method, data = {}) =>
          new Promise((r) => {
            const id = next++;
            pending.set(id, r as (m: Record<string, unknown>) => void);
            ws.send(JSON.stringify({ id, method, ...data }));
          }),
      }),
    );
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

describe('/signal', () => {
  const self = (): string => http.url;

  it('refuses an upgrade without an Origin or from a foreign one; accepts its own and an allowed one', async () => {
    await expect(signal(undefined)).rejects.toThrow(/403/);
    await expect(signal('https://evil.example.net')).rejects.toThrow(/403/);
    (await signal(self())).ws.close();
    (await signal('https://agent.example.com')).ws.close();
  });

  it('closes a socket that does not join in time', async () => {
    const s = await signal(self());
    const t0 = Date.now();
    const { code } = await s.closed;
    expect(code).toBe(4408);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
  });

  it('refuses join tokens that are forged, of the SIP-leg audience, expired or reused', async () => {
    const s = await signal(self());
    for (const [token, reason] of [
      [legToken('call-sig', 'sig-a'), /signature invalid/],
      [joinToken('call-sig', 'sig-a', { iat: Math.floor(Date.now() / 1000) - 100, exp: Math.floor(Date.now() / 1000) - 10 }), /expired/],
      [`${joinToken('call-sig', 'sig-a')}x`, /signature invalid|malformed/],
    ] as const) {
      const r = await s.request('join', { token });
      expect(r).toMatchObject({ ok: false, error: 'TOKEN_REFUSED' });
      expect(r.message).toMatch(reason);
    }
    const token = joinToken('call-sig', 'sig-a');
    expect((await s.request('join', { token })).ok).toBe(true);
    s.ws.close();
    await s.closed;
    const again = await signal(self());
    const reused = await again.request('join', { token });
    expect(reused).toMatchObject({ ok: false, error: 'TOKEN_REFUSED' });
    expect(reused.message).toMatch(/already used/);
    again.ws.close();
  });

  it('a double join (even sent back to back) is refused and leaks no peer; per-peer limits hold', async () => {
    const before = http.signalling!.peerCount;
    const s = await signal(self());
    const [first, second] = await Promise.all([s.request('join', { token: joinToken('call-dbl', 'dbl-a') }), s.request('join', { token: joinToken('call-dbl', 'dbl-a') })]);
    expect([first.ok, second.ok].sort()).toEqual([false, true]);
    expect([first, second].find((r) => !r.ok)?.message).toMatch(/join is already in progress|already joined/);
    expect((await s.request('join', { token: joinToken('call-dbl', 'dbl-a') })).message).toMatch(/already joined/);
    expect(http.signalling!.peerCount).toBe(before + 1);

    // Two transports (send and receive) per peer by default; a third is refused.
    expect((await s.request('createTransport', { direction: 'send' })).ok).toBe(true);
    expect((await s.request('createTransport', { direction: 'recv' })).ok).toBe(true);
    expect(await s.request('createTransport', { direction: 'send' })).toMatchObject({ ok: false, error: 'PEER_LIMIT' });

    s.ws.close();
    await s.closed;
    await expect.poll(() => http.signalling!.peerCount).toBe(before);
  });

  it('a socket that closes while its join is under way leaves no peer', async () => {
    const before = http.signalling!.peerCount;
    const s = await signal(self());
    void s.request('join', { token: joinToken('call-gone', 'gone-a') });
    s.ws.terminate();
    await s.closed;
    await sleep(500);
    expect(http.signalling!.peerCount).toBe(before);
  });
});
