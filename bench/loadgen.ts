/**
 * Driver side of the C load generator (bench/loadgen.c): builds it once per source version into
 * a cache directory, turns the media fixtures into its packet files, and runs it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readOggOpus } from '../src/media/OggOpusReader.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..');
const SOURCE = path.join(HERE, 'loadgen.c');
const FIXTURES = path.join(ROOT, 'media-fixtures', 'generated');

/** Compiles loadgen.c with `cc -O2` unless this exact source was built before. Returns the binary. */
export function buildLoadgen(cacheDir: string): string {
  const source = readFileSync(SOURCE);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 12);
  const bin = path.join(cacheDir, `loadgen-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(cacheDir, { recursive: true });
  const cc = process.env.CC ?? 'cc';
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', bin, SOURCE], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    throw new Error(`could not compile bench/loadgen.c with ${cc} (${(err as Error).message}): install a C compiler (apt-get install gcc) or set CC`);
  }
  return bin;
}

/** The fixtures the load is made of; generated on first use (ffmpeg, sox, espeak-ng). */
export function ensureFixtures(): void {
  const needed = ['agent-speech.opus', 'customer-speech.opus', 'agent-tone.pcmu', 'customer-tone.pcmu'];
  if (needed.every((f) => existsSync(path.join(FIXTURES, f)))) return;
  execFileSync('bash', [path.join(ROOT, 'media-fixtures', 'generate.sh')], { stdio: 'inherit' });
}

export interface LoadProfiles {
  /** Profile file paths in the order loadgen numbers them (-p 0, 1, 2, 3). */
  files: string[];
  /** Index of the profile per codec and role. */
  index: { opus: { agent: number; customer: number }; pcmu: { agent: number; customer: number } };
  /** Mean Opus payload size of the speech fixtures (bytes), for the report. */
  opusMeanPayloadBytes: number;
}

/**
 * Packet files for the generator: "OLGP", u32le count, then per packet u16le length, u16le
 * samples (RTP clock units), bytes. Opus: the packets of the speech fixtures (what a WebRTC
 * sender would send, 20 ms frames, with pauses); G.711: 160-byte µ-law frames.
 */
export function writeProfiles(cacheDir: string): LoadProfiles {
  ensureFixtures();
  mkdirSync(cacheDir, { recursive: true });
  const encode = (packets: { data: Uint8Array; samples: number }[]): Buffer => {
    const parts: Buffer[] = [Buffer.from('OLGP'), Buffer.alloc(4)];
    parts[1]!.writeUInt32LE(packets.length);
    for (const p of packets) {
      const h = Buffer.alloc(4);
      h.writeUInt16LE(p.data.length, 0);
      h.writeUInt16LE(p.samples, 2);
      parts.push(h, Buffer.from(p.data));
    }
    return Buffer.concat(parts);
  };
  const files: string[] = [];
  let payloadBytes = 0;
  let packets = 0;
  for (const who of ['agent', 'customer']) {
    const opus = readOggOpus(readFileSync(path.join(FIXTURES, `${who}-speech.opus`))).packets.filter((p) => p.samples > 0);
    payloadBytes += opus.reduce((a, p) => a + p.data.length, 0);
    packets += opus.length;
    const file = path.join(cacheDir, `opus-${who}.olgp`);
    writeFileSync(file, encode(opus.map((p) => ({ data: p.data, samples: p.samples }))));
    files.push(file);
  }
  for (const who of ['agent', 'customer']) {
    const raw = readFileSync(path.join(FIXTURES, `${who}-tone.pcmu`));
    const frames: { data: Uint8Array; samples: number }[] = [];
    for (let at = 0; at + 160 <= raw.length; at += 160) frames.push({ data: raw.subarray(at, at + 160), samples: 160 });
    const file = path.join(cacheDir, `pcmu-${who}.olgp`);
    writeFileSync(file, encode(frames));
    files.push(file);
  }
  return { files, index: { opus: { agent: 0, customer: 1 }, pcmu: { agent: 2, customer: 3 } }, opusMeanPayloadBytes: payloadBytes / packets };
}

export interface Destination {
  ip: string;
  port: number;
  ssrc: number;
  payloadType: number;
  profile: number;
}

export interface LoadgenSummary {
  streams: number;
  sent: number;
  failed: number;
  batches: number;
  lateP50Us: number;
  lateP99Us: number;
  lateP999Us: number;
  lateMaxUs: number;
  stoppedEarly: boolean;
}

export interface LoadgenRun {
  pid: number;
  /** Wall-clock ms when the schedule started. */
  started: Promise<number>;
  /** Totals, and packets sent per stream in destination order. */
  done: Promise<{ summary: LoadgenSummary; sent: number[]; failed: number[] }>;
  stop(): void;
}

export interface LoadgenOptions {
  totalMs: number;
  rampMs: number;
  jitterUs: number;
  seed?: number;
  statsFile: string;
}

export function startLoadgen(bin: string, profiles: readonly string[], dests: readonly Destination[], o: LoadgenOptions): LoadgenRun {
  const args = [
    ...profiles.flatMap((p) => ['-p', p]),
    '-T', String(Math.round(o.totalMs)),
    '-r', String(Math.round(o.rampMs)),
    '-j', String(Math.round(o.jitterUs)),
    '-s', String(o.seed ?? 1),
    '-o', o.statsFile,
  ];
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.end(dests.map((d) => `${d.ip} ${d.port} ${d.ssrc >>> 0} ${d.payloadType} ${d.profile}\n`).join(''));
  let out = '';
  let err = '';
  let resolveStart: (ms: number) => void = () => undefined;
  let rejectStart: (err: Error) => void = () => undefined;
  const started = new Promise<number>((resolve, reject) => {
    resolveStart = resolve;
    rejectStart = reject;
  });
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /^start (\d+)$/m.exec(out);
    if (m) resolveStart(Number(m[1]));
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ summary: LoadgenSummary; sent: number[]; failed: number[] }>((resolve, reject) => {
    child.on('error', (e) => {
      rejectStart(e);
      reject(e);
    });
    child.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code !== 0 || !line) {
        const e = new Error(`loadgen failed (exit ${code}): ${err.trim() || out.trim()}`);
        rejectStart(e); // no-op when the schedule had started
        reject(e);
        return;
      }
      const rows = readFileSync(o.statsFile, 'utf8').trim().split('\n').map((l) => l.split(' ').map(Number));
      resolve({ summary: JSON.parse(line) as LoadgenSummary, sent: rows.map((r) => r[0] ?? 0), failed: rows.map((r) => r[1] ?? 0) });
    });
  });
  return { pid: child.pid!, started, done, stop: () => child.kill('SIGTERM') };
}
