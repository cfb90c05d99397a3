import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { RtpLegRewriter } from '../rtp/RtpLegRewriter.ts';

/** Why the ingress did not pass a datagram on (counted: `optin_rtp_ingress_dropped_total`). */
export type IngressDropReason = 'foreign-source' | 'oversize' | 'malformed' | 'payload-type';

export interface IngressEvents {
  /** The gateway's stream switched to another SSRC (mapped onto the producer's). */
  onSsrcChange?: () => void;
  onDrop?: (reason: IngressDropReason, count: number) => void;
}

/**
 * RTP larger than this is dropped: audio from a gateway fits an Ethernet MTU (an Opus frame is at
 * most 1275 bytes, RFC 6716 §3.4; G.711 at 20-60 ms is 160-480), and anything larger would be
 * IP-fragmented on the way anyway.
 */
export const MAX_RTP_DATAGRAM = 1500;

/** Where the gateway sends from; fixed when declared, else learnt from its first RTP packet. */
interface Remote {
  ip: string;
  rtpPort: number;
  rtcpPort: number;
}

async function bind(type: 'udp4' | 'udp6', ip: string): Promise<dgram.Socket> {
  const sock = dgram.createSocket(type);
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, ip, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  return sock;
}

/**
 * The recorder's own UDP ingress in front of one plain leg's mediasoup PlainTransport (issue 19
 * item 1). The gateway sends to this ingress's ports; the ingress checks the source, passes each
 * RTP packet through the leg's `RtpLegRewriter` (SSRC changes and payload-type renumberings
 * mapped onto the producer's one stream) and sends it over loopback to the PlainTransport, which
 * is connected to the ingress's inner sockets only (nothing else can reach it).
 *
 * One sender per leg: with a declared remote, RTP is accepted from exactly `remote.ip:rtpPort`;
 * without one (in-process callers), from the first source that sent a valid packet. Datagrams
 * from anyone else are dropped and counted (`foreign-source`).
 *
 * RTCP: the gateway's reports are not passed on (their SSRCs and RTP timestamps describe its
 * streams before the rewriting, so they would mislead the SFU, and the recorder's timeline uses
 * RTP and the arrival clock only). The SFU's receiver reports are sent on to the gateway's RTCP
 * port from the answered `rtcpPort`, so a gateway that watches RTCP still sees a live receiver.
 */
export class PlainRtpIngress {
  readonly #rtp: dgram.Socket;
  readonly #rtcp: dgram.Socket;
  readonly #innerRtp: dgram.Socket;
  readonly #innerRtcp: dgram.Socket;
  readonly #rewriter: RtpLegRewriter;
  readonly #events: IngressEvents;
  #remote: Remote | undefined;
  #target: { rtpPort: number; rtcpPort: number } | undefined;
  #closed = false;
  /** Sends one rewritten packet to the PlainTransport (bound once: no closure per packet). */
  readonly #toSfu = (packet: Buffer): void => {
    if (this.#target !== undefined) this.#innerRtp.send(packet, this.#target.rtpPort, '127.0.0.1');
  };

  private constructor(sockets: dgram.Socket[], rewriter: RtpLegRewriter, remote: Remote | undefined, events: IngressEvents) {
    [this.#rtp, this.#rtcp, this.#innerRtp, this.#innerRtcp] = sockets as [dgram.Socket, dgram.Socket, dgram.Socket, dgram.Socket];
    this.#rewriter = rewriter;
    this.#remote = remote;
    this.#events = events;
    rewriter.observe({ onDrop: (reason, n) => this.#drop(reason, n), ...(events.onSsrcChange ? { onSsrcChange: events.onSsrcChange } : {}) });
    for (const s of sockets) s.on('error', () => undefined); // ICMP unreachable and the like: UDP carries on
    this.#rtp.on('message', (msg, from) => this.#onRtp(msg, from));
    this.#rtcp.on('message', () => undefined); // see the class comment: not passed on
    this.#innerRtcp.on('message', (msg, from) => this.#onSfuRtcp(msg, from));
    this.#innerRtp.on('message', () => undefined); // the leg only produces: the SFU sends it no RTP
  }

  /** Binds the public ports on `listenIp` and the inner ones on loopback. */
  static async open(listenIp: string, rewriter: RtpLegRewriter, remote: Remote | undefined, events: IngressEvents = {}): Promise<PlainRtpIngress> {
    const type = isIP(listenIp) === 6 ? 'udp6' : 'udp4';
    const sockets: dgram.Socket[] = [];
    try {
      sockets.push(await bind(type, listenIp), await bind(type, listenIp), await bind('udp4', '127.0.0.1'), await bind('udp4', '127.0.0.1'));
    } catch (err) {
      for (const s of sockets) s.close();
      throw err;
    }
    return new PlainRtpIngress(sockets, rewriter, remote, events);
  }

  /** The ports the gateway sends RTP and RTCP to. */
  get rtpPort(): number {
    return this.#rtp.address().port;
  }

  get rtcpPort(): number {
    return this.#rtcp.address().port;
  }

  /** The loopback address and ports the PlainTransport is connected to (it accepts nothing else). */
  get inner(): { ip: string; port: number; rtcpPort: number } {
    return { ip: '127.0.0.1', port: this.#innerRtp.address().port, rtcpPort: this.#innerRtcp.address().port };
  }

  /** Where packets go: the PlainTransport's loopback ports. Nothing is forwarded before. */
  attach(target: { rtpPort: number; rtcpPort: number }): void {
    this.#target = target;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [this.#rtp, this.#rtcp, this.#innerRtp, this.#innerRtcp]) s.close();
  }

  #onRtp(msg: Buffer, from: dgram.RemoteInfo): void {
    if (this.#target === undefined || this.#closed) return;
    if (msg.length > MAX_RTP_DATAGRAM) return this.#drop('oversize');
    const remote = this.#remote;
    if (remote !== undefined && (from.address !== remote.ip || from.port !== remote.rtpPort)) return this.#drop('foreign-source');
    const forwarded = this.#rewriter.counters.forwarded;
    this.#rewriter.forward(msg, Date.now(), this.#toSfu);
    // Latched on the first packet the rewriter accepted (comedia for in-process callers); RTCP
    // then goes to the next port (RFC 3550 §11).
    if (remote === undefined && this.#rewriter.counters.forwarded > forwarded) this.#remote = { ip: from.address, rtpPort: from.port, rtcpPort: from.port + 1 };
  }

  #onSfuRtcp(msg: Buffer, from: dgram.RemoteInfo): void {
    const remote = this.#remote;
    if (remote === undefined || this.#closed || from.port !== this.#target?.rtcpPort) return;
    this.#rtcp.send(msg, remote.rtcpPort, remote.ip);
  }

  #drop(reason: IngressDropReason, count = 1): void {
    this.#events.onDrop?.(reason, count);
  }
}
