/**
 * PlainRtpIngress over real UDP sockets (issue 19 item 1): one sender per leg (the declared
 * address; others dropped and counted), bounded datagrams, RTP rewritten onto the producer's
 * SSRC before it is passed on, the gateway's RTCP not passed on and the SFU's sent back to it.
 * A UDP socket stands in for the PlainTransport. The same, with the ingress in a real media
 * thread (issue 16 item 2: MediaThreadPool.openIngress), its counts through the metrics.
 */
import dgram from 'node:dgram';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PlainRtpIngress, type IngressDropReason } from '../../../src/sfu/PlainRtpIngress.ts';
import { inProcessIngress, type LegIngress, type LegIngressSpec } from '../../../src/sfu/LegIngress.ts';
import { MediaThreadPool } from '../../../src/mediathreads/MediaThreadPool.ts';
import { createMetrics } from '../../../src/metrics/metrics.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { RtpLegRewriter } from '../../../src/rtp/RtpLegRewriter.ts';
import { buildRtp, parseRtp } from '../../../src/rtp/RtpPacket.ts';

const sockets: dgram.Socket[] = [];
let ingress: LegIngress | undefined;
afterEach(() => {
  ingress?.close();
  ingress = undefined;
  for (const s of sockets.splice(0)) s.close();
});

const metrics = createMetrics({ defaultMetrics: false });
let threads: MediaThreadPool;
beforeAll(async () => {
  threads = await MediaThreadPool.start({ threads: 2, maxTracks: 8, portMin: 48_400, portMax: 48_499, bindAddress: '127.0.0.1', logger: createLogger('silent'), logLevel: 'silent', metrics });
});
afterAll(async () => {
  await threads?.close();
});

async function udp(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  sockets.push(s);
  return s;
}

const received = (s: dgram.Socket): Buffer[] => {
  const got: Buffer[] = [];
  s.on('message', (m) => got.push(m));
  return got;
};

type Counts = { drops: Partial<Record<IngressDropReason, number>>; changes: number };
type Opened = { ingress: LegIngress; counts: () => Promise<Counts> };

/** The gateway's scenario against an ingress opened by `open` (for `remote`); returns what the SFU and the gateway got. */
async function scenario(open: (remote: LegIngressSpec['remote']) => Promise<Opened>): Promise<void> {
  const [gateway, gatewayRtcp, stranger, sfuRtp, sfuRtcp] = [await udp(), await udp(), await udp(), await udp(), await udp()];
  const opened = await open({ ip: '127.0.0.1', rtpPort: gateway.address().port, rtcpPort: gatewayRtcp.address().port });
  ingress = opened.ingress;
  const ing = opened.ingress;
  ing.attach({ rtpPort: sfuRtp.address().port, rtcpPort: sfuRtcp.address().port });
  const atSfu = received(sfuRtp);
  const atGatewayRtcp = received(gatewayRtcp);
  const atSfuRtcp = received(sfuRtcp);
  const pkt = (ssrc: number, seq: number): Buffer => buildRtp({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, ssrc, payload: Buffer.alloc(160, 0xff) });
  // attach() reaches a thread's ingress as a message: the first packets wait for it to land.
  await new Promise((r) => setTimeout(r, 50));

  for (let i = 0; i < 3; i++) gateway.send(pkt(0xaaaa, 10 + i), ing.rtpPort, '127.0.0.1');
  stranger.send(pkt(0xaaaa, 13), ing.rtpPort, '127.0.0.1');
  gateway.send(Buffer.alloc(1501, 0x80), ing.rtpPort, '127.0.0.1');
  gateway.send(pkt(0xbbbb, 500), ing.rtpPort, '127.0.0.1');
  gatewayRtcp.send(Buffer.from([0x80, 200, 0, 6, 0, 0, 0xaa, 0xaa, ...new Array<number>(20).fill(0)]), ing.rtcpPort, '127.0.0.1');
  // The SFU's receiver report (from its RTCP port to the ingress's inner RTCP port).
  sfuRtcp.send(Buffer.from([0x81, 201, 0, 7, ...new Array<number>(28).fill(1)]), ing.inner.rtcpPort, '127.0.0.1');

  await expect.poll(() => atSfu.length + atGatewayRtcp.length).toBe(5);
  await new Promise((r) => setTimeout(r, 100)); // nothing else arrives
  const out = atSfu.map((b) => {
    const p = parseRtp(b);
    if (!p.ok) throw new Error('malformed');
    return p.packet;
  });
  expect(out.map((p) => [p.ssrc, p.sequenceNumber])).toEqual([[0x1234, 10], [0x1234, 11], [0x1234, 12], [0x1234, 13]]);
  expect(await opened.counts()).toEqual({ drops: { 'foreign-source': 1, oversize: 1 }, changes: 1 });
  expect(atSfuRtcp).toHaveLength(0); // the gateway's RTCP is not passed on
  expect(atGatewayRtcp).toHaveLength(1); // the SFU's is
}

const spec = (remote: LegIngressSpec['remote'], callId = 'call-ingress'): LegIngressSpec => ({ callId, listenIp: '127.0.0.1', ssrc: 0x1234, payloadType: 0, clockRate: 8000, codec: 'pcmu', remote });

describe('PlainRtpIngress', () => {
  it('passes the declared sender on, rewritten; drops strangers and oversize datagrams, counted', async () => {
    await scenario(async (remote) => {
      const counts: Counts = { drops: {}, changes: 0 };
      const rewriter = new RtpLegRewriter({ ssrc: 0x1234, payloadType: 0, clockRate: 8000, sameCodec: () => false });
      const ing = await PlainRtpIngress.open('127.0.0.1', rewriter, remote, {
        onDrop: (reason, n) => void (counts.drops[reason] = (counts.drops[reason] ?? 0) + n),
        onSsrcChange: () => void counts.changes++,
      });
      return { ingress: ing, counts: async () => counts };
    });
  });

  it('the in-process factory opens the same ingress for a spec', async () => {
    await scenario(async (remote) => {
      const counts: Counts = { drops: {}, changes: 0 };
      const ing = await inProcessIngress.openIngress(spec(remote), {
        onDrop: (reason, n) => void (counts.drops[reason] = (counts.drops[reason] ?? 0) + n),
        onSsrcChange: () => void counts.changes++,
      });
      return { ingress: ing, counts: async () => counts };
    });
  });

  it('in a media thread: the same forwarding, the drops and SSRC changes counted in the metrics', async () => {
    const before = await metricCounts();
    await scenario(async (remote) => {
      const ing = await threads.openIngress(spec(remote, 'call-thread-ingress'));
      return {
        ingress: ing,
        counts: async () => {
          await threads.refreshStats();
          const now = await metricCounts();
          const drops: Counts['drops'] = {};
          for (const [reason, n] of Object.entries(now.drops)) if (n - (before.drops[reason as IngressDropReason] ?? 0) > 0) drops[reason as IngressDropReason] = n - (before.drops[reason as IngressDropReason] ?? 0);
          return { drops, changes: now.changes - before.changes };
        },
      };
    });
  });
});

async function metricCounts(): Promise<Counts> {
  const drops: Counts['drops'] = {};
  for (const v of (await metrics.rtpIngressDropped.get()).values) drops[v.labels.reason as IngressDropReason] = v.value;
  const changes = (await metrics.rtpSsrcChanges.get()).values.reduce((n, v) => n + v.value, 0);
  return { drops, changes };
}
