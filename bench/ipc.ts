/**
 * The messages between the benchmark driver (bench/run.ts) and the process under test
 * (bench/recorderProcess.ts). The process under test is a separate OS process so that its
 * CPU and memory can be read from /proc without the driver's own work mixed in.
 *
 * One request, one reply: `{ id, cmd, args }` -> `{ id, ok: true, result }` or
 * `{ id, ok: false, error }`. Plain JSON over the Node IPC channel, a few messages a second
 * at most: nothing on the media path.
 */
import type { ChildProcess } from 'node:child_process';
import type { AudioCodec } from '../src/sfu/mediaCodecs.ts';
import type { ThreadHeap } from '../src/mediathreads/protocol.ts';

/**
 * What runs in the process under test:
 * - recorder: the real thing (startRecorderApp: mediasoup, gate, jitter, Ogg, seal, S3);
 * - floor: the same transport path (PlainTransport producer -> DirectTransport consumer) into a
 *   consumer that only counts packets: the cost of merely getting the packets to Node;
 * - floor-udp: an alternative tap for comparison: a PlainTransport consumer per producer sending
 *   RTP to a UDP socket in Node (one per call), counted by SSRC; not what the recorder does;
 * - ffmpeg: the common mediasoup recording example: a PlainTransport consumer per producer
 *   feeding one `ffmpeg -i stream.sdp -c copy out.ogg` process each.
 */
/**
 * recorder: legs through the SFU (PlainTransports, tapped); direct: the same recorder with its
 * SIPREC front door, each call a SIPREC session set up over SIP and its RTP sent straight to the
 * media threads' sockets (no SFU hop); direct-floor: the same sessions and sockets with no consent
 * given, so every packet is received in its thread and dropped at the gate (the floor of the
 * direct path); sfu-floor: the SFU path's calls and taps without consent (each packet reaches its
 * track in a media thread and is dropped at the gate); floor / floor-udp: the SFU path minus the
 * recorder (a DirectTransport or a UDP socket on the main thread that counts); ffmpeg: one ffmpeg process
 * per stream (the baseline).
 */
export type BenchMode = 'recorder' | 'sfu-floor' | 'direct' | 'direct-floor' | 'floor' | 'floor-udp' | 'ffmpeg';

/** Modes that run the real recorder app (startRecorderApp). */
export const APP_MODES: readonly BenchMode[] = ['recorder', 'sfu-floor', 'direct', 'direct-floor'];

/** Modes whose calls are known to the control plane but never consented: the recorder's floors on its own sockets. */
export const UNCONSENTED_MODES: readonly BenchMode[] = ['sfu-floor', 'direct-floor'];

/** Modes that record (the gate, tracks, segments, uploads). */
export const RECORDING_MODES: readonly BenchMode[] = ['recorder', 'direct'];

/** Modes whose calls are SIPREC sessions received by the media threads. */
export const DIRECT_MODES: readonly BenchMode[] = ['direct', 'direct-floor'];

export interface InitArgs {
  mode: BenchMode;
  /** Config overrides for loadConfig (dotted paths), recorder mode; also read for ports and workers. */
  overrides: Record<string, unknown>;
  /** ffmpeg mode: where the .sdp and .ogg files go, and the first local port for ffmpeg's RTP. */
  ffmpegDir?: string;
  ffmpegBasePort?: number;
  /** Write a V8 CPU profile of the steady window (main thread) to this file. */
  cpuProfileFile?: string;
}

export interface InitResult {
  pid: number;
  workerPids: number[];
  startMs: number;
}

export interface LegSpec {
  participantId: string;
  codec: AudioCodec;
  ssrc: number;
}

export interface CallSpec {
  callId: string;
  legs: LegSpec[];
}

export interface OpenedLeg {
  callId: string;
  participantId: string;
  codec: AudioCodec;
  ip: string;
  rtpPort: number;
  ssrc: number;
  payloadType: number;
}

export interface StatusResult {
  writing: string[];
  notWriting: string[];
}

export interface PidsResult {
  workerPids: number[];
  ffmpegPids: number[];
}

