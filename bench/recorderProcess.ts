/**
 * The process under test, started by bench/run.ts (one per measurement, so that RSS and CPU
 * start from zero and nothing leaks between runs). It is driven over the IPC channel (see
 * bench/ipc.ts) and never decides anything itself: the driver creates the calls, grants the
 * consent through the control plane, starts the load and reads /proc.
 *
 * Modes (BenchMode):
 * - recorder: `startRecorderApp` exactly as workers/recorder.ts runs it, plus `openCall` and
 *   `addPlainLeg` on request (workers/recorder.ts has no call-control API yet);
 * - floor: the same WorkerPool, CallRoom and PlainTransport legs, tapped by a DirectTransport
 *   consumer whose 'rtp' handler only counts: what it costs to get the packets into Node;
 * - floor-udp: the same legs, each consumed by a PlainTransport that sends to a UDP socket in
 *   Node (one per call) whose handler counts by SSRC: an alternative tap, for comparison;
 * - ffmpeg: the same legs, each consumed by a PlainTransport that sends to one ffmpeg process
 *   per stream (`-c copy` into Ogg), as in the common mediasoup recording examples.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { types } from 'mediasoup';
import { loadConfig, type OptinConfig } from '../src/config/config.ts';
import { startRecorderApp, type RecorderApp } from '../src/app/RecorderApp.ts';
import { WorkerPool } from '../src/sfu/WorkerPool.ts';
import { CallRoom } from '../src/sfu/CallRoom.ts';
import { createLogger, type Logger } from '../src/log/logger.ts';
import { FFMPEG } from '../src/media/ffmpeg.ts';
import { SipUac } from '../test/support/sipUac.ts';
import { SIPREC_HEADERS, rsMetadata, sdpOffer, siprecBody } from '../test/support/siprecFixtures.ts';
import type {
  CallSpec,
  CloseResult,
  CommandName,
  Commands,
  CountersResult,
  InitArgs,
  OpenedLeg,
  Reply,
  Request,
  StorageSample,
  StreamCounters,
  WindowResult,
} from './ipc.ts';
import { APP_MODES, DIRECT_MODES } from './ipc.ts';

interface FloorLeg {
  callId: string;
  participantId: string;
  received: number;
}

interface FfmpegLeg {
  consumer: types.Consumer;
  proc: ChildProcess;
  out: string;
}

let mode: InitArgs['mode'] | undefined;
let config: OptinConfig;
let logger: Logger;
let app: RecorderApp | undefined;
let pool: WorkerPool | undefined;
const rooms = new Map<string, CallRoom>();
const floorLegs: FloorLeg[] = [];
const udpSockets: dgram.Socket[] = [];
const ffmpegLegs: FfmpegLeg[] = [];
let ffmpegDir = '';
let nextFfmpegPort = 0;

// Event-loop delay over the measurement window, same sampler settings as the Recorder's own.
// Node's histogram records the whole interval between two wake-ups of its 10 ms timer, so an
// idle loop reads 10 ms: the delay is the figure minus the resolution.
const LAG_RESOLUTION_MS = 10;
const loopDelay = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
const delayMs = (ns: number): number => Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS);
loopDelay.enable();
let windowActive = false;
let staleEvents = 0;
let recorderLagMax = 0;
let threadLagMax = 0;
/** Each second of the window: the worst media thread's p99 (to see whether a high figure is one stall or many). */
let threadLagSeries: number[] = [];
let lagPoll: NodeJS.Timeout | undefined;
// CPU profile of the main thread over the steady window only (start-up and teardown excluded).
let cpuProfileFile: string | undefined;
let profiler: Session | undefined;

