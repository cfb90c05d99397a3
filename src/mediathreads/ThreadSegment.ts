import type { SegmentAad } from '../crypto/segmentSeal.ts';
import type { HeldSegment } from '../storage/types.ts';
import type { TrackThread } from './ThreadedTrack.ts';

/**
 * The main thread's handle on a finished segment a media thread holds (SegmentHold there): what
 * the store calls to have it sealed, PUT, or brought here for the spool (storage/types.ts
 * HeldSegment). Each call is one request to the thread; the data key goes there as a copy moved
 * with the message (none stays here), and is zeroed there once the segment is sealed.
 */
export class ThreadSegment implements HeldSegment {
  readonly oggBytes: number;
  readonly put: HeldSegment['put'];
  readonly #thread: TrackThread;
  readonly #seg: number;
  #taken: Promise<Buffer> | undefined;

  /** `seg`: the thread's number for the segment; `canPut`: the thread PUTs to the store itself. */
  constructor(thread: TrackThread, seg: number, oggBytes: number, canPut: boolean) {
    this.#thread = thread;
    this.#seg = seg;
    this.oggBytes = oggBytes;
    this.put = canPut
      ? async (bucket, objectKey, tags, metadata) => {
          await thread.request((req) => ({ t: 'segment.put', req, seg, bucket, objectKey, tags, metadata }));
        }
      : undefined;
  }

  async seal(dataKey: Buffer, aad: SegmentAad): Promise<{ sealedBytes: number; sha256: string }> {
    const key = new Uint8Array(dataKey);
    return (await this.#thread.request((req) => ({ t: 'segment.seal', req, seg: this.#seg, key, aad }), [key.buffer])) as { sealedBytes: number; sha256: string };
  }

  take(): Promise<Buffer> {
    this.#taken ??= this.#thread.request((req) => ({ t: 'segment.take', req, seg: this.#seg })).then((v) => {
      const bytes = v as Uint8Array;
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    });
    return this.#taken;
  }
}
