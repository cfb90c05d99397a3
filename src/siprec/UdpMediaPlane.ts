/**
 * Direct receive of SIPREC and plain-leg RTP on node:dgram sockets (the SBC already forked the
 * media: no SFU hop). One even RTP port per stream and RTCP on the next odd port (RFC 3550
 * §11), or RTP and RTCP on one port with rtcp-mux (RFC 5761 §4: RTCP packet types 192-223 show
 * as payload types 64-95). Packets are accepted only from the address the SDP declared (the
 * source port too when `strictSourcePort`), only while not on hold, only with the negotiated
 * payload type (comfort noise, DTMF events and strays are counted and dropped), and, with SDES,
 * only when SRTP authentication passes.
 *
 * All socket code of the media plane is in this file so that issue 16 can move it into worker
 * threads behind the MediaPlane interface.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { OptinError } from '../errors/OptinError.ts';
import type {
  Admission,
  MediaPlane,
  MediaSink,
  OpenStreamRequest,
  ReceiveStream,
  RemoteMedia,
  StreamCloseReason,
  StreamStats,
  StreamUpdate,
  CodecChoice,
} from './MediaPlane.ts';
import { SrtpReceiver } from './srtp.ts';

export interface UdpMediaPlaneOptions {
  readonly bindAddress: string;
  /** The address put in SDP answers (defaults to bindAddress). */
  readonly advertisedAddress?: string | undefined;
  /** Inclusive port range for RTP (even) and RTCP (odd) sockets. */
  readonly portMin: number;
  readonly portMax: number;
  readonly maxStreams: number;
  readonly retryAfterSeconds: number;
  /** Policy stream fresh and store writable (the lead wires this to the recorder's readiness). */
  readonly isReady: () => boolean;
  readonly sink: MediaSink;
  /** Also require the source port the SDP declared (off by default: SBCs may send from another port). */
  readonly strictSourcePort?: boolean | undefined;
  /** Kernel receive buffer per socket. */
  readonly recvBufferBytes?: number | undefined;
  /**
   * A packet's arrival time (default Date.now()). A media thread that drains its sockets in
   * batches says when the batch began: the earliest a packet read in it can have arrived.
   */
  readonly arrivalClock?: (() => number) | undefined;
  /**
   * Ports chosen by the kernel (bind to 0), rtcp-mux streams only; the range is then not used.
   * For loopback streams nobody outside is told about (a media thread's taps of mediasoup legs).
   */
  readonly ephemeralPorts?: boolean | undefined;
}

export class UdpMediaPlane implements MediaPlane {
  readonly #opts: UdpMediaPlaneOptions;
  readonly #streams = new Set<UdpReceiveStream>();
  readonly #portsInUse = new Set<number>();
  #nextPort: number;
  /** Streams admitted and being bound: counted against the ceiling so concurrent INVITEs cannot overshoot it. */
  #opening = 0;
  #draining = false;
  #closed = false;

