/**
 * The boundary between the recording server (signalling) and the media plane (RTP in, gate,
 * tracks). The SRS asks for one receive stream per recorded m-line and tells the media plane
 * about hold, remote changes, a new speaker on a stream (a transfer) and the end; the media plane
 * delivers packets to a sink keyed by the control plane's (callId, participantId).
 *
 * Today's implementation is UdpMediaPlane (node:dgram sockets on the main thread). Issue 16 moves
 * the sockets into worker threads behind this same interface.
 */

export type AudioCodecName = 'PCMU' | 'PCMA' | 'opus' | 'G722';

export interface CodecChoice {
  readonly name: AudioCodecName;
  readonly payloadType: number;
  /** RTP clock rate (8000 for G.711 and, by RFC 3551's historical error, G.722; 48000 for Opus). */
  readonly clockRate: number;
  readonly channels: number;
}

export interface RemoteMedia {
  /** The address the SDP declared (c=); packets from any other address are dropped. */
  readonly address: string;
  readonly rtpPort: number;
  /** RTCP port (a=rtcp or RTP+1, RFC 3605); equal to rtpPort with rtcp-mux (RFC 5761). */
  readonly rtcpPort: number;
  readonly rtcpMux: boolean;
}

/** SDES keying (RFC 4568) for SRTP (RFC 3711): the SRC's master key and salt it sends with. */
export interface SdesKey {
  readonly suite: 'AES_CM_128_HMAC_SHA1_80' | 'AES_CM_128_HMAC_SHA1_32';
  /** 16-byte master key followed by the 14-byte master salt. */
  readonly keySalt: Buffer;
}

export interface OpenStreamRequest {
  readonly callId: string;
  /** The participant whose voice this stream is (the track's owner). */
  readonly participantId: string;
  /**
   * Everyone whose voice the stream carries: `[participantId]` normally; more when one m-line
   * carries a mix of several participants (the gate must then hold for all of them).
   */
  readonly speakers: readonly string[];
  readonly codec: CodecChoice;
  readonly remote: RemoteMedia;
  readonly srtp?: SdesKey | undefined;
  /** Starts on hold (inactive): packets are dropped until resumed. */
  readonly held: boolean;
}

export interface StreamUpdate {
  /** Hold (a=inactive / c=0.0.0.0) or resume. A hold is silence of its wall-clock length for the recorder. */
  readonly held?: boolean | undefined;
  readonly remote?: RemoteMedia | undefined;
  readonly codec?: CodecChoice | undefined;
  readonly srtp?: SdesKey | undefined;
  /**
   * The stream now carries another participant (a transfer to another agent): packets after this
   * call are delivered under the new id, which the recorder treats as a new track.
   */
  readonly participantId?: string | undefined;
  readonly speakers?: readonly string[] | undefined;
}

export interface StreamStats {
  packets: number;
  bytes: number;
  /** Dropped: wrong source, while held, not RTP, failed SRTP authentication. */
  rejected: number;
  rtcpPackets: number;
  lastArrivalMs: number;
}

export interface ReceiveStream {
  /** Where the SRC must send: put in our SDP answer. */
  readonly local: { readonly address: string; readonly rtpPort: number; readonly rtcpPort: number };
  readonly stats: Readonly<StreamStats>;
  update(change: StreamUpdate): void;
  close(reason: StreamCloseReason): void;
}

export type StreamCloseReason = 'bye' | 'removed' | 'cancelled' | 'ack-timeout' | 'shutdown' | 'media-timeout' | 'error';

export type Admission = { readonly ok: true } | { readonly ok: false; readonly reason: 'streams' | 'not-ready' | 'draining'; readonly retryAfterSeconds: number };

export interface MediaPlane {
  /** May `streams` more streams be opened now? A refusal becomes 503 + Retry-After. */
  admit(streams: number): Admission;
  /** Ready to record (policy stream fresh, store or spool writable): OPTIONS answers 200 only then. */
  ready(): boolean;
  open(request: OpenStreamRequest): Promise<ReceiveStream>;
  close(): Promise<void>;
}

/** Stream lifecycle as the recorder needs it (a hold is silence by wall clock, never compressed). */
export type StreamEvent =
  | {
      readonly type: 'opened';
      readonly callId: string;
      readonly participantId: string;
      readonly speakers: readonly string[];
      readonly codec: CodecChoice;
      /** SRTP (SDES) protects the stream; packets reach the sink decrypted. */
      readonly srtp: boolean;
      readonly atMs: number;
    }
  | { readonly type: 'held' | 'resumed'; readonly callId: string; readonly participantId: string; readonly atMs: number }
  /**
   * An offer (re-INVITE, UPDATE) described the live stream again without putting it on hold: the
   * SRC may have paused its media without saying `inactive` (a hold it signals by keeping
   * `sendonly` and stopping the RTP) and resumes it now. What arrives next is placed by the arrival
   * clock, like after `resumed`.
   */
  | { readonly type: 'renegotiated'; readonly callId: string; readonly participantId: string; readonly atMs: number }
  | { readonly type: 'reassigned'; readonly callId: string; readonly from: string; readonly participantId: string; readonly speakers: readonly string[]; readonly atMs: number }
  | { readonly type: 'codec'; readonly callId: string; readonly participantId: string; readonly codec: CodecChoice; readonly atMs: number }
  | { readonly type: 'closed'; readonly callId: string; readonly participantId: string; readonly reason: StreamCloseReason; readonly atMs: number };

/** Where received media goes: the lead wires this into the per-packet gate and TrackRecorder. */
export interface MediaSink {
  /** One RTP packet (already SRTP-decrypted when SDES was negotiated), with its arrival time (Date.now()). */
  packet(callId: string, participantId: string, packet: Buffer, arrivalMs: number): void;
  /** One RTCP packet (compound), for sender reports and statistics. Optional. */
  rtcp?(callId: string, participantId: string, packet: Buffer, arrivalMs: number): void;
  event?(event: StreamEvent): void;
}
