import type { types } from 'mediasoup';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { SegmentStore } from './TrackRecorder.ts';

/**
 * One participant's track as a call drives it: runs start and end with the gate, a reconnect
 * restarts one, erasure discards it. TrackRecorder is the in-process track (SFU taps); a media
 * thread's track (src/mediathreads/ThreadedTrack.ts) is driven through the same interface from the
 * main thread while its packets never leave the thread.
 */
export interface RecorderTrack {
  readonly callId: string;
  readonly participantId: string;
  readonly codec: AudioCodec;
  /** A run is open (set synchronously by startRun, cleared by endRun and discardRun). */
  readonly recording: boolean;
  readonly counters: Readonly<{ received: number; written: number; writtenBytes: number; droppedClosed: number; droppedPreOpening: number; malformed: number; segments: number; timelineMs: number }>;
  readonly health: { jitterMs: number; lost: number; expected: number; concealedMs: number; written: number; writtenBytes: number };
  startRun(recordingId: string, index: number, openedAtMs: number): void;
  endRun(nowMs: number): Promise<void>;
  restartRun(nowMs: number, index: number): Promise<void>;
  resumedAt(atMs: number): void;
  discardRun(): void;
  tick(nowMs: number): void;
  flushMetrics(): void;
  settled(): Promise<void>;
  close(nowMs: number): Promise<void>;
}

/**
 * Makes the direct tracks of a call (SIPREC streams) when they live outside the main thread.
 * `previous`: the participant's earlier track (another codec), whose numbering the new one
 * continues; `setWritable` is how the call's gate reaches the track's packets.
 */
export interface DirectTrackFactory {
  create(opts: {
    callId: string;
    participantId: string;
    codec: AudioCodec;
    segmentSamples: number;
    sink: SegmentStore;
    onStoreError: (err: Error) => void;
    previous?: RecorderTrack | undefined;
  }): GatedTrack;
}

/** A track whose per-packet gate is written by the call (a media thread's track). */
export interface GatedTrack extends RecorderTrack {
  /** The call's verdict for this track's packets from now on (a closing effective on the next packet). */
  setWritable(writable: boolean): void;
  /** An opening not yet in effect (the media thread has not confirmed the run it opens for). */
  readonly opening: boolean;
}

/** An SFU leg's tap into a media thread, set up but not yet sending (see ThreadTaps). */
export interface PendingTap {
  readonly consumer: types.Consumer;
  /** Starts the packets (after the call put the leg's track in place in the thread). */
  connect(): Promise<void>;
  /** Stops the tap: consumer, transport and the thread's socket. */
  close(): void;
}

/**
 * Taps SFU legs into the media threads (src/mediathreads/ThreadTap.ts) instead of a
 * DirectTransport on the main thread: the call's tracks are then GatedTracks of the same thread.
 */
export interface ThreadTaps {
  tap(router: types.Router, callId: string, participantId: string, producerId: string, codec: AudioCodec): Promise<PendingTap>;
}