const handlers: { [C in CommandName]: (args: Commands[C][0]) => Promise<Commands[C][1]> } = {
  async init(args) {
    mode = args.mode;
    cpuProfileFile = args.cpuProfileFile;
    config = loadConfig(process.env, args.overrides);
    logger = createLogger(config.logLevel);
    if (APP_MODES.includes(mode)) {
      app = await startRecorderApp(config, { logger });
      await app.control.waitFresh(15_000);
      app.control.on('stale', () => {
        if (windowActive) staleEvents++;
      });
      pool = app.pool;
    } else {
      pool = await WorkerPool.create({
        size: config.mediasoup.workers,
        workerBin: config.mediasoup.workerBin,
        rtcMinPort: config.mediasoup.rtcMinPort,
        rtcMaxPort: config.mediasoup.rtcMaxPort,
        logger,
      });
    }
    if (mode === 'ffmpeg') {
      ffmpegDir = args.ffmpegDir ?? path.resolve('bench-results/ffmpeg-tmp');
      mkdirSync(ffmpegDir, { recursive: true });
      nextFfmpegPort = args.ffmpegBasePort ?? 30_000;
    }
    collectGarbage(); // the idle memory figure should not hold start-up garbage
    return { pid: process.pid, workerPids: pool.workers.map((w) => w.pid), startMs: Date.now() };
  },

  async open({ calls, concurrency }) {
    const started = performance.now();
    const legs: OpenedLeg[] = [];
    let next = 0;
    // A few calls at a time: how a signalling front end would bring them in, and it keeps
    // the setup burst from starving the event loop (admission also looks at the lag).
    let pacedMs = 0;
    await Promise.all(
      Array.from({ length: Math.max(1, concurrency) }, async () => {
        while (next < calls.length) {
          const spec = calls[next++]!;
          // Admission refuses calls while the recorder's lag figure is over its limit (it would
          // for real traffic too); a burst of call setups must not trip it, so wait it out.
          const t = performance.now();
          while (app && app.recorder.eventLoopLagP99Ms > config.admission.maxEventLoopLagMs / 2 && performance.now() - t < 30_000) await sleep(100);
          pacedMs += performance.now() - t;
          legs.push(...(await openCall(spec)));
        }
      }),
    );
    return { legs, ms: performance.now() - started, pacedMs };
  },

  async status({ callIds }) {
    const writing: string[] = [];
    const notWriting: string[] = [];
    for (const id of callIds) (app?.recorder.calls.get(id)?.writing ? writing : notWriting).push(id);
    return { writing, notWriting };
  },

  async pids() {
    return {
      workerPids: pool?.workers.map((w) => w.pid) ?? [],
      ffmpegPids: ffmpegLegs.flatMap((l) => (l.proc.pid !== undefined && l.proc.exitCode === null ? [l.proc.pid] : [])),
    };
  },

  async resume() {
    for (const l of ffmpegLegs) await l.consumer.resume();
    return { resumed: ffmpegLegs.length };
  },

  async windowStart() {
    loopDelay.reset();
    windowActive = true;
    staleEvents = 0;
    recorderLagMax = 0;
    threadLagMax = 0;
    threadLagSeries = [];
    if (app) {
      const rec = app.recorder;
      const threads = app.mediaThreads;
      lagPoll = setInterval(() => {
        recorderLagMax = Math.max(recorderLagMax, rec.eventLoopLagP99Ms);
        const worst = Math.max(0, ...(threads?.load() ?? []).map((t) => t.loopP99Ms));
        threadLagSeries.push(Math.round(worst));
        threadLagMax = Math.max(threadLagMax, worst);
      }, 1000);
    }
    if (cpuProfileFile) {
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    return { ok: true };
  },

  async windowEnd() {
    windowActive = false;
    clearInterval(lagPoll);
    if (profiler && cpuProfileFile) {
      const { profile } = await profiler.post('Profiler.stop');
      writeFileSync(cpuProfileFile, JSON.stringify(profile));
      profiler.disconnect();
      profiler = undefined;
    }
    const mem = process.memoryUsage();
    const result: WindowResult = {
      lagP50Ms: delayMs(loopDelay.percentile(50)),
      lagP99Ms: delayMs(loopDelay.percentile(99)),
      lagMaxMs: delayMs(loopDelay.max),
      lagMeanMs: delayMs(loopDelay.mean),
      recorderLagP99MaxMs: recorderLagMax,
      staleEvents,
      ...(app?.mediaThreads ? { threadLagP99MaxMs: threadLagMax, threadLagSeriesMs: threadLagSeries, threadCpuPct: app.mediaThreads.load().map((t) => t.cpuPct) } : {}),
      heapUsedBytes: mem.heapUsed,
      externalBytes: mem.external + mem.arrayBuffers,
    };
    if (app) {
      const st = app.store.stats();
      result.upload = { p50Ms: st.uploadLatencyMs.p50, p99Ms: st.uploadLatencyMs.p99, samples: st.uploadLatencyMs.samples, uploaded: st.uploaded, spooled: st.spooled };
    }
    // After the lag figures: the driver reads memory next, live data only (as for the idle figure),
    // in every isolate: each media thread collects its own heap, the main thread's gc() does not.
    if (app?.mediaThreads) {
      await app.mediaThreads.refreshStats({ collectGarbage: true });
      result.threadHeap = app.mediaThreads.load().map((t) => t.heap);
    }
    collectGarbage();
    return result;
  },

  async counters() {
    const streams: StreamCounters[] = [];
    const out: CountersResult = { streams, dropped: {}, admissionRejections: {}, transcoderPendingFrames: 0 };
    if (app) {
      // The media threads' figures now, not up to a second old.
      await app.mediaThreads?.refreshStats();
      for (const call of app.recorder.calls.values()) {
        for (const t of call.tracks.values()) {
          streams.push({ callId: call.callId, participantId: t.participantId, ...pickCounters(t.counters), writing: call.writing });
        }
      }
      for (const v of (await app.metrics.packetsDropped.get()).values) out.dropped[String(v.labels.reason)] = v.value;
      for (const v of (await app.metrics.admissionRejections.get()).values) out.admissionRejections[String(v.labels.limit)] = v.value;
      out.transcoderPendingFrames = app.transcoder.pendingFrames;
    } else {
      for (const l of floorLegs) {
        streams.push({ callId: l.callId, participantId: l.participantId, received: l.received, written: 0, droppedClosed: 0, malformed: 0, writing: false });
      }
    }
    return out;
  },

  async close() {
    const t0 = performance.now();
    const result: CloseResult = { closeMs: 0, drainMs: 0 };
    if (app) {
      const recordingIds = [...app.recorder.calls.values()].flatMap((c) => (c.recordingId ? [c.recordingId] : []));
      result.recordingIds = recordingIds;
      // Seal and hand over every open segment and finish the manifests (what SIGTERM does).
      await app.recorder.close();
      result.closeMs = performance.now() - t0;
      const t1 = performance.now();
      await app.store.drained(120_000).catch((err: Error) => logger.warn({ err: err.message }, 'spool not drained'));
      result.drainMs = performance.now() - t1;
      const s = app.store.stats();
      result.store = { uploaded: s.uploaded, spooled: s.spooled, uploadLatencyMs: s.uploadLatencyMs };
      result.storage = await storageSample(app, recordingIds.slice(0, 64));
      await app.close();
      await uac?.close();
    } else {
      if (mode === 'ffmpeg') {
        // SIGINT lets ffmpeg write its trailer, like the examples' stop path.
        await Promise.all(ffmpegLegs.map((l) => stopProcess(l.proc)));
        result.closeMs = performance.now() - t0;
        let bytes = 0;
        let withData = 0;
        for (const l of ffmpegLegs) {
          const size = fileSize(l.out);
          bytes += size;
          if (size > 0) withData++;
        }
        result.ffmpegOutputBytes = bytes;
        result.ffmpegFilesWithData = withData;
        rmSync(ffmpegDir, { recursive: true, force: true });
      }
      for (const r of rooms.values()) r.close();
      for (const u of udpSockets) u.close();
      await pool?.close();
      result.closeMs ||= performance.now() - t0;
    }
    setTimeout(() => process.exit(0), 50);
    return result;
  },
};

/** A full GC when the process runs with --expose-gc (the driver starts it so). */
function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function pickCounters(c: { received: number; written: number; droppedClosed: number; malformed: number }): Pick<StreamCounters, 'received' | 'written' | 'droppedClosed' | 'malformed'> {
  return { received: c.received, written: c.written, droppedClosed: c.droppedClosed, malformed: c.malformed };
}

async function openCall(spec: CallSpec): Promise<OpenedLeg[]> {
  if (DIRECT_MODES.includes(mode!)) return openSiprecCall(spec);
  const legs: OpenedLeg[] = [];
  let room: CallRoom;
  let tap: types.DirectTransport | undefined;
  if (app) {
    room = await app.openCall(spec.callId);
  } else {
    room = await CallRoom.create(pool!, spec.callId, { listenIp: config.mediasoup.listenIp });
    if (mode === 'floor') tap = await room.router.createDirectTransport();
  }
  // floor-udp: one socket per call; packets told apart by the consumers' SSRCs.
  let udp: { socket: dgram.Socket; port: number; bySsrc: Map<number, FloorLeg> } | undefined;
  if (mode === 'floor-udp') {
    const socket = dgram.createSocket('udp4');
    const bySsrc = new Map<number, FloorLeg>();
    socket.on('message', (msg: Buffer) => {
      if (msg.length < 12) return;
      const leg = bySsrc.get(msg.readUInt32BE(8));
      if (leg) leg.received++;
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
    udpSockets.push(socket);
    udp = { socket, port: socket.address().port, bySsrc };
  }
  rooms.set(spec.callId, room);
  for (const leg of spec.legs) {
    const plain = await room.addPlainLeg(leg.participantId, leg.codec, leg.ssrc);
    legs.push({
      callId: spec.callId,
      participantId: leg.participantId,
      codec: leg.codec,
      ip: plain.ip,
      rtpPort: plain.rtpPort,
      ssrc: leg.ssrc,
      payloadType: plain.producer.rtpParameters.codecs[0]!.payloadType,
    });
    if (tap) {
      // The floor: exactly the recorder's tap (CallRecorder#tapLeg), minus the recorder.
      const counter: FloorLeg = { callId: spec.callId, participantId: leg.participantId, received: 0 };
      floorLegs.push(counter);
      const consumer = await tap.consume({ producerId: plain.producer.id, rtpCapabilities: room.router.rtpCapabilities });
      consumer.on('rtp', () => {
        counter.received++;
      });
    } else if (udp) {
      const counter: FloorLeg = { callId: spec.callId, participantId: leg.participantId, received: 0 };
      floorLegs.push(counter);
      const transport = await room.router.createPlainTransport({ listenInfo: { protocol: 'udp', ip: config.mediasoup.listenIp }, rtcpMux: true, comedia: false });
      await transport.connect({ ip: '127.0.0.1', port: udp.port });
      const consumer = await transport.consume({ producerId: plain.producer.id, rtpCapabilities: room.router.rtpCapabilities });
      udp.bySsrc.set(consumer.rtpParameters.encodings![0]!.ssrc!, counter);
    } else if (mode === 'ffmpeg') {
      ffmpegLegs.push(await startFfmpegLeg(room, plain.producer, `${spec.callId}-${leg.participantId}`));
    }
  }
  return legs;
}

/**
 * One stream recorded the way the mediasoup recording examples do it: a PlainTransport consumer
 * sends RTP to a local port where ffmpeg, started from an SDP file, copies the Opus packets into
 * an Ogg file. The consumer starts paused and is resumed once every ffmpeg listens (`resume`).
 */
async function startFfmpegLeg(room: CallRoom, producer: types.Producer, name: string): Promise<FfmpegLeg> {
  const rtpPort = nextFfmpegPort;
  nextFfmpegPort += 2;
  const transport = await room.router.createPlainTransport({
    listenInfo: { protocol: 'udp', ip: config.mediasoup.listenIp },
    rtcpMux: false,
    comedia: false,
  });
  await transport.connect({ ip: '127.0.0.1', port: rtpPort, rtcpPort: rtpPort + 1 });
  const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: room.router.rtpCapabilities, paused: true });
  const codec = consumer.rtpParameters.codecs[0]!;
  const [, encoding] = codec.mimeType.split('/');
  const sdp = [
    'v=0',
    'o=- 0 0 IN IP4 127.0.0.1',
    's=optin-bench',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${rtpPort} RTP/AVP ${codec.payloadType}`,
    `a=rtcp:${rtpPort + 1}`,
    `a=rtpmap:${codec.payloadType} ${encoding}/${codec.clockRate}${codec.channels ? `/${codec.channels}` : ''}`,
    'a=recvonly',
    '',
  ].join('\n');
  const sdpFile = path.join(ffmpegDir, `${name}.sdp`);
  const out = path.join(ffmpegDir, `${name}.ogg`);
  writeFileSync(sdpFile, sdp);
  const proc = spawn(FFMPEG, ['-nostdin', '-loglevel', 'error', '-protocol_whitelist', 'file,udp,rtp', '-i', sdpFile, '-c', 'copy', '-y', out], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr?.on('data', (d: Buffer) => logger.warn({ ffmpeg: name, stderr: d.toString().trim().slice(0, 300) }, 'ffmpeg says'));
  proc.on('error', (err) => logger.error({ ffmpeg: name, err: err.message }, 'ffmpeg could not start'));
  return { consumer, proc, out };
}

/**
 * Stops ffmpeg the way the examples stop a recording: SIGINT while media still flows. ffmpeg
 * sees the signal between two packets and writes its trailer. (With no more packets it would
 * sit in a blocking read; a second SIGINT interrupts that but also the trailer, losing the
 * buffered tail, hence the driver stops ffmpeg before the load ends.) SIGKILL as a last resort.
 */
async function stopProcess(proc: ChildProcess, graceMs = 8000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGINT');
  const again = setTimeout(() => proc.kill('SIGINT'), graceMs / 2);
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(again);
  clearTimeout(timer);
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * Storage overhead from the manifests the recorder wrote: Opus payload bytes vs Ogg bytes vs
 * sealed bytes, over every segment and over full-length segments only (a call's last segment is
 * short, so its fixed header costs more relative to its audio).
 */
async function storageSample(a: RecorderApp, recordingIds: string[]): Promise<StorageSample> {
  const fullMs = a.config.segmentSeconds * 1000 - 40;
  const s: StorageSample = {
    recordings: 0,
    segments: 0,
    opusPayloadBytes: 0,
    oggBytes: 0,
    sealedBytes: 0,
    durationMs: 0,
    full: { segments: 0, opusPayloadBytes: 0, oggBytes: 0, sealedBytes: 0, durationMs: 0 },
  };
  for (const id of recordingIds) {
    const m = await a.store.getManifest(id).catch(() => undefined);
    if (!m) continue;
    s.recordings++;
    for (const seg of m.segments) {
      s.segments++;
      s.opusPayloadBytes += seg.opusPayloadBytes;
      s.oggBytes += seg.oggBytes;
      s.sealedBytes += seg.sealedBytes;
      s.durationMs += seg.durationMs;
      if (seg.durationMs >= fullMs) {
        s.full.segments++;
        s.full.opusPayloadBytes += seg.opusPayloadBytes;
        s.full.oggBytes += seg.oggBytes;
        s.full.sealedBytes += seg.sealedBytes;
        s.full.durationMs += seg.durationMs;
      }
    }
  }
  return s;
}

process.on('message', (msg: Request) => {
  const handler = handlers[msg.cmd] as (args: unknown) => Promise<unknown>;
  handler(msg.args).then(
    (result) => process.send?.({ id: msg.id, ok: true, result } satisfies Reply),
    (err: Error) => process.send?.({ id: msg.id, ok: false, error: err.stack ?? err.message } satisfies Reply),
  );
});

// The driver going away ends this process too (no orphaned mediasoup workers or ffmpegs).
process.on('disconnect', () => {
  for (const l of ffmpegLegs) l.proc.kill('SIGKILL');
  void (app ? app.close() : pool?.close())?.finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 10_000).unref();
});


// ---- SIPREC: the SBC's side of a forked call ----

let uac: SipUac | undefined;

/**
 * One SIPREC session per call, as an SBC opens it: INVITE with an SDP offer of one recvonly-bound
 * stream per participant and RFC 7865 metadata naming them (their AoR user parts are the
 * participant ids under the bench's mapping rule), then ACK. The legs returned are where the
 * load generator sends: the ports of the recorder's SDP answer.
 */
async function openSiprecCall(spec: CallSpec): Promise<OpenedLeg[]> {
  const front = app?.siprec;
  if (!front) throw new Error('siprec mode needs siprec.enabled');
  uac ??= await SipUac.open('udp', { host: '127.0.0.1', port: front.server.ports().udp! });
  const pt = (codec: string): number => (codec === 'opus' ? 111 : codec === 'pcma' ? 8 : 0);
  const streams = spec.legs.map((leg, i) => ({ id: Buffer.from(`${spec.callId}/${i}`).toString('base64'), label: String(i + 1) }));
  const metadata = rsMetadata({
    participants: spec.legs.map((leg, i) => ({ id: Buffer.from(`${spec.callId}/${leg.participantId}`).toString('base64'), aor: `sip:${leg.participantId}@bench.example`, sends: [streams[i]!.id] })),
    streams,
  });
  const offer = siprecBody(sdpOffer(spec.legs.map((leg, i) => ({ port: 50_000 + i * 2, label: String(i + 1), payloads: [pt(leg.codec)] }))), metadata);
  const { response, dialog } = await uac.invite({ ...offer, headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', spec.callId]] });
  if (response.status !== 200 || !dialog) throw new Error(`SIPREC INVITE for ${spec.callId} answered ${response.status}`);
  const ports = response.body
    .toString()
    .split(/\r\n(?=m=)/)
    .slice(1)
    .map((block) => Number(/^m=\w+ (\d+)/.exec(block)![1]));
  return spec.legs.map((leg, i) => ({ callId: spec.callId, participantId: leg.participantId, codec: leg.codec, ip: '127.0.0.1', rtpPort: ports[i]!, ssrc: leg.ssrc, payloadType: pt(leg.codec) }));
}
