import { OptinError } from '../errors/OptinError.ts';
import type { Admission, MediaPlane, MediaSink, OpenStreamRequest, ReceiveStream } from '../siprec/MediaPlane.ts';
import type { MediaThreadPool } from './MediaThreadPool.ts';
import type { ThreadStream } from './ThreadStream.ts';

export interface ThreadedMediaPlaneOptions {
  readonly maxStreams: number;
  readonly retryAfterSeconds: number;
  /** Policy stream fresh and store writable (the recorder's readiness). */
  readonly isReady: () => boolean;
  /** Stream events (opened, held, codec, reassigned, closed) go here: the SIPREC bridge. */
  readonly sink: MediaSink;
}

/**
 * The SIPREC media plane with its sockets in the media threads: each stream is opened in the
 * thread of its call (MediaThreadPool.threadOf), where its RTP is read, filtered (source, hold,
 * payload type, SRTP) and recorded without crossing to the main thread. Admission and readiness
 * are decided here, over every thread's streams, so an overloaded recorder still answers 503.
 */
export class ThreadedMediaPlane implements MediaPlane {
  readonly #pool: MediaThreadPool;
  readonly #o: ThreadedMediaPlaneOptions;
  readonly #streams = new Set<ThreadStream>();
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
      const stream = await this.#pool.openStream(request, { onClose: () => this.#streams.delete(stream) });
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
