import { spawn, type ChildProcess } from 'node:child_process';
import { OptinError } from '../errors/OptinError.ts';

/**
 * The one place optin runs ffmpeg (Debian's binary). fluent-ffmpeg was archived upstream in
 * 2025, so this is a small typed wrapper: argument arrays (never a shell), bounded stderr
 * capture for error messages, and a clean kill on request.
 */
export const FFMPEG = process.env.OPTIN_FFMPEG ?? 'ffmpeg';
export const FFPROBE = process.env.OPTIN_FFPROBE ?? 'ffprobe';

const MAX_STDERR = 16 * 1024;

export interface FfmpegRun {
  child: ChildProcess;
  /** Resolves with stdout when ffmpeg exits 0; rejects with its stderr tail otherwise. */
  done: Promise<Buffer>;
  stop(): void;
}

export function runFfmpeg(
  args: readonly string[],
  opts: {
    input?: Buffer | NodeJS.ReadableStream;
    /**
     * More in-memory inputs, on file descriptors 3, 4, ... (name them `pipe:3`, `pipe:4`, ... in
     * `args`): several inputs without temp files, so decrypted audio never touches the disk.
     */
    extraInputs?: readonly Buffer[];
    bin?: string;
    collectStdout?: boolean;
  } = {},
): FfmpegRun {
  const bin = opts.bin ?? FFMPEG;
  const extra = opts.extraInputs ?? [];
  const child = spawn(bin, ['-hide_banner', ...(bin === FFPROBE ? [] : ['-nostdin']), ...args], {
    stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe', ...extra.map(() => 'pipe' as const)],
  });
  extra.forEach((buf, i) => {
    const fd = child.stdio[3 + i] as NodeJS.WritableStream & { on(event: 'error', fn: () => void): void };
    fd.on('error', () => undefined); // ffmpeg may stop reading an input early (atrim, errors)
    fd.end(buf);
  });
  const out: Buffer[] = [];
  let err = '';
  let stopped = false;
  child.stdout!.on('data', (d: Buffer) => {
    if (opts.collectStdout ?? true) out.push(d);
  });
  child.stderr!.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-MAX_STDERR);
  });
  if (opts.input) {
    child.stdin!.on('error', () => undefined); // ffmpeg may exit before reading everything
    if (Buffer.isBuffer(opts.input)) child.stdin!.end(opts.input);
    else opts.input.pipe(child.stdin!);
  }
  const done = new Promise<Buffer>((resolve, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT'
          ? new OptinError('FFMPEG_MISSING', `${bin} not found: install it (apt-get install ffmpeg) or set OPTIN_FFMPEG`)
          : e,
      ),
    );
    child.on('close', (code, signal) => {
      if (code === 0 || stopped) resolve(Buffer.concat(out)); // ffmpeg exits 255 when we stop it
      else reject(new OptinError('FFMPEG_FAILED', `${bin} exited with ${code ?? signal}: ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
  return {
    child,
    done,
    stop() {
      stopped = true;
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}

export interface FfmpegJobOptions {
  input?: Buffer;
  extraInputs?: readonly Buffer[];
}

/** Runs one ffmpeg job to completion: stdout, or a rejection. `runFfmpegJob` runs it at once; FfmpegPool bounds it. */
export type FfmpegRunner = (args: readonly string[], opts: FfmpegJobOptions) => Promise<Buffer>;

export const runFfmpegJob: FfmpegRunner = (args, opts) => runFfmpeg(args, opts).done;

export interface FfmpegPoolOptions {
  /** ffmpeg processes at once (default 2: these hosts are shared, the control plane serves people too). */
  concurrency?: number;
  /** Jobs that may wait for a slot (default: concurrency). Beyond that a job is refused at once (FFMPEG_BUSY). */
  queue?: number;
  /** A process is killed after this long (default 60 s): a stuck decoder must not hold a slot. */
  timeoutMs?: number;
  /** A queued job gives up after waiting this long for a slot (default: timeoutMs). */
  maxWaitMs?: number;
}

interface Waiting {
  start: () => void;
  fail: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A bounded pool for the ffmpeg work people trigger (coaching renders, WAV extracts): at most
 * `concurrency` processes, a short queue, a timeout per process, and refusal at admission when
 * both are full (FFMPEG_BUSY: an API answers 503 with Retry-After). Overload is refused, never
 * queued without bound (STYLE §9): the host may also carry live media.
 */
export class FfmpegPool {
  readonly concurrency: number;
  readonly queueLimit: number;
  readonly timeoutMs: number;
  readonly maxWaitMs: number;
  #running = 0;
  readonly #waiting: Waiting[] = [];
  readonly #children = new Set<FfmpegRun>();
  /** Recent job durations (ms), for the Retry-After estimate. */
  readonly #recent: number[] = [];
  #closed = false;

  constructor(options: FfmpegPoolOptions = {}) {
    this.concurrency = options.concurrency ?? 2;
    this.queueLimit = options.queue ?? this.concurrency;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.maxWaitMs = options.maxWaitMs ?? this.timeoutMs;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new OptinError('INVALID_INPUT', 'FfmpegPool: concurrency must be a positive integer');
    if (!Number.isInteger(this.queueLimit) || this.queueLimit < 0) throw new OptinError('INVALID_INPUT', 'FfmpegPool: queue must be a whole number');
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** Seconds after which a refused caller may reasonably try again (the typical job length, at least 1). */
  retryAfterSeconds(): number {
    if (this.#recent.length === 0) return 5;
    const sorted = [...this.#recent].sort((a, b) => a - b);
    return Math.max(1, Math.ceil(sorted[Math.floor(sorted.length / 2)]! / 1000));
  }

  /** The runner to hand to renderStereo / decodeToS16. */
  readonly run: FfmpegRunner = async (args, opts) => {
    await this.#admit();
    const started = performance.now();
    try {
      return await this.#runWithTimeout(args, opts);
    } finally {
      this.#recent.push(performance.now() - started);
      if (this.#recent.length > 32) this.#recent.shift();
      this.#release();
    }
  };

  /** Kills the running processes and refuses the waiting and future jobs. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) {
      clearTimeout(w.timer);
      w.fail(new OptinError('FFMPEG_BUSY', 'the ffmpeg pool is closing; retry on another replica', { retryable: true }));
    }
    for (const c of this.#children) c.stop();
  }

  #admit(): Promise<void> {
    if (this.#closed) return Promise.reject(new OptinError('FFMPEG_BUSY', 'the ffmpeg pool is closed', { retryable: true }));
    if (this.#running < this.concurrency) {
      this.#running += 1;
      return Promise.resolve();
    }
    if (this.#waiting.length >= this.queueLimit) {
      return Promise.reject(new OptinError('FFMPEG_BUSY', `all ${this.concurrency} audio workers are busy and ${this.queueLimit} jobs wait; retry in a few seconds`, { retryable: true }));
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiting = {
        start: () => {
          clearTimeout(w.timer);
          resolve();
        },
        fail: reject,
        timer: setTimeout(() => {
          const i = this.#waiting.indexOf(w);
          if (i >= 0) this.#waiting.splice(i, 1);
          reject(new OptinError('FFMPEG_BUSY', `no audio worker became free within ${this.maxWaitMs} ms; retry shortly`, { retryable: true }));
        }, this.maxWaitMs),
      };
      this.#waiting.push(w);
    });
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next.start(); // the slot passes straight to the next job
    else this.#running -= 1;
  }

  async #runWithTimeout(args: readonly string[], opts: FfmpegJobOptions): Promise<Buffer> {
    const run = runFfmpeg(args, opts);
    this.#children.add(run);
    // Admitted just before close(): stopped like the others.
    if (this.#closed) run.stop();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      run.child.kill('SIGKILL');
    }, this.timeoutMs);
    try {
      const out = await run.done.catch((err: unknown) => {
        if (timedOut) throw new OptinError('FFMPEG_TIMEOUT', `ffmpeg did not finish within ${this.timeoutMs} ms and was stopped; retry, or ask for a shorter piece`);
        throw err;
      });
      if (timedOut) throw new OptinError('FFMPEG_TIMEOUT', `ffmpeg did not finish within ${this.timeoutMs} ms and was stopped; retry, or ask for a shorter piece`);
      return out;
    } finally {
      clearTimeout(timer);
      this.#children.delete(run);
    }
  }
}

/** Media duration in seconds as ffprobe reads it (from the container's last granule for Ogg). */
export async function probeDurationSeconds(file: string): Promise<number> {
  const out = await runFfmpeg(['-v', 'error', '-show_entries', 'format=duration', '-of', 'default=nw=1:nk=1', file], { bin: FFPROBE }).done;
  return Number(out.toString().trim());
}

/** Decodes a file to mono float PCM at `rate`; `stderr` holds decoder errors and warnings. */
export async function decodeToPcm(input: string | Buffer, rate = 48000): Promise<{ pcm: Float32Array; stderr: string }> {
  const args = ['-v', 'warning', '-i', typeof input === 'string' ? input : 'pipe:0', '-f', 'f32le', '-ac', '1', '-ar', String(rate), 'pipe:1'];
  const run = runFfmpeg(args, typeof input === 'string' ? {} : { input });
  let stderr = '';
  run.child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const out = await run.done;
  return { pcm: new Float32Array(out.buffer, out.byteOffset, Math.floor(out.length / 4)), stderr };
}

export interface RtpSenderOptions {
  file: string;
  codec: 'opus' | 'pcmu' | 'pcma';
  ip: string;
  rtpPort: number;
  rtcpPort: number;
  ssrc: number;
  /** RTP payload type on the wire (default: 100 for Opus, 0 / 8 for G.711). */
  payloadType?: number;
  /** Seconds of the file to send (default: all of it). */
  seconds?: number;
  /** Play the file again and again (until `seconds`, or stop()): calls longer than a fixture. */
  loop?: boolean;
  /** Send from these local ports (a plain leg accepts only the address its gateway declared). */
  localRtpPort?: number;
  localRtcpPort?: number;
}

/**
 * A real RTP sender (ffmpeg, not our code) playing a file in real time: Opus 20 ms frames, or
 * G.711 in 20 ms packets (160-byte payloads: pkt_size 172 with the 12-byte RTP header).
 */
export function sendRtp(o: RtpSenderOptions): FfmpegRun {
  return sendRtpStreams([o]);
}

/**
 * Several RTP streams from one ffmpeg, paced by its one clock, as one SBC forks both sides of a
 * call: their timelines start together. Separate senders start apart by their own start-up time
 * (tens of ms on a loaded host), which a test of the speakers' alignment would measure instead of
 * the recorder.
 */
export function sendRtpStreams(streams: readonly RtpSenderOptions[]): FfmpegRun {
  if (streams.length === 0) throw new OptinError('INVALID_INPUT', 'sendRtpStreams: no stream to send');
  const args: string[] = ['-v', 'error'];
  for (const o of streams) {
    args.push('-re', ...(o.loop ? ['-stream_loop', '-1'] : []), ...(o.seconds ? ['-t', String(o.seconds)] : []), '-i', o.file);
  }
  streams.forEach((o, i) => {
    const codecArgs =
      o.codec === 'opus'
        ? ['-c:a', 'libopus', '-b:a', '32k', '-frame_duration', '20', '-application', 'voip', '-ac', '1', '-ar', '48000', '-payload_type', String(o.payloadType ?? 100)]
        : ['-c:a', o.codec === 'pcmu' ? 'pcm_mulaw' : 'pcm_alaw', '-ac', '1', '-ar', '8000', '-payload_type', o.codec === 'pcmu' ? '0' : '8'];
    const local = `${o.localRtpPort === undefined ? '' : `&localrtpport=${o.localRtpPort}`}${o.localRtcpPort === undefined ? '' : `&localrtcpport=${o.localRtcpPort}`}`;
    const url = `rtp://${o.ip}:${o.rtpPort}?rtcpport=${o.rtcpPort}&pkt_size=${o.codec === 'opus' ? 1200 : 172}${local}`;
    // ffmpeg's -ssrc is a signed 32-bit int; the same bits go on the wire.
    args.push('-map', `${i}:a:0`, ...codecArgs, '-ssrc', String(o.ssrc | 0), '-f', 'rtp', url);
  });
  return runFfmpeg(args, { collectStdout: false });
}

export interface StereoInput {
  /** Mono Ogg Opus. */
  ogg: Buffer;
  /** Where its first sample goes on the output's time axis, in 48 kHz samples (default 0). */
  delaySamples?: number;
}

export interface StereoRenderOptions {
  /** Inputs of the LEFT channel (mixed when several). */
  left: readonly StereoInput[];
  /** Inputs of the RIGHT channel. */
  right: readonly StereoInput[];
  /** Output length in 48 kHz samples: both sides are padded with silence (or cut) to exactly this. */
  samples: number;
  /** 'ogg': stereo Ogg Opus; 's16le': raw interleaved 16-bit PCM (the caller adds a WAV header). */
  format: 'ogg' | 's16le';
  /** Opus bitrate of the stereo render (default 64k). */
  bitrate?: string;
  /** Where the ffmpeg process runs (default: at once; the access API passes its FfmpegPool). */
  runner?: FfmpegRunner;
}

/**
 * A two-channel render from mono tracks placed on one time axis (coaching playback: agent left,
 * customer right). Inputs are passed on extra pipes (no temp files). Each input is delayed to its
 * place in PCM (adelay, exact to the sample), so its decoder starts on its own first packet as in
 * any player; each side is mixed (amix without normalisation: one side's tracks do not overlap in
 * practice, and halving their level would misrepresent them), padded and trimmed to the same
 * length, then the two sides are merged into stereo. A side with no input is digital silence.
 */
export async function renderStereo(o: StereoRenderOptions): Promise<Buffer> {
  if (!Number.isInteger(o.samples) || o.samples <= 0) throw new OptinError('INVALID_INPUT', 'renderStereo: samples must be a positive integer');
  const inputs = [...o.left, ...o.right];
  const args: string[] = ['-v', 'error'];
  inputs.forEach((_, i) => args.push('-f', 'ogg', '-i', `pipe:${3 + i}`));
  const filters: string[] = [];
  const fit = `apad=whole_len=${o.samples},atrim=end_sample=${o.samples}`;
  const side = (label: string, first: number, list: readonly StereoInput[]): void => {
    if (list.length === 0) {
      filters.push(`anullsrc=r=48000:cl=mono,atrim=end_sample=${o.samples}[${label}]`);
      return;
    }
    list.forEach((input, i) => {
      const delay = Math.max(0, Math.round(input.delaySamples ?? 0));
      filters.push(`[${first + i}:a]aresample=48000,aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=mono${delay > 0 ? `,adelay=delays=${delay}S:all=1` : ''}[${label}${i}]`);
    });
    const ins = list.map((_, i) => `[${label}${i}]`).join('');
    filters.push(list.length === 1 ? `${ins}${fit}[${label}]` : `${ins}amix=inputs=${list.length}:normalize=0:duration=longest,${fit}[${label}]`);
  };
  side('L', 0, o.left);
  side('R', o.left.length, o.right);
  filters.push('[L][R]amerge=inputs=2[out]');
  args.push('-filter_complex', filters.join(';'), '-map', '[out]', '-map_metadata', '-1', '-ac', '2', '-ar', '48000');
  if (o.format === 'ogg') args.push('-c:a', 'libopus', '-b:a', o.bitrate ?? '64k', '-application', 'audio', '-f', 'ogg', 'pipe:1');
  else args.push('-c:a', 'pcm_s16le', '-f', 's16le', 'pipe:1');
  return (o.runner ?? runFfmpegJob)(args, { extraInputs: inputs.map((x) => x.ogg) });
}

/** Decodes any input ffmpeg reads to interleaved 16-bit PCM at `rate` with `channels` (for WAV files). */
export async function decodeToS16(input: Buffer, opts: { rate?: number; channels?: number; runner?: FfmpegRunner } = {}): Promise<Buffer> {
  const args = ['-v', 'error', '-i', 'pipe:0', '-map_metadata', '-1', '-ac', String(opts.channels ?? 1), '-ar', String(opts.rate ?? 48000), '-c:a', 'pcm_s16le', '-f', 's16le', 'pipe:1'];
  return (opts.runner ?? runFfmpegJob)(args, { input });
}
