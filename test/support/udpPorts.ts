import { createSocket } from 'node:dgram';

/**
 * Two consecutive free loopback UDP ports (RTP, RTCP = RTP + 1, RFC 3550 §11) for a sender that
 * must declare where it sends from (a plain leg accepts RTP from the declared address only).
 * Bound and released at once: the window in which another process could take them is tiny.
 */
export async function freeUdpPortPair(): Promise<{ rtpPort: number; rtcpPort: number }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const a = createSocket('udp4');
    await new Promise<void>((resolve, reject) => a.once('error', reject).bind(0, '127.0.0.1', () => resolve()));
    const rtpPort = a.address().port;
    const b = createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      b.once('error', () => resolve(false));
      b.bind(rtpPort + 1, '127.0.0.1', () => resolve(true));
    });
    a.close();
    b.close();
    if (ok && rtpPort + 1 <= 65535) return { rtpPort, rtcpPort: rtpPort + 1 };
  }
  throw new Error('no pair of consecutive free UDP ports found');
}
