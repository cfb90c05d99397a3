import type { Logger } from '../log/logger.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { DirectTrack } from '../recorder/CallRecorder.ts';
import type { CodecChoice, MediaSink, StreamEvent } from '../siprec/MediaPlane.ts';

/** What the bridge needs from the recorder (Recorder satisfies it). */
export interface DirectTrackHost {
  openDirectTrack(callId: string, participantId: string, codec: AudioCodec): DirectTrack;
  /** The call's last stream ended (BYE, CANCEL, media timeout): end its recording. */
  detachCall(callId: string): Promise<void>;
}

const CODECS: Readonly<Partial<Record<CodecChoice['name'], AudioCodec>>> = { PCMU: 'pcmu', PCMA: 'pcma', opus: 'opus' };

interface StreamState {
  readonly codec: CodecChoice;
  readonly track: DirectTrack;
}

/**
 * The SIPREC media plane's sink, wired into the recorder: each receive stream (one participant's
 * voice, already SRTP-decrypted) becomes a direct track of its call, gated per packet exactly
 * like a tapped WebRTC or plain leg. No SFU hop: the SBC has already forked the media.
 *
 * A packet whose payload type is not the stream's negotiated one (telephone-event, comfort
 * noise, or a codec switch by re-INVITE not yet applied) is dropped here: decoded as the wrong
 * codec it would be written as noise.
 */
export class SiprecMediaBridge implements MediaSink {
  readonly #host: DirectTrackHost;
  readonly #log: Logger;
  /** callId -> participantId -> stream. */
  readonly #calls = new Map<string, Map<string, StreamState>>();
  /** Track closes in flight per call: the call ends only after the last one sealed its segment. */
  readonly #closing = new Map<string, Set<Promise<void>>>();

  constructor(host: DirectTrackHost, logger: Logger) {
    this.#host = host;
    this.#log = logger.child({ component: 'siprec-media' });
  }

  /** Streams held now. */
  get streams(): number {
    let n = 0;
    for (const c of this.#calls.values()) n += c.size;
    return n;
  }

  packet(callId: string, participantId: string, packet: Buffer, arrivalMs: number): void {
    const stream = this.#calls.get(callId)?.get(participantId);
    if (!stream || packet.length < 12 || (packet[1]! & 0x7f) !== stream.codec.payloadType) return;
    stream.track.push(packet, arrivalMs);
  }

  event(event: StreamEvent): void {
    switch (event.type) {
      case 'opened':
        this.#open(event.callId, event.participantId, event.codec);
        break;
      case 'reassigned': {
        // A transfer: the stream now carries another agent, whose voice is a new track and whose
        // gate (window, cap) is decided again. The previous speaker's track ends here.
        const previous = this.#calls.get(event.callId)?.get(event.from);
        this.#close(event.callId, event.from);
        if (previous) this.#open(event.callId, event.participantId, previous.codec);
        break;
      }
      case 'codec':
        // Another codec or payload type by re-INVITE: the participant's track goes on in a new run
        // with the new decoder (CallRecorder.openDirectTrack); packets of the old payload type
        // still in flight are dropped here, never decoded as the wrong codec.
        this.#close(event.callId, event.participantId);
        this.#open(event.callId, event.participantId, event.codec);
        break;
      case 'closed':
        this.#close(event.callId, event.participantId);
        this.#endCallIfLast(event.callId);
        break;
      case 'resumed':
      case 'renegotiated':
        // A hold is silence of its wall-clock length: the first packet after the resume (or after
        // an offer that ends a hold signalled only by silence) is placed by the arrival clock (SBCs
        // often resume the RTP timestamps where they stopped).
        this.#calls.get(event.callId)?.get(event.participantId)?.track.resumed(event.atMs);
        break;
      case 'held':
        // Nothing arrives while held (the media plane drops it); the resume places what follows.
        break;
    }
  }

  #open(callId: string, participantId: string, codec: CodecChoice): void {
    const ours = CODECS[codec.name];
    if (!ours) {
      this.#log.warn({ callId, codec: codec.name }, 'stream codec not recorded here; its packets are dropped');
      return;
    }
    let track: DirectTrack;
    try {
      track = this.#host.openDirectTrack(callId, participantId, ours);
    } catch (err) {
      this.#log.warn({ callId, err: (err as Error).message }, 'stream not put under the recorder; its packets are dropped');
      return;
    }
    let call = this.#calls.get(callId);
    if (!call) this.#calls.set(callId, (call = new Map()));
    call.set(participantId, { codec, track });
  }

  #close(callId: string, participantId: string): void {
    const call = this.#calls.get(callId);
    const state = call?.get(participantId);
    if (!call || !state) return;
    call.delete(participantId);
    const closing = state.track.close().catch((err: Error) => this.#log.warn({ callId, err: err.message }, 'track not sealed cleanly'));
    let set = this.#closing.get(callId);
    if (!set) this.#closing.set(callId, (set = new Set()));
    set.add(closing);
    void closing.finally(() => {
      set.delete(closing);
      if (set.size === 0 && this.#closing.get(callId) === set) this.#closing.delete(callId);
    });
  }

  #endCallIfLast(callId: string): void {
    const call = this.#calls.get(callId);
    if (!call || call.size > 0) return;
    this.#calls.delete(callId);
    const closing = [...(this.#closing.get(callId) ?? [])];
    void Promise.allSettled(closing)
      .then(() => (this.#calls.has(callId) ? undefined : this.#host.detachCall(callId)))
      .catch((err: Error) => this.#log.warn({ callId, err: err.message }, 'call not ended cleanly'));
  }
}
