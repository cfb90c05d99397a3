/**
 * PlainRtpIngress over real UDP sockets (issue 19 item 1): one sender per leg (the declared
 * address; others dropped and counted), bounded datagrams, RTP rewritten onto the producer's
 * SSRC before it is passed on, the gateway's RTCP not passed on and the SFU's sent back to it.
 * A UDP socket stands in for the PlainTransport.
 */
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { PlainRtpIngress, type IngressDropReason } from '../../../src/sfu/PlainRtpIngress.ts';
import { RtpLegRewriter } from '../../../src/rtp/RtpLegRewriter.ts';
import { buildRtp, parseRtp } from '../../../src/rtp/RtpPacket.ts';

const sockets: dgram.Socket[] = [];
let ingress: PlainRtpIngress | undefined;
afterEach(() => {
  ingress?.close();
  for (const s of sockets.splice(0)) s.close();
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

describe('PlainRtpIngress', () => {
  it('passes the declared sender on, rewritten; drops strangers and oversize datagrams, counted', async () => {
    const [gateway, gatewayRtcp, stranger, sfuRtp, sfuRtcp] = [await udp(), await udp(), await udp(), await udp(), await udp()];
    const drops: Partial<Record<IngressDropReason, number>> = {};
    let changes = 0;
    const rewriter = new RtpLegRewriter({ ssrc: 0x1234, payloadType: 0, clockRate: 8000, sameCodec: () => false });
    ingress = await PlainRtpIngress.open('127.0.0.1', rewriter, { ip: '127.0.0.1', rtpPort: gateway.address().port, rtcpPort: gatewayRtcp.address().port }, {
      onDrop: (reason, n) => void (drops[reason] = (drops[reason] ?? 0) + n),
      onSsrcChange: () => void changes++,
    });
    ingress.attach({ rtpPort: sfuRtp.address().port, rtcpPort: sfuRtcp.address().port });
    const atSfu = received(sfuRtp);
    const atGatewayRtcp = received(gatewayRtcp);
    const atSfuRtcp = received(sfuRtcp);
    const pkt = (ssrc: number, seq: number): Buffer => buildRtp({ payloadType: 0, sequenceNumber: seq, timestamp: seq * 160, ssrc, payload: Buffer.alloc(160, 0xff) });

    for (let i = 0; i < 3; i++) gateway.send(pkt(0xaaaa, 10 + i), ingress.rtpPort, '127.0.0.1');
    stranger.send(pkt(0xaaaa, 13), ingress.rtpPort, '127.0.0.1');
    gateway.send(Buffer.alloc(1501, 0x80), ingress.rtpPort, '127.0.0.1');
    gateway.send(pkt(0xbbbb, 500), ingress.rtpPort, '127.0.0.1');
    gatewayRtcp.send(Buffer.from([0x80, 200, 0, 6, 0, 0, 0xaa, 0xaa, ...new Array<number>(20).fill(0)]), ingress.rtcpPort, '127.0.0.1');
    // The SFU's receiver report (from its RTCP port to the ingress's inner RTCP port).
    sfuRtcp.send(Buffer.from([0x81, 201, 0, 7, ...new Array<number>(28).fill(1)]), ingress.inner.rtcpPort, '127.0.0.1');

    await expect.poll(() => atSfu.length + atGatewayRtcp.length).toBe(5);
    await new Promise((r) => setTimeout(r, 100)); // nothing else arrives
    const out = atSfu.map((b) => {
      const p = parseRtp(b);
      if (!p.ok) throw new Error('malformed');
      return p.packet;
    });
    expect(out.map((p) => [p.ssrc, p.sequenceNumber])).toEqual([[0x1234, 10], [0x1234, 11], [0x1234, 12], [0x1234, 13]]);
    expect(drops).toEqual({ 'foreign-source': 1, oversize: 1 });
    expect(changes).toBe(1);
    expect(atSfuRtcp).toHaveLength(0); // the gateway's RTCP is not passed on
    expect(atGatewayRtcp).toHaveLength(1); // the SFU's is
  });
});
