import { TypedEmitter } from '../events/TypedEmitter.ts';
import type { types } from 'mediasoup';
import { ROUTER_MEDIA_CODECS, audioCodecOf, plainAudioRtpParameters, type AudioCodec } from './mediaCodecs.ts';
import type { WorkerPool } from './WorkerPool.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { inProcessIngress, type LegIngress, type LegIngressFactory } from './LegIngress.ts';

export interface AudioLeg {
  participantId: string;
  producer: types.Producer;
  codec: AudioCodec;
}

export type CallRoomEvents = {
  /** An audio producer joined: the recorder taps it. */
  audioproducer: [AudioLeg];
  /** The Router or its worker went away. */
  close: [reason: 'closed' | 'worker-died'];
};

export interface PlainLeg {
  ip: string;
  rtpPort: number;
  rtcpPort: number;
  transport: types.PlainTransport;
  producer: types.Producer;
}

/** The room's counters for plain legs (a Metrics satisfies it). */
export type PlainLegMetrics = Pick<Metrics, 'rtpSsrcChanges' | 'rtpIngressDropped'>;

/**
 * One call's mediasoup Router and its legs. Media flows between the legs whatever the gate says
 * (R5: declining consent changes nothing for the call); the recorder only taps producers.
 */
export class CallRoom extends TypedEmitter<CallRoomEvents> {
  readonly callId: string;
  readonly router: types.Router;
  readonly #pool: WorkerPool;
  readonly #worker: types.Worker;
  readonly #listenIp: string;
  readonly #announcedAddress: string | undefined;
  readonly #metrics: PlainLegMetrics | undefined;
  readonly #ingress: LegIngressFactory;
  readonly #legs = new Map<string, AudioLeg>();
  readonly #transports = new Set<types.Transport>();
  /** Plain (SIP/PSTN) legs' transports by participant: the leg-teardown route closes one. */
  readonly #plain = new Map<string, types.PlainTransport>();
  /** Softphone pages in the room (joined, whether or not they produce yet). */
  #pages = 0;
  #closed = false;

  private constructor(callId: string, router: types.Router, worker: types.Worker, pool: WorkerPool, listenIp: string, announcedAddress?: string, metrics?: PlainLegMetrics, ingress?: LegIngressFactory) {
    super();
    this.#metrics = metrics;
    this.#ingress = ingress ?? inProcessIngress;
    this.callId = callId;
    this.router = router;
    this.#worker = worker;
    this.#pool = pool;
    this.#listenIp = listenIp;
    this.#announcedAddress = announcedAddress;
    router.observer.on('close', () => this.#onClosed(worker.closed || worker.died ? 'worker-died' : 'closed'));
  }

  /**
   * `ingress`: where plain legs' ingresses run (the media threads: the gateway's RTP read on their
   * sockets); default this thread.
   */
  static async create(pool: WorkerPool, callId: string, opts: { listenIp: string; announcedAddress?: string; metrics?: PlainLegMetrics; ingress?: LegIngressFactory }): Promise<CallRoom> {
    const worker = pool.pick();
    const router = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS, appData: { callId } });
    pool.retain(worker);
    return new CallRoom(callId, router, worker, pool, opts.listenIp, opts.announcedAddress, opts.metrics, opts.ingress);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The mediasoup worker process carrying this call (operators correlate crashes with it). */
  get workerPid(): number {
    return this.#worker.pid;
  }

