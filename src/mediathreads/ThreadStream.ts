import type { ReceiveStream, StreamCloseReason, StreamStats, StreamUpdate } from '../siprec/MediaPlane.ts';
import type { TrackThread } from './ThreadedTrack.ts';

/** Where a stream's figures are kept (the pool: the thread sends them once a second). */
export interface StreamStatsBook {
  streamStats(sid: number): StreamStats | undefined;
  forgetStream(sid: number): void;
}

const NO_STATS: StreamStats = Object.freeze({ packets: 0, bytes: 0, rejected: 0, rtcpPackets: 0, lastArrivalMs: 0 });

/** The main thread's handle on a stream whose socket is in a media thread. */
export class ThreadStream implements ReceiveStream {
  readonly local: { readonly address: string; readonly rtpPort: number; readonly rtcpPort: number };
  readonly #sid: number;
  readonly #thread: TrackThread;
  readonly #pool: StreamStatsBook;
  readonly #released: (() => void) | undefined;
  #closed = false;

  constructor(sid: number, local: ThreadStream['local'], thread: TrackThread, pool: StreamStatsBook, released?: () => void) {
    this.#sid = sid;
    this.local = local;
    this.#thread = thread;
    this.#pool = pool;
    this.#released = released;
  }

  /** The thread's figures, at most a second old (the SRS reads them for its media timeout). */
  get stats(): Readonly<StreamStats> {
    return this.#pool.streamStats(this.#sid) ?? NO_STATS;
  }

  update(change: StreamUpdate): void {
    if (this.#closed) return;
    this.#thread.send({ t: 'stream.update', sid: this.#sid, change });
  }

  close(reason: StreamCloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#thread.send({ t: 'stream.close', sid: this.#sid, reason });
    this.#pool.forgetStream(this.#sid);
    this.#released?.();
  }
}