  constructor(opts: UdpMediaPlaneOptions) {
    if (!opts.ephemeralPorts && (opts.portMin < 1024 || opts.portMax > 65535 || opts.portMax - opts.portMin < 3)) {
      throw new OptinError('CONFIG_INVALID', 'siprec.media port range must lie within 1024-65535 and hold at least two port pairs');
    }
    this.#opts = opts;
    this.#nextPort = opts.portMin + (opts.portMin % 2);
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  admit(streams: number): Admission {
    const retryAfterSeconds = this.#opts.retryAfterSeconds;
    if (this.#draining || this.#closed) return { ok: false, reason: 'draining', retryAfterSeconds };
    if (!this.#opts.isReady()) return { ok: false, reason: 'not-ready', retryAfterSeconds };
    if (this.#streams.size + this.#opening + streams > this.#opts.maxStreams) return { ok: false, reason: 'streams', retryAfterSeconds };
    return { ok: true };
  }

  ready(): boolean {
    return !this.#draining && !this.#closed && this.#opts.isReady();
  }

  /** Refuse new sessions from now on (existing streams continue). */
  drain(): void {
    this.#draining = true;
  }

  async open(req: OpenStreamRequest): Promise<ReceiveStream> {
    if (this.#closed) throw new OptinError('MEDIA_PLANE_CLOSED', 'the media plane is closed; open streams on a running recorder');
    if (this.#streams.size + this.#opening >= this.#opts.maxStreams) {
      throw new OptinError('MEDIA_PORTS_EXHAUSTED', `stream ceiling of ${this.#opts.maxStreams} reached; raise siprec.media.maxStreams or add recorders`);
    }
    this.#opening++;
    try {
      const { rtp, rtcp, port } = await this.#bindPair(req.remote.rtcpMux);
      if (this.#closed) {
        rtp.close();
        rtcp?.close();
        this.#portsInUse.delete(port);
        throw new OptinError('MEDIA_PLANE_CLOSED', 'the media plane closed while a stream was opening');
      }
      const stream = new UdpReceiveStream(this, req, rtp, rtcp, port, this.#opts);
      this.#streams.add(stream);
      return stream;
    } finally {
      this.#opening--;
    }
  }

  /** Called by a stream when it closes. */
  released(stream: UdpReceiveStream, port: number): void {
    this.#streams.delete(stream);
    this.#portsInUse.delete(port);
  }

  async #bindPair(mux: boolean): Promise<{ rtp: dgram.Socket; rtcp: dgram.Socket | undefined; port: number }> {
    if (this.#opts.ephemeralPorts) {
      if (!mux) throw new OptinError('CONFIG_INVALID', 'a media plane on kernel-chosen ports takes rtcp-mux streams only');
      const rtp = await this.#bind(0);
      if (!rtp) throw new OptinError('MEDIA_PORTS_EXHAUSTED', `no UDP port free on ${this.#opts.bindAddress}`);
      return { rtp, rtcp: undefined, port: rtp.address().port };
    }
    const { portMin, portMax } = this.#opts;
    const pairs = Math.floor((portMax - portMin + 1) / 2);
    for (let attempt = 0; attempt < Math.min(pairs, 64 + this.#portsInUse.size); attempt++) {
      const port = this.#nextPort;
      this.#nextPort += 2;
      if (this.#nextPort + 1 > portMax) this.#nextPort = portMin + (portMin % 2);
      if (this.#portsInUse.has(port)) continue;
      const rtp = await this.#bind(port);
      if (!rtp) continue;
      let rtcp: dgram.Socket | undefined;
      if (!mux) {
        rtcp = await this.#bind(port + 1);
        if (!rtcp) {
          rtp.close();
          continue;
        }
      }
      this.#portsInUse.add(port);
      return { rtp, rtcp, port };
    }
    throw new OptinError('MEDIA_PORTS_EXHAUSTED', `no free RTP port pair in ${portMin}-${portMax}; widen siprec.media.portMin/portMax or lower the stream ceiling`);
  }

  #bind(port: number): Promise<dgram.Socket | undefined> {
    const type = net.isIPv6(this.#opts.bindAddress) ? 'udp6' : 'udp4';
    const sock = dgram.createSocket({ type, recvBufferSize: this.#opts.recvBufferBytes ?? 256 * 1024 });
    return new Promise((resolve) => {
      const onError = () => {
        sock.close();
        resolve(undefined);
      };
      sock.once('error', onError);
      sock.bind(port, this.#opts.bindAddress, () => {
        sock.off('error', onError);
        sock.on('error', () => undefined);
        resolve(sock);
      });
    });
  }

  advertisedAddress(): string {
    return this.#opts.advertisedAddress ?? this.#opts.bindAddress;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#streams]) s.close('shutdown');
  }
}

class UdpReceiveStream implements ReceiveStream {
  readonly local: { address: string; rtpPort: number; rtcpPort: number };
  readonly stats: StreamStats = { packets: 0, bytes: 0, rejected: 0, rtcpPackets: 0, lastArrivalMs: 0 };
  readonly #plane: UdpMediaPlane;
  readonly #sink: MediaSink;
  readonly #rtp: dgram.Socket;
  readonly #rtcp: dgram.Socket | undefined;
  readonly #port: number;
  readonly #strictPort: boolean;
  readonly #callId: string;
  #participantId: string;
  readonly #clock: () => number;
  #remote: RemoteMedia;
  #codec: CodecChoice;
  #held: boolean;
  #srtp: SrtpReceiver | undefined;
  #closed = false;

  constructor(plane: UdpMediaPlane, req: OpenStreamRequest, rtp: dgram.Socket, rtcp: dgram.Socket | undefined, port: number, opts: UdpMediaPlaneOptions) {
    this.#plane = plane;
    this.#sink = opts.sink;
    this.#rtp = rtp;
    this.#rtcp = rtcp;
    this.#port = port;
    this.#strictPort = opts.strictSourcePort ?? false;
    this.#clock = opts.arrivalClock ?? Date.now;
    this.#callId = req.callId;
    this.#participantId = req.participantId;
    this.#remote = req.remote;
    this.#codec = req.codec;
    this.#held = req.held;
    this.#srtp = req.srtp ? new SrtpReceiver(req.srtp) : undefined;
    this.local = { address: plane.advertisedAddress(), rtpPort: port, rtcpPort: rtcp ? port + 1 : port };
    rtp.on('message', (msg, rinfo) => this.#onRtpSocket(msg, rinfo));
    rtcp?.on('message', (msg, rinfo) => this.#onRtcp(msg, rinfo));
    this.#sink.event?.({ type: 'opened', callId: this.#callId, participantId: this.#participantId, speakers: req.speakers, codec: req.codec, srtp: req.srtp !== undefined, atMs: Date.now() });
    if (req.held) this.#sink.event?.({ type: 'held', callId: this.#callId, participantId: this.#participantId, atMs: Date.now() });
  }

  #fromRemote(rinfo: dgram.RemoteInfo, port: number): boolean {
    const addr = rinfo.address.startsWith('::ffff:') ? rinfo.address.slice(7) : rinfo.address;
    return addr === this.#remote.address && (!this.#strictPort || rinfo.port === port);
  }

  #onRtpSocket(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const now = this.#clock();
    if (msg.length < 12 || msg[0]! >> 6 !== 2 || !this.#fromRemote(rinfo, this.#remote.rtpPort)) {
      this.stats.rejected++;
      return;
    }
    const pt = msg[1]! & 0x7f;
    // RFC 5761 §4: with rtcp-mux, RTCP shows as payload types 64-95.
    if (pt >= 64 && pt <= 95) {
      this.#deliverRtcp(msg, now);
      return;
    }
    if (this.#held || pt !== this.#codec.payloadType) {
      this.stats.rejected++;
      return;
    }
    let packet = msg;
    if (this.#srtp) {
      const clear = this.#srtp.unprotectRtp(msg);
      if (!clear) {
        this.stats.rejected++;
        return;
      }
      packet = clear;
    }
    this.stats.packets++;
    this.stats.bytes += packet.length;
    this.stats.lastArrivalMs = now;
    this.#sink.packet(this.#callId, this.#participantId, packet, now);
  }

  #onRtcp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 8 || msg[0]! >> 6 !== 2 || !this.#fromRemote(rinfo, this.#remote.rtcpPort)) {
      this.stats.rejected++;
      return;
    }
    this.#deliverRtcp(msg, this.#clock());
  }

  #deliverRtcp(msg: Buffer, now: number): void {
    let packet: Buffer | undefined = msg;
    if (this.#srtp) packet = this.#srtp.unprotectRtcp(msg);
    if (!packet) {
      this.stats.rejected++;
      return;
    }
    this.stats.rtcpPackets++;
    // RTCP keeps a held stream alive for the media timeout, but carries no audio.
    this.stats.lastArrivalMs = now;
    this.#sink.rtcp?.(this.#callId, this.#participantId, packet, now);
  }

  get participantId(): string {
    return this.#participantId;
  }

  get held(): boolean {
    return this.#held;
  }

  update(change: StreamUpdate): void {
    if (this.#closed) return;
    // On the packets' clock: a resume must not be later than the stamp of the packets after it
    // (JitterBuffer.resumedAt).
    const now = this.#clock();
    if (change.remote) this.#remote = change.remote;
    if (change.srtp) this.#srtp = new SrtpReceiver(change.srtp);
    if (change.codec && (change.codec.payloadType !== this.#codec.payloadType || change.codec.name !== this.#codec.name)) {
      this.#codec = change.codec;
      this.#sink.event?.({ type: 'codec', callId: this.#callId, participantId: this.#participantId, codec: change.codec, atMs: now });
    }
    if (change.participantId !== undefined && change.participantId !== this.#participantId) {
      const from = this.#participantId;
      this.#participantId = change.participantId;
      this.#sink.event?.({ type: 'reassigned', callId: this.#callId, from, participantId: change.participantId, speakers: change.speakers ?? [change.participantId], atMs: now });
    }
    if (change.held !== undefined && change.held !== this.#held) {
      this.#held = change.held;
      this.#sink.event?.({ type: change.held ? 'held' : 'resumed', callId: this.#callId, participantId: this.#participantId, atMs: now });
    } else if (change.held === false) {
      // An offer for a live stream (only offers say `held`): a hold without `inactive` ends here too.
      this.#sink.event?.({ type: 'renegotiated', callId: this.#callId, participantId: this.#participantId, atMs: now });
    }
  }

  close(reason: StreamCloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#rtp.close();
    this.#rtcp?.close();
    this.#plane.released(this, this.#port);
    this.#sink.event?.({ type: 'closed', callId: this.#callId, participantId: this.#participantId, reason, atMs: Date.now() });
  }
}
