/**
 * Messages between the main thread and a media thread (MediaThreadPool <-> mediaThread.ts).
 * Packets never cross: RTP is read by the thread's own sockets and judged there against the
 * shared gate slots. What crosses is control (a track's runs, a stream's changes), a few messages
 * per finished segment (its figures; the store's requests to seal it with a data key and PUT it,
 * from the thread: the audio stays there, SegmentHold), and a stats batch once a second.
 */
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { OpenStreamRequest, StreamCloseReason, StreamEvent, StreamStats, StreamUpdate } from '../siprec/MediaPlane.ts';
import type { SegmentAad } from '../crypto/segmentSeal.ts';
import type { LegIngressSpec } from '../sfu/LegIngress.ts';
import type { IngressDropReason } from '../sfu/PlainRtpIngress.ts';
import type { S3Config } from '../storage/s3Endpoint.ts';
import type { SegmentInput } from '../storage/types.ts';

export interface MediaThreadConfig {
  readonly index: number;
  readonly logLevel: string;
  readonly gateBuffer: SharedArrayBuffer;
  /** The main thread's pulse (MainPulse): silence keeps every gate of the thread closed. */
  readonly pulseBuffer: SharedArrayBuffer;
  /** This thread's share of the media port range (RTP even, RTCP odd). */
  readonly portMin: number;
  readonly portMax: number;
  readonly bindAddress: string;
  readonly advertisedAddress?: string | undefined;
  readonly strictSourcePort?: boolean | undefined;
  readonly recvBufferBytes?: number | undefined;
  /**
   * Receive coalescing: the thread sleeps this long between drains of its sockets (0 = wake for
   * every packet). Each wake-up costs more than reading a packet; draining every few ms reads
   * many packets per wake-up. A packet read in a drain is stamped when it is read; R4 judges it by
   * the drain's start, the earliest it can have come.
   */
  readonly batchMs: number;
  /** The thread's shared tick (jitter buffer release), as the Recorder's. */
  readonly tickMs: number;
  /** Opus encoder settings for G.711 tracks (as the TranscoderPool's). */
  readonly opus: { readonly bitrate: number; readonly complexity: number };
  /**
   * Open segments' closed pages go to encrypted files under `<openSegmentDir>/t<index>`
   * (OpenSegmentFiles); undefined keeps them in memory.
   */
  readonly openSegmentDir?: string | undefined;
  /** Tests: report every packet's verdict (the head of its payload and the gate as read). */
  readonly traceVerdicts?: boolean | undefined;
  /**
   * The store this thread PUTs its sealed segments to (the main thread's S3 endpoint and keys, on
   * the lean path); undefined: the main thread PUTs them (a store reached through the minio client).
   */
  readonly s3?: S3Config | undefined;
  /**
   * Where finished segments are sealed: 'thread' (held here, sealed and PUT here on the store's
   * word, SegmentHold) or 'main' (the Ogg moves to the main thread in the `segment` message).
   */
  readonly sealing: 'thread' | 'main';
}

/** Where a track's numbering continues from: numbers, or the same thread's earlier track of the participant. */
export type ContinueFrom = { readonly nextSegment: number; readonly position: number } | { readonly track: number };

export type ToThread =
  | {
      readonly t: 'track.open';
      readonly id: number;
      readonly slot: number;
      readonly word: number;
      readonly callId: string;
      readonly participantId: string;
      readonly codec: AudioCodec;
      readonly segmentSamples: number;
      readonly continueFrom?: ContinueFrom | undefined;
    }
  | { readonly t: 'run.start'; readonly id: number; readonly recordingId: string; readonly index: number; readonly openedAtMs: number; readonly req: number }
  | { readonly t: 'run.end'; readonly id: number; readonly nowMs: number; readonly req: number }
  | { readonly t: 'run.restart'; readonly id: number; readonly nowMs: number; readonly index: number; readonly req: number }
  | { readonly t: 'run.discard'; readonly id: number }
  | { readonly t: 'resumed'; readonly id: number; readonly atMs: number }
  | { readonly t: 'track.close'; readonly id: number; readonly nowMs: number; readonly req: number }
  | { readonly t: 'track.settled'; readonly id: number; readonly req: number }
  /** The store is done with segment `req` (stored, spooled or refused): the thread forgets it. */
  | { readonly t: 'segment.done'; readonly req: number; readonly error?: string | undefined }
  /** Seal segment `seg` with `key` (moved here, zeroed after) for `aad`; answered with its figures. */
  | { readonly t: 'segment.seal'; readonly req: number; readonly seg: number; readonly key: Uint8Array; readonly aad: SegmentAad }
  /** PUT segment `seg`'s sealed bytes with these tags and metadata (LeanPut.putWithTags). */
  | { readonly t: 'segment.put'; readonly req: number; readonly seg: number; readonly bucket: string; readonly objectKey: string; readonly tags: Record<string, string>; readonly metadata: Record<string, string> }
  /** Hand segment `seg`'s sealed bytes over (the spool). */
  | { readonly t: 'segment.take'; readonly req: number; readonly seg: number }
  /** `tap`: a loopback stream from a mediasoup consumer (an SFU leg's tap), its events kept in the thread. */
  | { readonly t: 'stream.open'; readonly sid: number; readonly req: number; readonly request: OpenStreamRequest; readonly tap?: boolean | undefined }
  | { readonly t: 'stream.update'; readonly sid: number; readonly change: StreamUpdate }
  | { readonly t: 'stream.close'; readonly sid: number; readonly reason: StreamCloseReason }
  /** A plain leg's ingress in this thread (a PlainRtpIngress: the gateway's RTP read here); answered with its ports. */
  | { readonly t: 'ingress.open'; readonly req: number; readonly iid: number; readonly spec: LegIngressSpec }
  | { readonly t: 'ingress.attach'; readonly iid: number; readonly target: { readonly rtpPort: number; readonly rtcpPort: number } }
  | { readonly t: 'ingress.close'; readonly iid: number }
  /** Post the stats now; `gc`: after a full collection (only where the process runs with --expose-gc: the bench). */
  | { readonly t: 'stats'; readonly req: number; readonly gc?: boolean | undefined }
  | { readonly t: 'stop'; readonly req: number };

