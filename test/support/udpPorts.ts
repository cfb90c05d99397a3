import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The first port the kernel hands out for `bind(0)` (Linux: ip_local_port_range). */
function ephemeralStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > 12_000 ? first : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * Two consecutive free loopback UDP ports (RTP, RTCP = RTP + 1, RFC 3550 §11) for a sender that
 * must declare where it sends from (a plain leg accepts RTP from the declared address only).
 * Chosen below the kernel's ephemeral range: between choosing them and the sender binding them,
 * the recorder binds sockets of its own (a leg's ingress, bind(0)), and an ephemeral pair just
 * released could be handed to it (ffmpeg then failed with "Address already in use").
 */
export async function freeUdpPortPair(): Promise<{ rtpPort: number; rtcpPort: number }> {
  const top = ephemeralStart() - 2;
  for (let attempt = 0; attempt < 50; attempt++) {
    const rtpPort = randomInt(10_000, top);
    const sockets = [createSocket('udp4'), createSocket('udp4')];
    const ok = await Promise.all(
      sockets.map(
        (s, i) =>
          new Promise<boolean>((resolve) => {
            s.once('error', () => resolve(false));
            s.bind(rtpPort + i, '127.0.0.1', () => resolve(true));
          }),
      ),
    );
    for (const s of sockets) s.close();
    if (ok.every(Boolean)) return { rtpPort, rtcpPort: rtpPort + 1 };
  }
  throw new Error('no pair of consecutive free UDP ports found below the ephemeral range');
}