  get legs(): AudioLeg[] {
    return [...this.#legs.values()];
  }

  /**
   * A SIP/PSTN-style leg: a PlainTransport. With `remote` (what call control always passes: the
   * address the gateway declared) the gateway talks to the recorder's own `PlainRtpIngress` (in the
   * call's media thread when the room was given the threads' factory), which
   * accepts RTP from that address only (a stranger reaching the port first cannot take the leg),
   * follows the gateway's SSRC changes and payload-type renumberings onto the producer's one
   * stream (issue 19), and passes it over loopback to the transport, which is connected to the
   * ingress and nothing else. Without `remote`, the transport itself learns the sender from its
   * first packet (comedia) and takes exactly `ssrc`: only for in-process callers (tests,
   * benchmarks, the fixture player) that send one stream from ports they do not know in advance,
   * without the extra hop through Node per packet.
   * RTCP on its own port (rtcpMux false): senders such as ffmpeg send RTCP from another source
   * port, which with a muxed transport would claim the tuple and drop all RTP.
   */
  async addPlainLeg(
    participantId: string,
    codec: AudioCodec,
    ssrc: number,
    payloadType?: number,
    remote?: { ip: string; rtpPort: number; rtcpPort: number },
  ): Promise<PlainLeg> {
    this.#assertOpen();
    if (this.#legs.has(participantId)) {
      throw new OptinError('LEG_EXISTS', `participant ${participantId} already has an audio leg in call ${this.callId}`);
    }
    const rtpParameters = plainAudioRtpParameters(codec, ssrc, payloadType);
    const codecParameters = rtpParameters.codecs[0]!;
    let ingress: LegIngress | undefined;
    if (remote !== undefined) {
      const metrics = this.#metrics;
      ingress = await this.#ingress.openIngress(
        { callId: this.callId, listenIp: this.#listenIp, ssrc, payloadType: codecParameters.payloadType, clockRate: codecParameters.clockRate, codec, remote },
        {
          onSsrcChange: () => metrics?.rtpSsrcChanges.inc(),
          onDrop: (reason, n) => metrics?.rtpIngressDropped.inc({ reason }, n),
        },
      );
    }
    let transport: types.PlainTransport;
    try {
      transport = await this.router.createPlainTransport({
        // Behind an ingress the transport is an internal hop: loopback, never announced.
        listenInfo: ingress
          ? { protocol: 'udp', ip: '127.0.0.1' }
          : { protocol: 'udp', ip: this.#listenIp, ...(this.#announcedAddress ? { announcedAddress: this.#announcedAddress } : {}) },
        rtcpMux: false,
        comedia: ingress === undefined,
      });
    } catch (err) {
      ingress?.close();
      throw err;
    }
    this.#transports.add(transport);
    this.#plain.set(participantId, transport);
    transport.observer.once('close', () => {
      ingress?.close();
      this.#transports.delete(transport);
      if (this.#plain.get(participantId) === transport) this.#plain.delete(participantId);
    });
    if (ingress) {
      await transport.connect(ingress.inner);
      ingress.attach({ rtpPort: transport.tuple.localPort, rtcpPort: transport.rtcpTuple!.localPort });
    }
    const producer = await transport.produce({ kind: 'audio', rtpParameters, appData: { participantId } });
    this.#addLeg({ participantId, producer, codec });
    // What the gateway is told: the ingress's public ports (on the announced address if any), or the transport's own.
    const where = ingress
      ? { ip: this.#announcedAddress ?? this.#listenIp, rtpPort: ingress.rtpPort, rtcpPort: ingress.rtcpPort }
      : { ip: transport.tuple.localAddress, rtpPort: transport.tuple.localPort, rtcpPort: transport.rtcpTuple?.localPort ?? transport.tuple.localPort };
    return { ...where, transport, producer };
  }

  /** A WebRTC leg: the softphone signalling creates the transport; producers are announced here. */
  async createWebRtcTransport(): Promise<types.WebRtcTransport> {
    this.#assertOpen();
    const transport = await this.router.createWebRtcTransport({
      listenInfos: [{ protocol: 'udp', ip: this.#listenIp, ...(this.#announcedAddress ? { announcedAddress: this.#announcedAddress } : {}) }],
      enableUdp: true,
    });
    this.#transports.add(transport);
    return transport;
  }

  /** Registers a producer made on one of this room's transports as a participant's voice. */
  addProducer(participantId: string, producer: types.Producer): void {
    if (producer.kind !== 'audio') return; // video is forwarded, never recorded
    const codec = audioCodecOf(producer.rtpParameters.codecs[0]?.mimeType ?? '');
    if (!codec) throw new OptinError('CODEC_UNSUPPORTED', `unsupported audio codec ${producer.rtpParameters.codecs[0]?.mimeType}`);
    this.#addLeg({ participantId, producer, codec });
  }

  /**
   * Ends one plain leg (the gateway hung it up): its transport and producer close, the recorder's
   * tap of it ends its track. False when the participant has no plain leg here.
   */
  removePlainLeg(participantId: string): boolean {
    const transport = this.#plain.get(participantId);
    if (transport === undefined) return false;
    transport.close();
    return true;
  }

  /** A softphone page joined: the room lives while any page or any leg does. */
  enterPage(): void {
    this.#pages++;
  }

  /** A page left (its transports closed before): the room closes if nothing else is in it. */
  leavePage(): void {
    this.#pages = Math.max(0, this.#pages - 1);
    this.closeIfIdle();
  }

  /**
   * Closes the room when no page and no leg of either kind is left in it: a call lives while any
   * of its legs does (a SIP leg keeps recording after the last softphone left). True if closed.
   */
  closeIfIdle(): boolean {
    if (this.#closed || this.#pages > 0 || this.#legs.size > 0 || this.#plain.size > 0) return false;
    this.close();
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.router.close();
  }

  #addLeg(leg: AudioLeg): void {
    this.#legs.set(leg.participantId, leg);
    leg.producer.observer.once('close', () => {
      if (this.#legs.get(leg.participantId) === leg) this.#legs.delete(leg.participantId);
    });
    this.safeEmit('audioproducer', leg);
  }

  #onClosed(reason: 'closed' | 'worker-died'): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pool.release(this.#worker);
    this.safeEmit('close', reason);
  }

  #assertOpen(): void {
    if (this.#closed) throw new OptinError('CALL_CLOSED', `call ${this.callId} is closed`);
  }
}