/**
 * Why a request failed. `store`: the object store's answer or a socket error of a PUT from the
 * thread, whose `code` is the S3 or socket code (NoSuchBucket, ECONNREFUSED, ...), as the main
 * thread's own PUT would have reported it; otherwise an OptinError code.
 */
export interface ThreadError {
  readonly code: string;
  readonly message: string;
  readonly store?: boolean | undefined;
}

/** The ports an ingress in a media thread bound (its `ingress.open` answer). */
export interface IngressPorts {
  readonly rtpPort: number;
  readonly rtcpPort: number;
  readonly inner: { readonly ip: string; readonly port: number; readonly rtcpPort: number };
}

/** What a request is answered with: a stream's local address, a sealed segment's figures, or its sealed bytes. */
export type DoneValue = { readonly rtpPort: number; readonly rtcpPort: number; readonly address: string } | { readonly sealedBytes: number; readonly sha256: string } | Uint8Array | IngressPorts;

/** What the thread's plain-leg ingresses dropped and saw change since its last stats. */
export interface IngressCounts {
  readonly open: number;
  readonly ssrcChanges: number;
  readonly dropped: Partial<Record<IngressDropReason, number>>;
}

/** A media thread's own V8 heap (each thread is an isolate of its own; the process's figures do not show it). */
export interface ThreadHeap {
  /** Committed heap, bytes (V8's total_heap_size). */
  readonly totalBytes: number;
  /** Live objects, bytes (used_heap_size). */
  readonly usedBytes: number;
  /** ArrayBuffers and other memory outside the heap that the isolate's objects keep alive, bytes. */
  readonly externalBytes: number;
}

/** A track's counters and health (no audio, no identifiers). */
export interface TrackStats {
  readonly id: number;
  readonly counters: { received: number; written: number; writtenBytes: number; droppedClosed: number; droppedPreOpening: number; malformed: number; segments: number; timelineMs: number };
  readonly health: { jitterMs: number; lost: number; expected: number; concealedMs: number; written: number; writtenBytes: number };
}

export type FromThread =
  | { readonly t: 'ready' }
  /**
   * A finished segment of track `id`: held by the thread as segment `req` until `segment.done`, or
   * (sealing on the main thread) its Ogg moved here in `ogg`.
   */
  | { readonly t: 'segment'; readonly req: number; readonly id: number; readonly meta: SegmentInput; readonly oggBytes: number; readonly ogg?: Uint8Array | undefined }
  | { readonly t: 'done'; readonly req: number; readonly error?: ThreadError | undefined; readonly value?: DoneValue | undefined; readonly stats?: TrackStats | undefined }
  | { readonly t: 'event'; readonly event: StreamEvent }
  | { readonly t: 'verdict'; readonly callId: string; readonly participantId: string; readonly payloadHead: Uint8Array; readonly writable: boolean; readonly arrivalMs: number }
  | { readonly t: 'stats'; readonly tracks: readonly TrackStats[]; readonly streams: readonly { readonly sid: number; readonly stats: StreamStats }[]; readonly loopP99Ms: number; readonly loopMaxMs: number; readonly cpuUs: number; readonly openSegments?: { readonly open: number; readonly fallbacks: number } | undefined; readonly heldSegments: number; readonly ingress: IngressCounts; readonly heap: ThreadHeap };
