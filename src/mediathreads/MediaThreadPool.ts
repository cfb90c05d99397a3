import { Worker } from 'node:worker_threads';
import { OptinError } from '../errors/OptinError.ts';
import { OpenSegmentFiles } from '../media/OpenSegmentFiles.ts';
import { fnv1a, threadEntry } from '../async/threadEntry.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { DirectTrackFactory, GatedTrack, RecorderTrack } from '../recorder/RecorderTrack.ts';
import type { MediaSink, OpenStreamRequest, StreamStats } from '../siprec/MediaPlane.ts';
import { ThreadStream } from './ThreadStream.ts';
import { observeSegmentQuality, type SegmentQualityRecord } from '../media/segmentQuality.ts';
import { GateSlots, MAIN_PULSE_MS, MainPulse, SlotAllocator } from './GateSlots.ts';
import type { ContinueFrom, FromThread, IngressPorts, MediaThreadConfig, ThreadHeap, ToThread } from './protocol.ts';
import { ThreadedTrack, type TrackThread } from './ThreadedTrack.ts';
import { ThreadSegment } from './ThreadSegment.ts';
import { ThreadIngress } from './ThreadIngress.ts';
import type { LegIngress, LegIngressFactory, LegIngressSpec } from '../sfu/LegIngress.ts';
import type { S3Config } from '../storage/s3Endpoint.ts';
import { DEFAULT_BATCH_MS, DEFAULT_OLD_SPACE_MB, DEFAULT_SEALING, DEFAULT_SEMI_SPACE_MB } from './defaults.ts';

export interface MediaThreadPoolOptions {
  /** Threads to start: one per core is the intent (the main thread keeps control, API and storage). */
  readonly threads: number;
  /** Tracks that may exist at once across all threads (gate slots). */
  readonly maxTracks: number;
  /** Media port range, split evenly between the threads. */
  readonly portMin: number;
  readonly portMax: number;
  readonly bindAddress: string;
  readonly advertisedAddress?: string | undefined;
  readonly strictSourcePort?: boolean | undefined;
  readonly recvBufferBytes?: number | undefined;
  readonly tickMs?: number | undefined;
  /** Receive coalescing per thread, ms (0 = wake for every packet); see MediaThreadConfig.batchMs. */
  readonly batchMs?: number | undefined;
  /** V8 semi-space size of each thread's young generation, MB (see config mediaThreadSemiSpaceMb). */
  readonly semiSpaceMb?: number | undefined;
  /** Old generation limit of each thread, MB (see config mediaThreadOldSpaceMb). */
  readonly oldSpaceMb?: number | undefined;
  /**
   * Where open segments' closed pages wait, encrypted, one directory per thread (OpenSegmentFiles);
   * cleared at start (files of an earlier process, whose keys died with it). Undefined: memory.
   */
  readonly openSegmentDir?: string | undefined;
  readonly opus?: { readonly bitrate: number; readonly complexity: number } | undefined;
  /**
   * The store's endpoint and keys: each thread PUTs the segments it sealed itself, on its own
   * lean path. Undefined: the sealed bytes come to the main thread for its PUT (minio client).
   */
  readonly s3?: S3Config | undefined;
  /** Where finished segments are sealed and PUT: in their thread (default) or here (MediaThreadConfig.sealing). */
  readonly sealing?: 'thread' | 'main' | undefined;
  readonly logLevel?: string | undefined;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
  /** Tests: every packet's verdict as its thread read the gate (payload head, writable). */
  readonly onVerdict?: ((v: Extract<FromThread, { t: 'verdict' }>) => void) | undefined;
}

export interface MediaThread extends TrackThread {
  readonly index: number;
  readonly worker: Worker;
  readonly pending: Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>;
  loopP99Ms: number;
  cpuUs: number;
  alive: boolean;
  /** Fallbacks of its open segment files reported so far (the counter takes the difference). */
  openSegmentFallbacks: number;
  /** Finished segments it held at its last report (sealed or not, until the store is done with them). */
  heldSegments: number;
  /** Its own V8 heap at its last report. */
  heap: ThreadHeap;
}

/** What one media thread reported in its last second. */
export interface MediaThreadLoad {
  readonly index: number;
  readonly loopP99Ms: number;
  /** CPU of the thread over its last stats second, in % of one core. */
  readonly cpuPct: number;
  readonly tracks: number;
  /** Finished segments it holds until the store has them. */
  readonly heldSegments: number;
  /** The thread's own V8 heap (an isolate of its own, not in the main thread's figures). */
  readonly heap: ThreadHeap;
}

