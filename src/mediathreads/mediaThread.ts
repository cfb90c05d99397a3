/**
 * Body of one media thread (see MediaThreadPool). It owns the UDP sockets of the streams pinned
 * to it (a UdpMediaPlane of its own, on its share of the port range) and the TrackRecorders of
 * their speakers: RTP in, the gate read from shared memory per packet, jitter buffer, G.711
 * framing and Opus encoding (its own libopus), segmenter and Ogg; and the ingress of its calls'
 * plain legs. A finished segment goes to the main thread's store, which keeps the books (data
 * keys, manifest, deletion tombstones, spool): its Ogg moved there in one message (sealing 'main',
 * the default), or held here and sealed and PUT here on the store's word (sealing 'thread',
 * SegmentHold; only a segment bound for the spool then crosses, sealed). The put's outcome comes
 * back so the track knows when it is settled.
 *
 * Nothing here decides whether to record: the main thread writes each track's gate word; a packet
 * is kept only while its word reads open (GateSlots), checked before anything else is done.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { GateSlots, MainPulse } from './GateSlots.ts';
import type { ContinueFrom, FromThread, MediaThreadConfig, ThreadError, ThreadHeap, ToThread, TrackStats } from './protocol.ts';
import { TrackRecorder, type OpusEncoderPool } from '../recorder/TrackRecorder.ts';
import { OpusWasmEncoder } from '../media/OpusWasmEncoder.ts';
import { TRANSCODER_PRE_SKIP_48K } from '../media/TranscoderPool.ts';
import { UdpMediaPlane } from '../siprec/UdpMediaPlane.ts';
import type { CodecChoice, MediaSink, ReceiveStream, StreamEvent } from '../siprec/MediaPlane.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import { createLogger } from '../log/logger.ts';
import { OpenSegmentFiles } from '../media/OpenSegmentFiles.ts';
import { OGG_BLOCKS } from '../media/OggOpusWriter.ts';
import { join } from 'node:path';
import { isOptinError } from '../errors/OptinError.ts';
import { SegmentHold } from './SegmentHold.ts';
import { ownsItsMemory } from '../media/discardBytes.ts';
import { PlainRtpIngress, type IngressDropReason } from '../sfu/PlainRtpIngress.ts';
import { rewriterFor, type LegIngressSpec } from '../sfu/LegIngress.ts';

const config = workerData as MediaThreadConfig;
const port = parentPort!;
const gate = new GateSlots(config.gateBuffer);
const pulse = new MainPulse(config.pulseBuffer);
/** Read on the tick and before each batch: false while the main thread has been silent too long. */
let mainFresh = true;
let mainSilences = 0;
function checkPulse(now: number): void {
  const fresh = pulse.fresh(now);
  if (!fresh && mainFresh) {
    mainSilences++;
    log.warn({ silences: mainSilences }, 'main thread silent: nothing is kept until it is heard again');
  }
  mainFresh = fresh;
}
const log = createLogger(config.logLevel).child({ mediaThread: config.index });
/** Open segments' closed pages: encrypted files of this thread's own directory, or memory. */
const openSegments =
  config.openSegmentDir === undefined
    ? undefined
    : new OpenSegmentFiles({
        dir: join(config.openSegmentDir, `t${config.index}`),
        pool: OGG_BLOCKS,
        // The path names a counter, never a call or a speaker.
        onFallback: (err) => log.warn({ err: err.message }, 'an open segment file could not be written: its segment stays in memory'),
      });
const pageStore = openSegments ? () => openSegments.create() : undefined;
/** Finished segments until the store is done with them (sealing 'thread'); PUT from here when the thread has the store's endpoint. */
const held = new SegmentHold(config.s3, { maxSockets: 16 });

interface ThreadTrack {
  readonly id: number;
  readonly slot: number;
  readonly word: number;
  readonly callId: string;
  readonly participantId: string;
  readonly codec: AudioCodec;
  readonly rec: TrackRecorder;
}

const tracks = new Map<number, ThreadTrack>();
/**
 * Per speaker (callId -> participantId): the current track, where that speaker's stream delivers,
 * and the codec the stream carries now (from the plane's events). Two lookups on the stream's own
 * id strings per packet (their hashes cached), no key built per packet.
 */
