import { opusPacketSamples } from '../media/opusToc.ts';
import { RtpLegRewriter } from '../rtp/RtpLegRewriter.ts';
import type { AudioCodec } from './mediaCodecs.ts';
import { PlainRtpIngress, type IngressEvents } from './PlainRtpIngress.ts';

/**
 * A plain leg's ingress as the CallRoom sees it, wherever its sockets are read: a PlainRtpIngress
 * on the main thread, or one in the call's media thread (issue 16 item 2: the gateway's RTP read
 * by the media threads' own sockets; mediathreads/ThreadIngress.ts).
 */
export interface LegIngress {
  /** The ports the gateway sends RTP and RTCP to. */
  readonly rtpPort: number;
  readonly rtcpPort: number;
  /** The loopback address and ports the PlainTransport is connected to (it accepts nothing else). */
  readonly inner: { readonly ip: string; readonly port: number; readonly rtcpPort: number };
  /** Where packets go: the PlainTransport's loopback ports. Nothing is forwarded before. */
  attach(target: { rtpPort: number; rtcpPort: number }): void;
  close(): void;
}

/** What an ingress is opened for: plain data, so it can be handed to a media thread. */
export interface LegIngressSpec {
  readonly callId: string;
  /** Where the gateway's ports are bound. */
  readonly listenIp: string;
  /** The producer's SSRC and payload type, onto which the gateway's stream is rewritten. */
  readonly ssrc: number;
  readonly payloadType: number;
  readonly clockRate: number;
  readonly codec: AudioCodec;
  /** The gateway's declared address: RTP from anywhere else is dropped. */
  readonly remote: { readonly ip: string; readonly rtpPort: number; readonly rtcpPort: number };
}

/** Opens ingresses (the in-process one below, or the media threads'). */
export interface LegIngressFactory {
  /** `events`: drops and SSRC changes as they happen (a thread's ingress reports them in its stats instead). */
  openIngress(spec: LegIngressSpec, events: IngressEvents): Promise<LegIngress>;
}

/**
 * Can a packet of payload type `pt` be this codec renumbered (issue 19: a re-INVITE moving Opus
 * from 100 to 111)? Opus lives on dynamic types (RFC 3551 §6) and its payload starts with a valid
 * TOC (RFC 6716 §3.1); a 4-byte payload on a dynamic type is taken for an RFC 4733 event, not
 * Opus. G.711 has static types (RFC 3551 Table 4): another type is another codec, never recorded.
 */
export function sameCodec(codec: AudioCodec, pt: number, payload: Uint8Array): boolean {
  if (codec !== 'opus') return false;
  return pt >= 96 && pt <= 127 && payload.length > 4 && opusPacketSamples(payload) > 0;
}

/** The leg's rewriter (SSRC changes and payload-type renumberings onto the producer's stream). */
export function rewriterFor(spec: LegIngressSpec): RtpLegRewriter {
  return new RtpLegRewriter({ ssrc: spec.ssrc, payloadType: spec.payloadType, clockRate: spec.clockRate, sameCodec: (pt, payload) => sameCodec(spec.codec, pt, payload) });
}

/** The ingress on this thread's event loop. */
export const inProcessIngress: LegIngressFactory = {
  openIngress: (spec, events) => PlainRtpIngress.open(spec.listenIp, rewriterFor(spec), spec.remote, events),
};
