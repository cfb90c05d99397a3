import { OptinError } from '../errors/OptinError.ts';
import type { Admission, MediaPlane, MediaSink, OpenStreamRequest, ReceiveStream, StreamCloseReason, StreamStats, StreamUpdate } from '../siprec/MediaPlane.ts';
import type { MediaThread, MediaThreadPool } from './MediaThreadPool.ts';

export interface ThreadedMediaPlaneOptions {
  readonly maxStreams: number;
  readonly retryAfterSeconds: number;
  /** Policy stream fresh and store writable (the recorder's readiness). */
  readonly isReady: () => boolean;
  /** Stream events (opened, held, codec, reassigned, closed) go here: the SIPREC bridge. */
  readonly sink: MediaSink;
}

const NO_STATS: StreamStats = Object.freeze({ packets: 0, bytes: 0, rejected: 0, rtcpPackets: 0, lastArrivalMs: 0 });

/**
 * The SIPREC media plane with its sockets in the media threads: each stream is opened in the
 * thread of its call (MediaThreadPool.threadOf), where its RTP is read, filtered (source, hold,
 * payload type, SRTP) and recorded without crossing to the main thread. Admission and readiness
 * are decided here, over every thread's streams, so an overloaded recorder still answers 503.
 */
export class ThreadedMediaPlane implements MediaPlane {
  readonly #pool: MediaThreadPool;
  readonly #o: ThreadedMediaPlaneOptions;
  readonly #streams = new Set<ThreadedStream>();
  #opening = 0;
  #draining = false;
  #closed = false;

  constructor(pool: MediaThreadPool, o: ThreadedMediaPlaneOptions) {
    this.#pool = pool;
    this.#o = o;
    pool.sink = o.sink;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  admit(streams: number): Admission {
    const retryAfterSeconds = this.#o.retryAfterSeconds;
    if (this.#draining || this.#closed) return { ok: false, reason: 'draining', retryAfterSeconds };
    if (!this.#o.isReady()) return { ok: false, reason: 'not-ready', retryAfterSeconds };
    if (this.#streams.size + this.#opening + streams > this.#o.maxStreams) return { ok: false, reason: 'streams', retryAfterSeconds };
    return { ok: true };
  }

  ready(): boolean {
    return !this.#draining && !this.#closed && this.#o.isReady();
  }

  drain(): void {
    this.#draining = true;
  }

  async open(request: OpenStreamRequest): Promise<ReceiveStream> {
    if (this.#closed) throw new OptinError('MEDIA_PLANE_CLOSED', 'the media plane is closed; open streams on a running recorder');
    if (this.#streams.size + this.#opening >= this.#o.maxStreams) {
      throw new OptinError('MEDIA_PORTS_EXHAUSTED', `stream ceiling of ${this.#o.maxStreams} reached; raise siprec.media.maxStreams or add recorders`);
    }
    this.#opening++;
    try {
      const thread = this.#pool.threadOf(request.callId);
      const sid = this.#pool.nextStreamId();
      const local = (await thread.request((req) => ({ t: 'stream.open', sid, req, request }))) as ThreadedStream['local'];
      const stream = new ThreadedStream(sid, local, thread, this.#pool, () => this.#streams.delete(stream));
      if (this.#closed) {
        stream.close('shutdown');
        throw new OptinError('MEDIA_PLANE_CLOSED', 'the media plane closed while a stream was opening');
      }
      this.#streams.add(stream);
      return stream;
    } finally {
      this.#opening--;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#streams]) s.close('shutdown');
  }
}

/** The main thread's handle on a stream whose socket is in a media thread. */
class ThreadedStream implements ReceiveStream {
  readonly local: { readonly address: string; readonly rtpPort: number; readonly rtcpPort: number };
  readonly #sid: number;
  readonly #thread: MediaThread;
  readonly #pool: MediaThreadPool;
  readonly #released: () => void;
  #closed = false;

  constructor(sid: number, local: ThreadedStream['local'], thread: MediaThread, pool: MediaThreadPool, released: () => void) {
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
    this.#released();
  }
}
