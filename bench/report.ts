/**
 * The benchmark's results and how they are reported: one RunResult per measurement, the table,
 * the summary (largest passing N per path, floors, the ffmpeg baseline, G.711, storage overhead)
 * and its printout. bench/run.ts measures; this file only reads what it measured.
 */
import type { AudioCodec } from '../src/sfu/mediaCodecs.ts';
import type { BenchMode, CloseResult, WindowResult } from './ipc.ts';
import { RECORDING_MODES } from './ipc.ts';
import type { MemorySample } from './procstat.ts';
import type { LoadgenSummary } from './loadgen.ts';
import { formatProfile, type ProfileSummary } from './profile.ts';
import type { ExtractResult } from './extract.ts';

export const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

export interface RunResult {
  /** A variant of its mode (e.g. the SFU path with the main-thread tap), kept out of the path's summary. */
  variant?: string;
  label: string;
  mode: BenchMode;
  codec: AudioCodec;
  /** Streams measured (admitted, recorded or consumed). */
  streams: number;
  calls: number;
  /** Whole measurement, process start to exit. */
  wallS: number;
  setupMs: number;
  /** From consent to every admitted call writing (recorder mode). */
  admissionMs: number;
  windowS: number;
  /** % of one core, over the steady window. */
  cpu: {
    node: number;
    nodeMain: number;
    nodeThreads: number;
    workers: number;
    ffmpeg: number;
    total: number;
    loadgen: number;
    /** The local S3 server's processes (Ceph RGW, OSD, MON, MGR; or MinIO). */
    s3: number;
    /** The control plane (the driver process) and PostgreSQL. */
    control: number;
    machineBusy: number;
    /** Everything else on the machine (other users, the S3 server, this driver). */
    others: number;
  };
  perStream: {
    /** % of one core per stream (Node + mediasoup workers + ffmpeg). */
    cpuPct: number;
    nodeCpuPct: number;
    workersCpuPct: number;
    streamsPerCore: number;
    /** (private memory at steady state - idle) / streams, bytes: what one more stream costs. */
    marginalPrivateBytes: number;
    /** All resident memory of the process group / streams, bytes (fixed costs included). */
    rssBytes: number;
  };
  memory: { idle: Record<string, MemorySample>; steady: Record<string, MemorySample> };
  lag?: WindowResult;
  loss: {
    sent: number;
    failedToSend: number;
    received: number;
    written: number;
    /** sent - received: lost between the generator and the recorder's callback. */
    beforeRecorder: number;
    /** received - written (recorder mode): lost inside the recorder. */
    inRecorder: number;
    streamsWithLoss: number;
    transcoderDrops: number;
  };
  overload?: { overflowCalls: number; refused: number; reportedOverloaded: number; packetsWritten: number; detail: string[] };
  loadgen: LoadgenSummary;
  close?: CloseResult;
  notes: string[];
  pass?: boolean;
  failures: string[];
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

export const mb = (b: number): string => (b / 1024 / 1024).toFixed(0);
export const kb = (b: number): string => (b / 1024).toFixed(0);
export const f1 = (x: number): string => x.toFixed(1);
export const f3 = (x: number): string => x.toFixed(3);

/** The floor a recording mode is compared with: the same sockets or transports, nothing recorded. */
export const FLOOR_OF: Partial<Record<BenchMode, BenchMode>> = { recorder: 'sfu-floor', direct: 'direct-floor' };

/** Floor runs by `${mode}:${n}`. */
export type Floors = Map<string, RunResult>;
export const floorKey = (mode: BenchMode, n: number): string => `${mode}:${n}`;

function floorFor(r: RunResult, floors: Floors): RunResult | undefined {
  const fm = FLOOR_OF[r.mode];
  return fm && r.codec === 'opus' ? floors.get(floorKey(fm, r.streams)) : undefined;
}

/** Event-loop p99: the main thread's, and the worst media thread's (direct modes). */
function lagCell(r: RunResult): string {
  if (!r.lag) return '-';
  const t = r.lag.threadLagP99MaxMs;
  return t === undefined ? `${f1(r.lag.lagP99Ms)} ms` : `${f1(r.lag.lagP99Ms)}/${f1(t)} ms`;
}

export function table(runs: RunResult[], floors: Floors): string {
  const head = ['run', 'N', 'lost', 'lag p99 (main/thr)', 'node %', '(main/thr)', 'workers(+ffmpeg) %', 'total %', '%/stream', 'str/core', 'RSS MB', 'KB/str', 'floor %/str', 'x floor', 'upl p99', 's3 %', 'loadgen %', 'cp+pg %', 'busy %', 'pass'];
  const rows = runs.map((r) => {
    const floor = floorFor(r, floors);
    return [
      r.label,
      String(r.streams),
      r.mode === 'ffmpeg' ? '-' : String(r.loss.sent - r.loss.written),
      lagCell(r),
      f1(r.cpu.node),
      `${f1(r.cpu.nodeMain)}/${f1(r.cpu.nodeThreads)}`,
      f1(r.cpu.workers + r.cpu.ffmpeg),
      f1(r.cpu.total),
      f3(r.perStream.cpuPct),
      f1(r.perStream.streamsPerCore),
      mb(sum(Object.values(r.memory.steady).map((m) => m.rss)) - (r.memory.steady.loadgen?.rss ?? 0)),
      kb(r.perStream.marginalPrivateBytes),
      floor ? f3(floor.perStream.cpuPct) : '-',
      floor ? `${(r.perStream.cpuPct / floor.perStream.cpuPct).toFixed(2)}x` : '-',
      r.lag?.upload ? `${r.lag.upload.p99Ms.toFixed(0)} ms` : '-',
      f1(r.cpu.s3),
      f1(r.cpu.loadgen),
      f1(r.cpu.control),
      f1(r.cpu.machineBusy),
      r.pass ? 'yes' : 'NO',
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

export interface PathSummary {
  path: 'direct' | 'sfu';
  largestPassingN: number | undefined;
  /**
   * Private memory (Node + workers, after GC) per additional stream: the slope of a least-squares
   * line through the ramp's steps (needs two or more), which cancels every fixed cost.
   */
  memorySlopeBytesPerStream?: number;
  floor: { n: number; oursPctPerStream: number; floorPctPerStream: number; ratio: number }[];
}

export interface Summary {
  paths: PathSummary[];
  /** The SFU tap into the media threads (PlainTransport consumers) vs the DirectTransport tap on the main thread, same N. */
  taps?: { n: number; threadPct: number; mainPct: number; threadPass: boolean; mainPass: boolean; mainLost: number };
  /** The alternative UDP tap vs the DirectTransport floor (Node and total, % of a core per stream). */
  udpTap?: { n: number; udpNodePct: number; directNodePct: number; udpTotalPct: number; directTotalPct: number }[];
  baseline?: {
    ffmpegStreams: number;
    oursN: number;
    ffmpegCpuPctPerStream: number;
    oursCpuPctPerStream: number;
    cpuRatio: number;
    ffmpegPrivateBytesPerStream: number;
    oursMarginalPrivateBytesPerStream: number;
    memRatio: number;
    /**
     * Ours per stream at that N: (private at N - idle) / N, the issue's "per stream at the largest N",
     * as ffmpeg's figure is per stream at its N. Steadier than the slope, which one step's noise moves.
     */
    oursAtNPrivateBytesPerStream: number;
    memRatioAtN: number;
    oursRssBytesPerStream: number;
    memRatioVsOursTotalRss: number;
  };
  transcoding?: { streams: number; cpuPctPerStream: number; streamsPerCore: number; nodeThreadsPct: number; pass: boolean };
  storage?: { oggOverheadPct: number; sealOverheadPct: number; totalOverheadPct: number; fullSegmentsTotalOverheadPct: number; meanOpusPayloadBytes: number; opusKbps: number };
  extract?: ExtractResult;
  overload?: { checked: number; refused: number };
  profile?: ProfileSummary[];
}

function slope(runs: RunResult[]): number | undefined {
  if (runs.length < 2) return undefined;
  const xs = runs.map((r) => r.streams);
  const ys = runs.map((r) => (r.memory.steady.node?.private ?? 0) + (r.memory.steady.workers?.private ?? 0));
  const mx = sum(xs) / xs.length;
  const my = sum(ys) / ys.length;
  const sxx = sum(xs.map((x) => (x - mx) ** 2));
  return sxx > 0 ? sum(xs.map((x, i) => (x - mx) * (ys[i]! - my))) / sxx : undefined;
}

function pathSummary(path: PathSummary['path'], runs: RunResult[], floors: Floors): PathSummary {
  const mode: BenchMode = path === 'direct' ? 'direct' : 'recorder';
  const rec = runs.filter((r) => r.mode === mode && r.codec === 'opus' && r.variant === undefined);
  const passing = rec.filter((r) => r.pass).map((r) => r.streams);
  const s: PathSummary = { path, largestPassingN: passing.length ? Math.max(...passing) : undefined, floor: [] };
  const m = slope(rec);
  if (m !== undefined) s.memorySlopeBytesPerStream = m;
  for (const r of rec) {
    const f = floorFor(r, floors);
    if (f) s.floor.push({ n: r.streams, oursPctPerStream: r.perStream.cpuPct, floorPctPerStream: f.perStream.cpuPct, ratio: r.perStream.cpuPct / f.perStream.cpuPct });
  }
  return s;
}

export function summarize(runs: RunResult[], floors: Floors, meanOpusPayloadBytes: number, extract: ExtractResult | undefined, profiles: ProfileSummary[]): Summary {
  const direct = pathSummary('direct', runs, floors);
  const s: Summary = { paths: [direct, pathSummary('sfu', runs, floors)].filter((p) => p.floor.length > 0 || p.largestPassingN !== undefined), profile: profiles };
  const mainTap = runs.find((r) => r.variant === 'main-tap');
  const threadTap = mainTap && runs.find((r) => r.mode === 'recorder' && r.variant === undefined && r.streams === mainTap.streams);
  if (mainTap && threadTap) s.taps = { n: mainTap.streams, threadPct: threadTap.perStream.cpuPct, mainPct: mainTap.perStream.cpuPct, threadPass: threadTap.pass ?? false, mainPass: mainTap.pass ?? false, mainLost: mainTap.loss.sent - mainTap.loss.written };
  for (const u of runs.filter((r) => r.mode === 'floor-udp')) {
    const f = floors.get(floorKey('floor', u.streams));
    if (!f) continue;
    (s.udpTap ??= []).push({ n: u.streams, udpNodePct: u.perStream.nodeCpuPct, directNodePct: f.perStream.nodeCpuPct, udpTotalPct: u.perStream.cpuPct, directTotalPct: f.perStream.cpuPct });
  }
  const ff = runs.find((r) => r.mode === 'ffmpeg');
  // Ours at the largest N of the direct path that passed (else its largest run, else the SFU path's).
  const directRuns = runs.filter((r) => r.mode === 'direct' && r.codec === 'opus');
  const sfuRuns = runs.filter((r) => r.mode === 'recorder' && r.codec === 'opus' && r.variant === undefined);
  const ref = directRuns.find((r) => r.streams === direct.largestPassingN) ?? directRuns.at(-1) ?? sfuRuns.at(-1);
  if (ff && ref) {
    // Theirs per stream: the ffmpeg process's private memory plus what the stream added to Node and the workers.
    const ffPrivate = ff.perStream.marginalPrivateBytes;
    // Ours: the ramp's slope when there is one (fixed costs cancel), else this run's marginal figure.
    const oursMem = (ref.mode === 'direct' ? direct.memorySlopeBytesPerStream : undefined) ?? ref.perStream.marginalPrivateBytes;
    s.baseline = {
      ffmpegStreams: ff.streams,
      oursN: ref.streams,
      ffmpegCpuPctPerStream: ff.perStream.cpuPct,
      oursCpuPctPerStream: ref.perStream.cpuPct,
      cpuRatio: ff.perStream.cpuPct / ref.perStream.cpuPct,
      ffmpegPrivateBytesPerStream: ffPrivate,
      oursMarginalPrivateBytesPerStream: oursMem,
      memRatio: ffPrivate / Math.max(1, oursMem),
      oursAtNPrivateBytesPerStream: ref.perStream.marginalPrivateBytes,
      memRatioAtN: ffPrivate / Math.max(1, ref.perStream.marginalPrivateBytes),
      oursRssBytesPerStream: ref.perStream.rssBytes,
      memRatioVsOursTotalRss: ffPrivate / Math.max(1, ref.perStream.rssBytes),
    };
  }
  const pc = runs.find((r) => RECORDING_MODES.includes(r.mode) && r.codec === 'pcmu');
  if (pc) s.transcoding = { streams: pc.streams, cpuPctPerStream: pc.perStream.cpuPct, streamsPerCore: pc.perStream.streamsPerCore, nodeThreadsPct: pc.cpu.nodeThreads, pass: pc.pass ?? false };
  const st = runs.filter((r) => RECORDING_MODES.includes(r.mode) && r.codec === 'opus').map((r) => r.close?.storage).filter((x) => x !== undefined);
  const opus = sum(st.map((x) => x.opusPayloadBytes));
  if (opus > 0) {
    const ogg = sum(st.map((x) => x.oggBytes));
    const sealed = sum(st.map((x) => x.sealedBytes));
    const fullOpus = sum(st.map((x) => x.full.opusPayloadBytes));
    const fullSealed = sum(st.map((x) => x.full.sealedBytes));
    const durationMs = sum(st.map((x) => x.durationMs));
    s.storage = {
      oggOverheadPct: ((ogg - opus) / opus) * 100,
      sealOverheadPct: ((sealed - ogg) / opus) * 100,
      totalOverheadPct: ((sealed - opus) / opus) * 100,
      fullSegmentsTotalOverheadPct: fullOpus > 0 ? ((fullSealed - fullOpus) / fullOpus) * 100 : Number.NaN,
      meanOpusPayloadBytes,
      opusKbps: durationMs > 0 ? (opus * 8) / durationMs : 0,
    };
  }
  if (extract) s.extract = extract;
  const ov = runs.flatMap((r) => (r.overload ? [r.overload] : []));
  if (ov.length) s.overload = { checked: sum(ov.map((x) => x.overflowCalls)), refused: sum(ov.map((x) => x.reportedOverloaded)) };
  return s;
}

const PATH_NAMES: Record<PathSummary['path'], string> = { direct: 'Direct path (SIPREC RTP into the media threads)', sfu: 'SFU path (plain legs through mediasoup, tapped)' };

export function printSummary(s: Summary, runs: RunResult[], lagLimitMs: number): void {
  const lines: string[] = [''];
  for (const p of s.paths) {
    lines.push(`${PATH_NAMES[p.path]}: largest N with zero recorder loss and event-loop p99 < ${lagLimitMs} ms: ${p.largestPassingN !== undefined ? `${p.largestPassingN} streams` : 'none'}`);
    if (p.memorySlopeBytesPerStream !== undefined) lines.push(`  memory per additional recorded stream (slope over the ramp, Node + workers private): ${kb(p.memorySlopeBytesPerStream)} KB`);
    for (const f of p.floor) lines.push(`  floor at N=${f.n}: ours ${f3(f.oursPctPerStream)} %/stream vs floor ${f3(f.floorPctPerStream)} -> ${f.ratio.toFixed(2)}x`);
  }
  if (s.taps) {
    const t = s.taps;
    lines.push(`SFU tap at N=${t.n}: PlainTransport consumer into the media threads ${f3(t.threadPct)} %/stream (${t.threadPass ? 'passed' : 'did NOT pass'}) vs DirectTransport on the main thread ${f3(t.mainPct)} %/stream (${t.mainPass ? 'passed' : `did NOT pass: ${t.mainLost} packets lost`})`);
  }
  for (const u of s.udpTap ?? []) {
    lines.push(
      `Alternative tap at N=${u.n}: PlainTransport -> UDP socket in Node ${f3(u.udpNodePct)} %/stream in Node (${f3(u.udpTotalPct)} total) ` +
        `vs DirectTransport ${f3(u.directNodePct)} in Node (${f3(u.directTotalPct)} total)`,
    );
  }
  if (s.baseline) {
    const b = s.baseline;
    lines.push(
      `ffmpeg per stream (N=${b.ffmpegStreams}) vs ours (N=${b.oursN}): CPU ${f3(b.ffmpegCpuPctPerStream)} vs ${f3(b.oursCpuPctPerStream)} %/stream -> ${b.cpuRatio.toFixed(1)}x less (target >= 4x); ` +
        `memory ${kb(b.ffmpegPrivateBytesPerStream)} KB vs ours at N=${b.oursN} ${kb(b.oursAtNPrivateBytesPerStream)} KB private/stream over idle -> ${b.memRatioAtN.toFixed(0)}x less (target >= 50x); ` +
        `by the ramp's slope ${kb(b.oursMarginalPrivateBytesPerStream)} KB -> ${b.memRatio.toFixed(0)}x; vs our whole RSS/stream ${kb(b.oursRssBytesPerStream)} KB: ${b.memRatioVsOursTotalRss.toFixed(0)}x`,
    );
  }
  if (s.transcoding) lines.push(`G.711 -> Opus: ${s.transcoding.streams} streams at ${f3(s.transcoding.cpuPctPerStream)} %/stream = ${f1(s.transcoding.streamsPerCore)} streams per core (Node non-main threads ${f1(s.transcoding.nodeThreadsPct)}%)${s.transcoding.pass ? '' : ' (run did NOT pass)'}`);
  if (s.storage) {
    lines.push(
      `Stored bytes over Opus payload: +${s.storage.totalOverheadPct.toFixed(2)}% (Ogg +${s.storage.oggOverheadPct.toFixed(2)}%, seal +${s.storage.sealOverheadPct.toFixed(2)}%; full segments +${s.storage.fullSegmentsTotalOverheadPct.toFixed(2)}%) ` +
        `at ${f1(s.storage.opusKbps)} kbit/s Opus (mean packet ${f1(s.storage.meanOpusPayloadBytes)} B); target < 3%`,
    );
  }
  if (s.extract) {
    const e = s.extract;
    lines.push(`Extract of a ${e.audioMinutes}-minute track (${e.segments} segments): ${e.totalMs.toFixed(0)} ms (read+verify+decrypt ${e.readDecryptMs.toFixed(0)} ms, join ${e.joinMs.toFixed(0)} ms) = ${e.minutesPerSecond.toFixed(0)} min of audio/s`);
  }
  if (s.overload) lines.push(`Admission: ${s.overload.refused}/${s.overload.checked} calls above admission.maxStreams refused and reported 'overloaded'`);
  for (const r of runs) {
    const t = r.lag?.threadCpuPct;
    const series = [...(r.lag?.threadLagSeriesMs ?? [])].sort((a, b) => a - b);
    if (t) {
      const lag = series.length ? `; their event-loop p99 per second: median ${series[Math.floor(series.length / 2)]} ms, max ${series.at(-1)} ms` : '';
      lines.push(`  ${r.label}: media threads CPU ${t.map((x) => `${f1(x)}%`).join(' / ')} of a core each (last second of the window)${lag}`);
      const heap = r.lag?.threadHeap;
      const mb = (b: number): string => (b / 1048576).toFixed(0);
      if (heap) lines.push(`  ${r.label}: media threads' heaps after a GC: ${heap.map((h) => `${mb(h.usedBytes)} live / ${mb(h.totalBytes)} committed + ${mb(h.externalBytes)} external MB`).join('; ')}; main thread ${mb(r.lag?.heapUsedBytes ?? 0)} used + ${mb(r.lag?.externalBytes ?? 0)} external MB (before its GC)`);
    }
    for (const f of r.failures) lines.push(`  ${r.label}: FAIL ${f}`);
    for (const n of r.notes) lines.push(`  ${r.label}: note: ${n}`);
  }
  for (const p of s.profile ?? []) lines.push('', formatProfile(p));
  console.log(lines.join('\n'));
}