export interface WindowResult {
  /**
   * The process's own event-loop delay over the window: how late its 10 ms sampling timer woke
   * up (the raw histogram figure minus the 10 ms period).
   */
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
  lagMeanMs: number;
  /**
   * Highest of the recorder's own once-a-second p99 figures (`recorder.eventLoopLagP99Ms`, as
   * exported in `optin_event_loop_lag_p99_seconds`), recorder mode. Raw: it includes the
   * sampler's 10 ms period.
   */
  recorderLagP99MaxMs: number;
  /** Direct modes: the highest once-a-second event-loop p99 of any media thread over the window (minus the 10 ms period). */
  threadLagP99MaxMs?: number;
  threadLagSeriesMs?: number[];
  /** Direct modes: each media thread's CPU over the window's last second, % of one core. */
  threadCpuPct?: number[];
  /** Control stream went stale during the window (every gate fails closed: a serious overload sign). */
  staleEvents: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** Each media thread's own heap after a full collection in it, at the end of the window. */
  threadHeap?: ThreadHeap[];
  /**
   * Recorder mode: segment upload latency (the store's last 1024 direct PUTs) and uploads so far,
   * read at the end of the window, i.e. in steady state (the close burst comes later).
   */
  upload?: { p50Ms: number; p99Ms: number; samples: number; uploaded: number; spooled: number };
}

export interface StreamCounters {
  callId: string;
  participantId: string;
  received: number;
  written: number;
  droppedClosed: number;
  malformed: number;
  writing: boolean;
}

export interface CountersResult {
  streams: StreamCounters[];
  /** Recorder metrics: packets dropped by reason, admission refusals by limit. */
  dropped: Record<string, number>;
  admissionRejections: Record<string, number>;
  transcoderPendingFrames: number;
}

export interface StorageSample {
  recordings: number;
  segments: number;
  opusPayloadBytes: number;
  oggBytes: number;
  sealedBytes: number;
  /** The same sums over full-length segments only (the steady state of a long call). */
  full: { segments: number; opusPayloadBytes: number; oggBytes: number; sealedBytes: number; durationMs: number };
  durationMs: number;
}

export interface CloseResult {
  closeMs: number;
  drainMs: number;
  store?: {
    uploaded: number;
    spooled: number;
    uploadLatencyMs: { p50: number; p99: number; samples: number };
  };
  storage?: StorageSample;
  /** ffmpeg mode: bytes written by all ffmpeg processes, and how many wrote anything. */
  ffmpegOutputBytes?: number;
  ffmpegFilesWithData?: number;
  /** The recording ids made (recorder mode), for the extract measurement. */
  recordingIds?: string[];
}

export interface Commands {
  init: [InitArgs, InitResult];
  /** pacedMs: time spent waiting for the recorder's lag figure to settle between call setups. */
  open: [{ calls: CallSpec[]; concurrency: number }, { legs: OpenedLeg[]; ms: number; pacedMs: number }];
  status: [{ callIds: string[] }, StatusResult];
  pids: [Record<string, never>, PidsResult];
  resume: [Record<string, never>, { resumed: number }];
  windowStart: [Record<string, never>, { ok: true }];
  windowEnd: [Record<string, never>, WindowResult];
  counters: [Record<string, never>, CountersResult];
  close: [{ keepStore?: boolean }, CloseResult];
}

export type CommandName = keyof Commands;

export interface Request<C extends CommandName = CommandName> {
  id: number;
  cmd: C;
  args: Commands[C][0];
}

export type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** Driver side: typed calls into the child process, each with a timeout naming what hung. */
export class ChildRpc {
  readonly #child: ChildProcess;
  #next = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (msg: Reply) => {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(msg.error));
    });
    child.on('exit', (code, signal) => {
      for (const p of this.#pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`the process under test exited (${signal ?? code}) before replying; see its log in bench-results/`));
      }
      this.#pending.clear();
    });
  }

  call<C extends CommandName>(cmd: C, args: Commands[C][0], timeoutMs = 120_000): Promise<Commands[C][1]> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`the process under test did not answer '${cmd}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.#child.send({ id, cmd, args } satisfies Request<C>);
    });
  }
}
