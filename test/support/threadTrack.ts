/**
 * A recording track in a real media thread, fed by a stream the test sends RTP to: the setup the
 * media-thread tests share (a ThreadedMediaPlane stream for one speaker, a track with a sink that
 * keeps each finished segment's Ogg, its run started and its gate open).
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { MediaThreadPool, type MediaThreadPoolOptions } from '../../src/mediathreads/MediaThreadPool.ts';
import { ThreadedMediaPlane } from '../../src/mediathreads/ThreadedMediaPlane.ts';
import type { StreamEvent } from '../../src/siprec/MediaPlane.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { ThreadedTrack } from '../../src/mediathreads/ThreadedTrack.ts';
import { oggOfSegment } from './heldSegment.ts';
import type { SegmentStore } from '../../src/recorder/TrackRecorder.ts';

export interface ThreadTrackSetup {
  callId: string;
  /** Where the test's RTP comes from (the stream's declared remote). */
  senderPort: number;
  recordingId: string;
  /** Receives each finished segment's Ogg. */
  stored: (ogg: Buffer) => void;
  /** Where segments go instead (a real store): `stored` is then not called. */
  sink?: SegmentStore;
  /** Store errors (default: thrown). */
  onStoreError?: (err: Error) => void;
  /** Segment length in 48 kHz samples (default 60 s). */
  segmentSamples?: number;
}

export async function openThreadTrack(pool: MediaThreadPool, plane: ThreadedMediaPlane, o: ThreadTrackSetup): Promise<{ track: ThreadedTrack; rtpPort: number }> {
  const stream = await plane.open({
    callId: o.callId,
    participantId: 'p1',
    speakers: ['p1'],
    codec: { name: 'opus', payloadType: 111, clockRate: 48_000, channels: 2 },
    remote: { address: '127.0.0.1', rtpPort: o.senderPort, rtcpPort: o.senderPort, rtcpMux: true },
    held: false,
  });
  const track = pool.create({
    callId: o.callId,
    participantId: 'p1',
    codec: 'opus',
    segmentSamples: o.segmentSamples ?? 48_000 * 60,
    sink: o.sink ?? {
      putSegment: async (meta, ogg) => {
        o.stored(await oggOfSegment(ogg, meta));
        return { stored: 'uploaded' };
      },
    },
    onStoreError:
      o.onStoreError ??
      ((err) => {
        throw err;
      }),
  }) as ThreadedTrack;
  track.startRun(o.recordingId, 0, Date.now() - 1000);
  track.setWritable(true);
  return { track, rtpPort: stream.local.rtpPort };
}

/** Media threads, a threaded media plane on them and a local UDP sender: what those tests start first. */
export interface ThreadPlane {
  pool: MediaThreadPool;
  plane: ThreadedMediaPlane;
  sender: dgram.Socket;
  close(): Promise<void>;
}

export async function startThreadPlane(
  o: Pick<MediaThreadPoolOptions, 'threads' | 'maxTracks' | 'portMin' | 'portMax' | 'openSegmentDir' | 'metrics' | 's3' | 'sealing'> & { maxStreams: number; onEvent?: (e: StreamEvent) => void },
): Promise<ThreadPlane> {
  const pool = await MediaThreadPool.start({ bindAddress: '127.0.0.1', logger: createLogger('silent'), logLevel: 'silent', threads: o.threads, maxTracks: o.maxTracks, portMin: o.portMin, portMax: o.portMax, openSegmentDir: o.openSegmentDir, metrics: o.metrics, s3: o.s3, sealing: o.sealing });
  const plane = new ThreadedMediaPlane(pool, { maxStreams: o.maxStreams, retryAfterSeconds: 1, isReady: () => true, sink: { packet: () => undefined, event: (e) => o.onEvent?.(e) } });
  const sender = dgram.createSocket('udp4');
  sender.bind(0, '127.0.0.1');
  await once(sender, 'listening');
  return {
    pool,
    plane,
    sender,
    async close() {
      sender.close();
      await plane.close();
      await pool.close();
    },
  };
}