/**
 * The media plane on every core (issue 16): worker threads that each receive their streams' RTP
 * on their own sockets and run those speakers' tracks, and the one table of gate words they all
 * read per packet. The main thread keeps the decisions (policy stream, gate, admission), the API,
 * and the store's books (data keys, manifests, spool, deletion); each thread seals the segments
 * its tracks finish and PUTs them (SegmentHold), asked by the store one segment at a time.
 *
 * A call is pinned to one thread by a stable hash of its id: its streams and tracks live together,
 * so a transfer or a codec change (a new track of the same call) stays in the thread where the
 * stream's socket is.
 */
export class MediaThreadPool implements DirectTrackFactory, LegIngressFactory {
  readonly gate: GateSlots;
  readonly #slots: SlotAllocator;
  readonly #threads: MediaThread[];
  readonly #tracks = new Map<number, ThreadedTrack>();
  readonly #streamStats = new Map<number, StreamStats>();
  readonly #log: Logger;
  readonly #o: MediaThreadPoolOptions;
  #nextId = 1;
  #nextReq = 1;
  #sink: MediaSink | undefined;
  #pulseTimer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(o: MediaThreadPoolOptions, threads: MediaThread[], gate: GateSlots) {
    this.#o = o;
    this.#log = o.logger.child({ component: 'media-threads' });
    this.gate = gate;
    this.#slots = new SlotAllocator(o.maxTracks);
    this.#threads = threads;
  }

  /** Starts the threads; resolves once every one is ready to take streams. */
  static async start(o: MediaThreadPoolOptions): Promise<MediaThreadPool> {
    if (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 64) throw new OptinError('CONFIG_INVALID', `media threads must be 1..64, got ${o.threads}`);
    const span = Math.floor((o.portMax - o.portMin + 1) / o.threads);
    if (span < 4) throw new OptinError('CONFIG_INVALID', `the media port range ${o.portMin}-${o.portMax} is too small for ${o.threads} media threads (at least 4 ports each)`);
    if (o.openSegmentDir !== undefined) OpenSegmentFiles.clear(o.openSegmentDir);
    const gate = new GateSlots(o.maxTracks);
    const pulse = new MainPulse();
    pulse.beat();
    const threads: MediaThread[] = [];
    const pool = new MediaThreadPool(o, threads, gate);
    const ready: Promise<void>[] = [];
    for (let i = 0; i < o.threads; i++) {
      const portMin = o.portMin + i * span;
      const config: MediaThreadConfig = {
        index: i,
        logLevel: o.logLevel ?? 'info',
        gateBuffer: gate.buffer,
        pulseBuffer: pulse.buffer,
        portMin,
        portMax: portMin + span - 1,
        bindAddress: o.bindAddress,
        advertisedAddress: o.advertisedAddress,
        strictSourcePort: o.strictSourcePort,
        recvBufferBytes: o.recvBufferBytes,
        tickMs: o.tickMs ?? 20,
        batchMs: o.batchMs ?? DEFAULT_BATCH_MS,
        opus: o.opus ?? { bitrate: 16_000, complexity: 5 },
        traceVerdicts: o.onVerdict !== undefined,
        openSegmentDir: o.openSegmentDir,
        s3: o.s3,
        sealing: o.sealing ?? DEFAULT_SEALING,
      };
      const [entry, extra] = threadEntry(import.meta.url, 'mediaThread');
      // V8's young generation is its two semi-spaces plus as much again for new large objects.
      // The old generation's limit also sets how far V8 lets it grow between full collections.
      const resourceLimits = { maxYoungGenerationSizeMb: 3 * (o.semiSpaceMb ?? DEFAULT_SEMI_SPACE_MB), maxOldGenerationSizeMb: o.oldSpaceMb ?? DEFAULT_OLD_SPACE_MB };
      const worker = new Worker(entry, { ...extra, workerData: config, name: `optin-media-${i}`, resourceLimits });
      const thread: MediaThread = {
        index: i,
        worker,
        pending: new Map(),
        loopP99Ms: 0,
        cpuUs: 0,
        alive: true,
        openSegmentFallbacks: 0,
        heldSegments: 0,
        heap: { totalBytes: 0, usedBytes: 0, externalBytes: 0 },
        send: (msg) => worker.postMessage(msg),
        request: (make, transfer) => pool.#request(thread, make, transfer),
      };
      threads.push(thread);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.once('error', reject);
          worker.on('message', (m: FromThread) => {
            if (m.t === 'ready') {
              worker.off('error', reject);
              resolve();
            } else pool.#onMessage(thread, m);
          });
        }),
      );
      worker.on('error', (err) => pool.#onThreadError(thread, err));
      worker.on('exit', (code) => pool.#onThreadExit(thread, code));
    }
    // The main thread's pulse: a timer of this thread, so it stops when this thread stalls.
    pool.#pulseTimer = setInterval(() => pulse.beat(), MAIN_PULSE_MS);
    pool.#pulseTimer.unref();
    try {
      await Promise.all(ready);
    } catch (err) {
      clearInterval(pool.#pulseTimer);
      await Promise.allSettled(threads.map((t) => t.worker.terminate()));
      throw new OptinError('INTERNAL', `a media thread did not start: ${(err as Error).message}`);
    }
    return pool;
  }

  get threads(): number {
    return this.#threads.length;
  }

  get trackCount(): number {
    return this.#tracks.size;
  }

  #worstLoopStallMs = 0;

  /**
   * The longest any media thread's event loop was held up since the pool started (ms; reported
   * once a second). A thread reads a packet that late at worst: outside a drain's sleep, an
   * opening judges a packet by when it was read, so this is how far before an opening kept audio
   * can reach on this host.
   */
  get worstLoopStallMs(): number {
    return this.#worstLoopStallMs;
  }

  /** Each thread's last second (event-loop p99, CPU, tracks): for the metrics and the bench. */
  load(): MediaThreadLoad[] {
    const tracks = new Array<number>(this.#threads.length).fill(0);
    for (const t of this.#tracks.values()) tracks[(t.thread as MediaThread).index]!++;
    return this.#threads.map((t) => ({ index: t.index, loopP99Ms: t.loopP99Ms, cpuPct: t.cpuUs / 1e4, tracks: tracks[t.index]!, heldSegments: t.heldSegments, heap: t.heap }));
  }

  /**
   * Asks every thread for its figures now (they come once a second otherwise). `collectGarbage`:
   * each thread runs a full collection first, where the process runs with --expose-gc (the bench
   * reads private memory after one, and a thread's isolate is not collected by the main thread's).
   */
  async refreshStats(options: { collectGarbage?: boolean } = {}): Promise<void> {
    const gc = options.collectGarbage === true;
    await Promise.all(this.#threads.filter((t) => t.alive).map((t) => this.#request(t, (req) => ({ t: 'stats', req, gc }))));
  }

  /** The thread a call's streams and tracks live in. */
  threadOf(callId: string): MediaThread {
    return this.#threads[fnv1a(callId) % this.#threads.length]!;
  }

  /** Where stream events from the threads go (the SIPREC bridge). Set once, before streams open. */
  set sink(sink: MediaSink) {
    this.#sink = sink;
  }

  streamStats(sid: number): StreamStats | undefined {
    return this.#streamStats.get(sid);
  }

  forgetStream(sid: number): void {
    this.#streamStats.delete(sid);
  }

  /**
   * Opens a receive stream in the thread of its call: a SIPREC stream (its events to the sink),
   * or with `tap` a loopback stream fed by a mediasoup consumer (events kept in the thread).
   */
  async openStream(request: OpenStreamRequest, options: { tap?: boolean; onClose?: () => void } = {}): Promise<ThreadStream> {
    if (this.#closed) throw new OptinError('MEDIA_PLANE_CLOSED', 'the media threads are stopped; open streams on a running recorder');
    const thread = this.threadOf(request.callId);
    const sid = this.#nextId++;
    const local = (await thread.request((req) => ({ t: 'stream.open', sid, req, request, tap: options.tap }))) as ThreadStream['local'];
    return new ThreadStream(sid, local, thread, this, options.onClose);
  }

  /**
   * LegIngressFactory: a plain leg's ingress in its call's thread, so the gateway's RTP is read on
   * that thread's sockets (its drops and SSRC changes counted from the thread's stats, not `events`).
   */
  async openIngress(spec: LegIngressSpec): Promise<LegIngress> {
    if (this.#closed) throw new OptinError('MEDIA_PLANE_CLOSED', 'the media threads are stopped; open legs on a running recorder');
    const thread = this.threadOf(spec.callId);
    const iid = this.#nextId++;
    const ports = (await thread.request((req) => ({ t: 'ingress.open', req, iid, spec }))) as IngressPorts;
    return new ThreadIngress(thread, iid, ports);
  }

  /** DirectTrackFactory: a new track of `callId` in the call's thread, gate closed. */
  create(opts: Parameters<DirectTrackFactory['create']>[0]): GatedTrack {
    if (this.#closed) throw new OptinError('MEDIA_PLANE_CLOSED', 'the media threads are stopped; open tracks on a running recorder');
    const thread = this.threadOf(opts.callId);
    const slot = this.#slots.take();
    const word = this.gate.claim(slot);
    const id = this.#nextId++;
    const previous = opts.previous;
    let continueFrom: ContinueFrom | undefined;
    if (previous instanceof ThreadedTrack && previous.thread === thread) continueFrom = { track: previous.id };
    else if (previous !== undefined && 'continuation' in previous) continueFrom = (previous as RecorderTrack & { continuation: { nextSegment: number; position: number } }).continuation;
    const track = new ThreadedTrack({
      id,
      callId: opts.callId,
      participantId: opts.participantId,
      codec: opts.codec,
      thread,
      gate: this.gate,
      slot,
      word,
      sink: opts.sink,
      onStoreError: opts.onStoreError,
      metrics: this.#o.metrics,
      release: () => {
        this.#tracks.delete(id);
        this.gate.release(slot);
        this.#slots.give(slot);
      },
    });
    this.#tracks.set(id, track);
    thread.send({ t: 'track.open', id, slot, word, callId: opts.callId, participantId: opts.participantId, codec: opts.codec, segmentSamples: opts.segmentSamples, continueFrom });
    return track;
  }

  #request(thread: MediaThread, make: (req: number) => ToThread, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (!thread.alive) return Promise.reject(new OptinError('INTERNAL', `media thread ${thread.index} is gone`));
    const req = this.#nextReq++;
    return new Promise((resolve, reject) => {
      thread.pending.set(req, { resolve, reject });
      thread.worker.postMessage(make(req), transfer);
    });
  }

  #onMessage(thread: MediaThread, m: FromThread): void {
    switch (m.t) {
      case 'segment':
        this.#onSegment(thread, m);
        break;
      case 'done': {
        const p = thread.pending.get(m.req);
        thread.pending.delete(m.req);
        if (m.stats) this.#tracks.get(m.stats.id)?.updateStats(m.stats);
        // A PUT's failure keeps the store's own code (as the main thread's PUT would report it).
        if (m.error) p?.reject(m.error.store ? Object.assign(new Error(m.error.message), { code: m.error.code }) : new OptinError(m.error.code as 'INTERNAL', m.error.message));
        else p?.resolve(m.value);
        break;
      }
      case 'event':
        this.#sink?.event?.(m.event);
        break;
      case 'verdict':
        this.#o.onVerdict?.(m);
        break;
      case 'stats':
        for (const s of m.tracks) this.#tracks.get(s.id)?.updateStats(s);
        for (const s of m.streams) this.#streamStats.set(s.sid, s.stats);
        thread.loopP99Ms = m.loopP99Ms;
        this.#worstLoopStallMs = Math.max(this.#worstLoopStallMs, m.loopMaxMs);
        thread.cpuUs = m.cpuUs;
        thread.heldSegments = m.heldSegments;
        thread.heap = m.heap;
        this.#exportLoad(thread, m.tracks.length, m.openSegments);
        this.#exportIngress(m.ingress);
        break;
      case 'ready':
        break;
    }
  }

  #exportLoad(thread: MediaThread, tracks: number, files: { open: number; fallbacks: number } | undefined): void {
    const m = this.#o.metrics;
    if (!m) return;
    const label = { thread: String(thread.index) };
    m.mediaThreadLagSeconds.set(label, thread.loopP99Ms / 1000);
    m.mediaThreadCpuRatio.set(label, thread.cpuUs / 1e6);
    m.mediaThreadTracks.set(label, tracks);
    m.heldSegments.set(label, thread.heldSegments);
    m.mediaThreadHeapBytes.set({ ...label, kind: 'total' }, thread.heap.totalBytes);
    m.mediaThreadHeapBytes.set({ ...label, kind: 'used' }, thread.heap.usedBytes);
    m.mediaThreadHeapBytes.set({ ...label, kind: 'external' }, thread.heap.externalBytes);
    if (files !== undefined) {
      m.openSegmentFiles.set(label, files.open);
      if (files.fallbacks > thread.openSegmentFallbacks) m.openSegmentFallbacks.inc(label, files.fallbacks - thread.openSegmentFallbacks);
      thread.openSegmentFallbacks = files.fallbacks;
    }
  }

  /**
   * A finished segment, held by its thread: the store keeps the books here and has the thread seal
   * and PUT it (ThreadSegment); or, sealing on this thread, its Ogg, which the store seals and PUTs
   * here. The thread forgets it when told the outcome.
   */
  #onSegment(thread: MediaThread, m: Extract<FromThread, { t: 'segment' }>): void {
    const track = this.#tracks.get(m.id);
    const ogg = m.ogg !== undefined ? Buffer.from(m.ogg.buffer, m.ogg.byteOffset, m.ogg.byteLength) : new ThreadSegment(thread, m.req, m.oggBytes, this.#o.s3 !== undefined);
    const metrics = this.#o.metrics;
    // The track's quality figures, as an in-process track exports them (the thread has no registry);
    // late and duplicate drops, which an in-process track counts per packet, from the record too.
    const q = m.meta.quality as SegmentQualityRecord;
    if (metrics) {
      observeSegmentQuality(metrics, q);
      if (q.late > 0) metrics.packetsDropped.inc({ reason: 'late' }, q.late);
      if (q.duplicated > 0) metrics.packetsDropped.inc({ reason: 'duplicate' }, q.duplicated);
    }
    const started = performance.now();
    const put = track ? track.sink.putSegment(m.meta, ogg) : Promise.reject(new OptinError('INTERNAL', 'segment of a track the main thread no longer holds'));
    put.then(
      (res) => {
        const stored = (res as { stored?: string } | undefined)?.stored ?? 'uploaded';
        metrics?.segments.inc({ result: stored });
        if (stored === 'uploaded') metrics?.uploadSeconds.observe((performance.now() - started) / 1000);
        thread.send({ t: 'segment.done', req: m.req });
      },
      (err: Error) => {
        metrics?.segments.inc({ result: 'failed' });
        this.#log.error({ segment: m.meta.segment, err: err.message, code: (err as { code?: string }).code }, 'segment not stored');
        track?.onStoreError(err);
        thread.send({ t: 'segment.done', req: m.req, error: err.message });
      },
    );
  }

  /** The thread's ingresses' drops and SSRC changes since its last stats, as an in-process ingress counts them. */
  #exportIngress(counts: Extract<FromThread, { t: 'stats' }>['ingress']): void {
    const m = this.#o.metrics;
    if (!m) return;
    if (counts.ssrcChanges > 0) m.rtpSsrcChanges.inc(counts.ssrcChanges);
    for (const [reason, n] of Object.entries(counts.dropped)) if (n > 0) m.rtpIngressDropped.inc({ reason }, n);
  }

  #onThreadError(thread: MediaThread, err: Error): void {
    this.#log.error({ mediaThread: thread.index, err: err.message }, 'media thread failed');
  }

  /**
   * A thread that dies takes its streams and open segments with it (as a crashed process would).
   * Fail closed: every gate word of its tracks is closed and every wait on it rejected; the calls
   * end their runs and the SRC's streams time out.
   */
  #onThreadExit(thread: MediaThread, code: number): void {
    thread.alive = false;
    for (const t of this.#tracks.values()) if (t.thread === thread) t.setWritable(false);
    for (const p of thread.pending.values()) p.reject(new OptinError('INTERNAL', `media thread ${thread.index} exited (${code})`));
    thread.pending.clear();
    if (!this.#closed) this.#log.error({ mediaThread: thread.index, code }, 'media thread exited');
  }

  /** Stops every thread: streams closed, open runs sealed and their segments stored. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#threads.filter((t) => t.alive).map((t) => this.#request(t, (req) => ({ t: 'stop', req }))));
    await Promise.allSettled(this.#threads.map((t) => t.worker.terminate()));
    clearInterval(this.#pulseTimer);
  }
}
