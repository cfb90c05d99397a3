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

export function runFfmpeg(args: readonly string[], opts: { input?: Buffer | NodeJS.ReadableStream; bin?: string; collectStdout?: boolean } = {}): FfmpegRun {
  const bin = opts.bin ?? FFMPEG;
  const child = spawn(bin, ['-hide_banner', ...(bin === FFPROBE ? [] : ['-nostdin']), ...args], { stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
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
      if (code === 0 || signal === 'SIGTERM' || signal === 'SIGINT') resolve(Buffer.concat(out));
      else reject(new OptinError('FFMPEG_FAILED', `${bin} exited with ${code ?? signal}: ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
  return {
    child,
    done,
    stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
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
  /** Seconds of the file to send (default: all of it). */
  seconds?: number;
}

/**
 * A real RTP sender (ffmpeg, not our code) playing a file in real time: Opus 20 ms frames, or
 * G.711 in 20 ms packets (160-byte payloads: pkt_size 172 with the 12-byte RTP header).
 */
export function sendRtp(o: RtpSenderOptions): FfmpegRun {
  const codecArgs =
    o.codec === 'opus'
      ? ['-c:a', 'libopus', '-b:a', '32k', '-frame_duration', '20', '-application', 'voip', '-ac', '1', '-ar', '48000', '-payload_type', '100']
      : ['-c:a', o.codec === 'pcmu' ? 'pcm_mulaw' : 'pcm_alaw', '-ac', '1', '-ar', '8000', '-payload_type', o.codec === 'pcmu' ? '0' : '8'];
  const url = `rtp://${o.ip}:${o.rtpPort}?rtcpport=${o.rtcpPort}&pkt_size=${o.codec === 'opus' ? 1200 : 172}`;
  return runFfmpeg([
    '-v', 'error', '-re',
    ...(o.seconds ? ['-t', String(o.seconds)] : []),
    '-i', o.file,
    ...codecArgs,
    // ffmpeg's option is a signed 32-bit int; the same bits go on the wire.
    '-ssrc', String(o.ssrc | 0),
    '-f', 'rtp', url,
  ], { collectStdout: false });
}