interface Speaker {
  track: ThreadTrack | undefined;
  codec: AudioCodec | undefined;
}
const speakers = new Map<string, Map<string, Speaker>>();
function speaker(callId: string, participantId: string): Speaker {
  let call = speakers.get(callId);
  if (!call) speakers.set(callId, (call = new Map()));
  let sp = call.get(participantId);
  if (!sp) call.set(participantId, (sp = { track: undefined, codec: undefined }));
  return sp;
}
function forget(callId: string, participantId: string): void {
  const call = speakers.get(callId);
  const sp = call?.get(participantId);
  if (!call || !sp || sp.track !== undefined || sp.codec !== undefined) return;
  call.delete(participantId);
  if (call.size === 0) speakers.delete(callId);
}
const streams = new Map<number, ReceiveStream>();
const pendingSegments = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
/** How long a stop waits for the store's word on the segments still pending (the store's own PUT deadline is 5 s). */
const STOP_SEGMENTS_WAIT_MS = 15_000;

/** Told when the last pending segment got the store's word (a stop waiting for it). */
let onSegmentsSettled: (() => void) | undefined;

/** Resolves once no segment waits for the store's word (`segment.done`), or after `timeoutMs` (logged). */
async function segmentsSettled(timeoutMs: number): Promise<void> {
  if (pendingSegments.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  const settled = await new Promise<boolean>((resolve) => {
    onSegmentsSettled = () => resolve(true);
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  clearTimeout(timer);
  onSegmentsSettled = undefined;
  if (!settled) log.error({ segments: pendingSegments.size }, 'stopping with segments the store did not confirm; they are lost with this thread');
}
let nextReq = 1;

const CODECS: Readonly<Partial<Record<CodecChoice['name'], AudioCodec>>> = { PCMU: 'pcmu', PCMA: 'pcma', opus: 'opus' };

function post(msg: FromThread, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

/** G.711 -> Opus in this thread: one libopus encoder per stream, synchronous (no second hop). */
const encoders = new Map<string, OpusWasmEncoder>();
const encoder: OpusEncoderPool = {
  preSkip: TRANSCODER_PRE_SKIP_48K,
  encode(streamId, pcm) {
    let enc = encoders.get(streamId);
    if (!enc) {
      enc = new OpusWasmEncoder({ sampleRate: 8000, bitrate: config.opus.bitrate, complexity: config.opus.complexity });
      encoders.set(streamId, enc);
    }
    return Promise.resolve(enc.encode(pcm));
  },
  closeStream(streamId) {
    encoders.get(streamId)?.close();
    encoders.delete(streamId);
  },
};

/**
 * Received media: the thread's own sockets deliver here; nothing crosses to the main thread.
 * Stream events go to the main thread (the SIPREC bridge), except a tap's (`quiet`): a tap's
 * stream is the call recorder's own plumbing.
 */
const makeSink = (quiet: boolean): MediaSink => ({
  packet(callId, participantId, packet, arrivalMs) {
    const sp = speakers.get(callId)?.get(participantId);
    const track = sp?.track;
    // A packet of a codec the track was not opened for (a re-INVITE's switch whose new track is
    // not here yet) is never decoded as the wrong codec.
    if (track === undefined || sp!.codec !== track.codec) return;
    const writable = mainFresh && gate.isOpen(track.slot, track.word);
    if (config.traceVerdicts) post({ t: 'verdict', callId, participantId, payloadHead: packet.subarray(12, 44).slice(), writable, arrivalMs });
    track.rec.onRtp(packet, arrivalMs, writable, batchStartMs ?? arrivalMs);
  },
  event(event: StreamEvent) {
    if (event.type === 'opened' || event.type === 'codec') speaker(event.callId, event.participantId).codec = CODECS[event.codec.name];
    else if (event.type === 'reassigned') {
      const from = speaker(event.callId, event.from);
      speaker(event.callId, event.participantId).codec = from.codec;
      from.codec = undefined;
      forget(event.callId, event.from);
    } else if (event.type === 'closed') {
      speaker(event.callId, event.participantId).codec = undefined;
      forget(event.callId, event.participantId);
    } else if (event.type === 'resumed' || event.type === 'renegotiated') {
      // Applied here, where the stream is, before the next packet of the resumed stream: the hold
      // becomes silence of its wall-clock length (the main thread's copy of the event is not needed
      // for it, and would come after the first packets).
      speakers.get(event.callId)?.get(event.participantId)?.track?.rec.resumedAt(event.atMs);
    }
    if (!quiet) post({ t: 'event', event });
  },
});

/**
 * Receive coalescing (see MediaThreadConfig.batchMs): a timer puts the thread to sleep for
 * `batchMs`; the kernel queues the packets meanwhile, and the poll phase right after reads them
 * all in one wake-up. A closing written during the sleep is read before the first of them (the gate
 * word is loaded per packet). Two times per packet: when it was read (its stamp: never before it
 * came, so a track's start is never placed early) and the sleep's start (the earliest it can have
 * come: R4 judges by it, so a gate that opened during the sleep keeps none of them). Stamping
 * packets with the sleep's start alone put a track's start up to the sleep plus any preemption
 * early: 106 ms before consent in one full .ci/run, and two speakers 31 ms apart in another.
 */
let batchStartMs: number | undefined;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const endBatch = (): void => {
  batchStartMs = undefined;
};
const batchTimer =
  config.batchMs > 0
    ? setInterval(() => {
        batchStartMs = Date.now();
        Atomics.wait(sleeper, 0, 0, config.batchMs);
        checkPulse(Date.now());
        // Runs in the check phase, right after the poll phase that read the batch.
        setImmediate(endBatch);
      }, config.batchMs + 1)
    : undefined;

const plane = new UdpMediaPlane({
  bindAddress: config.bindAddress,
  advertisedAddress: config.advertisedAddress,
  portMin: config.portMin,
  portMax: config.portMax,
  // Admission and readiness are the main thread's (it counts every thread's streams).
  maxStreams: Number.MAX_SAFE_INTEGER,
  retryAfterSeconds: 1,
  isReady: () => true,
  strictSourcePort: config.strictSourcePort,
  recvBufferBytes: config.recvBufferBytes,
  sink: makeSink(false),
});

/** Taps of SFU legs: a mediasoup PlainTransport consumer per leg sends here, on loopback. */
const tapPlane = new UdpMediaPlane({
  bindAddress: '127.0.0.1',
  portMin: 0,
  portMax: 0,
  ephemeralPorts: true,
  maxStreams: Number.MAX_SAFE_INTEGER,
  retryAfterSeconds: 1,
  isReady: () => true,
  recvBufferBytes: config.recvBufferBytes,
  sink: makeSink(true),
});

function continuation(from: ContinueFrom | undefined): { nextSegment: number; position: number } | undefined {
  if (from === undefined) return undefined;
  if ('track' in from) return tracks.get(from.track)?.rec.continuation;
  return from;
}

function openTrack(m: Extract<ToThread, { t: 'track.open' }>): void {
  const continueFrom = continuation(m.continueFrom);
  const rec = new TrackRecorder({
    callId: m.callId,
    participantId: m.participantId,
    codec: m.codec,
    segmentSamples: m.segmentSamples,
    ...(pageStore ? { pageStore } : {}),
    encoder,
    logger: log.child({ callId: m.callId }),
    // The put's failure is seen (and acted on: the gate) by the main thread, where the store is.
    onStoreError: () => undefined,
    sink: {
      putSegment(meta, ogg) {
        const req = nextReq++;
        // A segment's Ogg is a buffer of its own (Segmenter concatenates pages): kept, not copied.
        const own = ownsItsMemory(ogg);
        return new Promise<void>((resolve, reject) => {
          pendingSegments.set(req, { resolve, reject });
          if (config.sealing === 'main') {
            const bytes = own ? new Uint8Array(ogg.buffer, 0, ogg.byteLength) : new Uint8Array(ogg);
            post({ t: 'segment', req, id: m.id, meta, oggBytes: bytes.byteLength, ogg: bytes }, [bytes.buffer as ArrayBuffer]);
          } else {
            held.hold(req, own ? ogg : Buffer.from(ogg));
            post({ t: 'segment', req, id: m.id, meta, oggBytes: ogg.length });
          }
        });
      },
    },
    ...(continueFrom ? { continueFrom } : {}),
  });
  const track: ThreadTrack = { id: m.id, slot: m.slot, word: m.word, callId: m.callId, participantId: m.participantId, codec: m.codec, rec };
  tracks.set(m.id, track);
  speaker(m.callId, m.participantId).track = track;
}

/**
 * Plain legs' ingresses of this thread's calls (issue 16 item 2): the gateway's RTP is read on
 * these sockets, checked against its declared source, rewritten onto the producer's stream and
 * sent on to the leg's PlainTransport over loopback. Media is forwarded whatever the gate says
 * (R5): the ingress is the call's path, not the recorder's.
 */
const ingresses = new Map<number, PlainRtpIngress>();
/** Since the last stats: counted here, exported by the main thread (optin_rtp_ingress_dropped_total, optin_rtp_ssrc_changes_total). */
let ingressSsrcChanges = 0;
let ingressDropped: Partial<Record<IngressDropReason, number>> = {};

function openIngress(req: number, iid: number, spec: LegIngressSpec): void {
  PlainRtpIngress.open(spec.listenIp, rewriterFor(spec), spec.remote, {
    onSsrcChange: () => void ingressSsrcChanges++,
    onDrop: (reason, n) => void (ingressDropped[reason] = (ingressDropped[reason] ?? 0) + n),
  }).then(
    (ingress) => {
      ingresses.set(iid, ingress);
      post({ t: 'done', req, value: { rtpPort: ingress.rtpPort, rtcpPort: ingress.rtcpPort, inner: ingress.inner } });
    },
    (err: Error) => post({ t: 'done', req, error: threadError(err) }),
  );
}

/** Answers request `req` when `p` settles; `answer` adds to the reply what is current then. */
function done(req: number, p: Promise<unknown>, answer?: () => { stats?: TrackStats }): void {
  p.then(
    () => post({ t: 'done', req, ...answer?.() }),
    (err: Error) => post({ t: 'done', req, error: threadError(err) }),
  );
}

function threadError(err: Error): ThreadError {
  return { code: isOptinError(err) ? err.code : 'INTERNAL', message: err.message };
}

/** The store's requests on a held segment (see SegmentHold). */
function onSegmentRequest(m: Extract<ToThread, { t: 'segment.seal' | 'segment.put' | 'segment.take' }>): void {
  try {
    if (m.t === 'segment.seal') {
      post({ t: 'done', req: m.req, value: held.seal(m.seg, m.key, m.aad) });
    } else if (m.t === 'segment.take') {
      const bytes = held.take(m.seg);
      post({ t: 'done', req: m.req, value: bytes }, [bytes.buffer as ArrayBuffer]);
    } else {
      held.put(m.seg, m.bucket, m.objectKey, m.tags, m.metadata).then(
        () => post({ t: 'done', req: m.req }),
        // The store's answer or the socket's error, with its own code (the uploader logs it and spools).
        (err: Error & { code?: unknown }) =>
          post({ t: 'done', req: m.req, error: isOptinError(err) ? threadError(err) : { code: typeof err.code === 'string' ? err.code : 'INTERNAL', message: err.message, store: true } }),
      );
    }
  } catch (err) {
    post({ t: 'done', req: m.req, error: threadError(err as Error) });
  }
}

function statsOf(t: ThreadTrack): TrackStats {
  return { id: t.id, counters: { ...t.rec.counters }, health: t.rec.health };
}

/** Closes a track (its run sealed, its segments settled); resolves with its final figures. */
async function closeTrack(id: number, nowMs: number): Promise<TrackStats | undefined> {
  const track = tracks.get(id);
  if (!track) return undefined;
  const sp = speakers.get(track.callId)?.get(track.participantId);
  if (sp?.track === track) {
    sp.track = undefined;
    forget(track.callId, track.participantId);
  }
  try {
    await track.rec.close(nowMs);
  } finally {
    tracks.delete(id);
  }
  return statsOf(track);
}

port.on('message', (m: ToThread) => {
  switch (m.t) {
    case 'track.open':
      openTrack(m);
      break;
    case 'run.start':
      tracks.get(m.id)?.rec.startRun(m.recordingId, m.index, m.openedAtMs);
      post({ t: 'done', req: m.req });
      break;
    case 'run.end': {
      // Answered with the track's figures as the run left them (the periodic ones are up to a second old).
      const track = tracks.get(m.id);
      done(m.req, track?.rec.endRun(m.nowMs) ?? Promise.resolve(), () => (track ? { stats: statsOf(track) } : {}));
      break;
    }
    case 'run.restart':
      done(m.req, tracks.get(m.id)?.rec.restartRun(m.nowMs, m.index) ?? Promise.resolve());
      break;
    case 'run.discard':
      tracks.get(m.id)?.rec.discardRun();
      break;
    case 'resumed':
      tracks.get(m.id)?.rec.resumedAt(m.atMs);
      break;
    case 'track.close':
      closeTrack(m.id, m.nowMs).then(
        (stats) => post({ t: 'done', req: m.req, stats }),
        (err: Error) => post({ t: 'done', req: m.req, error: threadError(err) }),
      );
      break;
    case 'track.settled':
      done(m.req, tracks.get(m.id)?.rec.settled() ?? Promise.resolve());
      break;
    case 'segment.seal':
    case 'segment.put':
    case 'segment.take':
      onSegmentRequest(m);
      break;
    case 'segment.done': {
      const p = pendingSegments.get(m.req);
      pendingSegments.delete(m.req);
      held.release(m.req);
      if (m.error === undefined) p?.resolve();
      else p?.reject(new Error(m.error));
      if (pendingSegments.size === 0) onSegmentsSettled?.();
      break;
    }
    case 'stream.open':
      (m.tap ? tapPlane : plane).open(m.request).then(
        (stream) => {
          streams.set(m.sid, stream);
          post({ t: 'done', req: m.req, value: stream.local });
        },
        (err: Error) => post({ t: 'done', req: m.req, error: threadError(err) }),
      );
      break;
    case 'stream.update':
      streams.get(m.sid)?.update(m.change);
      break;
    case 'stream.close':
      streams.get(m.sid)?.close(m.reason);
      streams.delete(m.sid);
      break;
    case 'ingress.open':
      openIngress(m.req, m.iid, m.spec);
      break;
    case 'ingress.attach':
      ingresses.get(m.iid)?.attach(m.target);
      break;
    case 'ingress.close':
      ingresses.get(m.iid)?.close();
      ingresses.delete(m.iid);
      break;
    case 'stats':
      if (m.gc) (globalThis as { gc?: () => void }).gc?.();
      postStats();
      post({ t: 'done', req: m.req });
      break;
    case 'stop':
      done(
        m.req,
        (async () => {
          await plane.close();
          await tapPlane.close();
          for (const ingress of ingresses.values()) ingress.close();
          ingresses.clear();
          streams.clear();
          const now = Date.now();
          await Promise.allSettled([...tracks.keys()].map((id) => closeTrack(id, now)));
          // The store may still be sealing or PUTting segments this thread holds (a call that
          // ended just before the stop): the thread lives until it has the store's word on each.
          await segmentsSettled(STOP_SEGMENTS_WAIT_MS);
          clearInterval(tickTimer);
          if (batchTimer) clearInterval(batchTimer);
          clearInterval(statsTimer);
          held.close();
        })(),
      );
      break;
  }
});

// One tick for every track of this thread (no per-stream timers).
const tickTimer = setInterval(() => {
  const now = Date.now();
  checkPulse(now);
  for (const t of tracks.values()) t.rec.tick(now);
}, config.tickMs);

const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
let lastCpu = process.threadCpuUsage?.() ?? { user: 0, system: 0 };
function postStats(): void {
  const trackStats: TrackStats[] = [];
  for (const t of tracks.values()) trackStats.push(statsOf(t));
  const streamStats = [...streams].map(([sid, s]) => ({ sid, stats: { ...s.stats } }));
  const cpu = process.threadCpuUsage?.() ?? { user: 0, system: 0 };
  const cpuUs = cpu.user + cpu.system - lastCpu.user - lastCpu.system;
  lastCpu = cpu;
  // Node's histogram counts the whole interval between two wake-ups of its 10 ms timer.
  const loopP99Ms = Math.max(0, loopDelay.percentile(99) / 1e6 - 10);
  const loopMaxMs = Math.max(0, loopDelay.max / 1e6 - 10);
  loopDelay.reset();
  const ingress = { open: ingresses.size, ssrcChanges: ingressSsrcChanges, dropped: ingressDropped };
  ingressSsrcChanges = 0;
  ingressDropped = {};
  post({ t: 'stats', tracks: trackStats, streams: streamStats, loopP99Ms, loopMaxMs, cpuUs, openSegments: openSegments?.stats, heldSegments: held.size, ingress, heap: heapOf() });
}
function heapOf(): ThreadHeap {
  const h = getHeapStatistics();
  return { totalBytes: h.total_heap_size, usedBytes: h.used_heap_size, externalBytes: h.external_memory };
}
const statsTimer = setInterval(postStats, 1000);

post({ t: 'ready' });
