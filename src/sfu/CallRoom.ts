import { TypedEmitter } from '../events/TypedEmitter.ts';
import type { types } from 'mediasoup';
import { ROUTER_MEDIA_CODECS, audioCodecOf, plainAudioRtpParameters, type AudioCodec } from './mediaCodecs.ts';
import type { WorkerPool } from './WorkerPool.ts';
import { OptinError } from '../errors/OptinError.ts';

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
  readonly #legs = new Map<string, AudioLeg>();
  readonly #transports = new Set<types.Transport>();
  /** Plain (SIP/PSTN) legs' transports by participant: the leg-teardown route closes one. */
  readonly #plain = new Map<string, types.PlainTransport>();
  /** Softphone pages in the room (joined, whether or not they produce yet). */
  #pages = 0;
  #closed = false;

  private constructor(callId: string, router: types.Router, worker: types.Worker, pool: WorkerPool, listenIp: string, announcedAddress?: string) {
    super();
    this.callId = callId;
    this.router = router;
    this.#worker = worker;
    this.#pool = pool;
    this.#listenIp = listenIp;
    this.#announcedAddress = announcedAddress;
    router.observer.on('close', () => this.#onClosed(worker.closed || worker.died ? 'worker-died' : 'closed'));
  }

  static async create(pool: WorkerPool, callId: string, opts: { listenIp: string; announcedAddress?: string }): Promise<CallRoom> {
    const worker = pool.pick();
    const router = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS, appData: { callId } });
    pool.retain(worker);
    return new CallRoom(callId, router, worker, pool, opts.listenIp, opts.announcedAddress);
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
   * address the gateway declared) it is connected to that address and mediasoup drops RTP from
   * anywhere else, so a stranger reaching the port first cannot take the leg. Without it, the
   * transport learns the sender from its first packet (comedia): only for in-process callers
   * (tests, benchmarks, the fixture player) that send from ports they do not know in advance.
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
    const transport = await this.router.createPlainTransport({
      listenInfo: { protocol: 'udp', ip: this.#listenIp, ...(this.#announcedAddress ? { announcedAddress: this.#announcedAddress } : {}) },
      rtcpMux: false,
      comedia: remote === undefined,
    });
    this.#transports.add(transport);
    this.#plain.set(participantId, transport);
    transport.observer.once('close', () => {
      this.#transports.delete(transport);
      if (this.#plain.get(participantId) === transport) this.#plain.delete(participantId);
    });
    if (remote !== undefined) await transport.connect({ ip: remote.ip, port: remote.rtpPort, rtcpPort: remote.rtcpPort });
    const producer = await transport.produce({
      kind: 'audio',
      rtpParameters: plainAudioRtpParameters(codec, ssrc, payloadType),
      appData: { participantId },
    });
    this.#addLeg({ participantId, producer, codec });
    return {
      ip: transport.tuple.localAddress,
      rtpPort: transport.tuple.localPort,
      rtcpPort: transport.rtcpTuple?.localPort ?? transport.tuple.localPort,
      transport,
      producer,
    };
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
