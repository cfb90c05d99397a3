/**
 * Capacity benchmark (docs/architecture.md §7): how many recorded streams one machine carries, and what they
 * cost against the floor (merely forwarding the packets into Node) and against the common
 * approach of one ffmpeg process per stream, all measured in the same session.
 *
 *     npm run bench              direct path 500 .. 2000 streams and SFU path 500, 1000, each with its
 *                                floor; ffmpeg baseline, G.711 -> Opus, extract
 *     npm run bench:quick        small smoke run (~3 min)
 *     npm run bench:profile      one SFU-path run at 1000 streams, CPU-profiled over the steady window
 *     npm run bench -- --direct 1500,2000 --ramp 0 --baseline 0 --pcmu 0 --no-floor --no-extract
 *     npm run bench -- --udp-floor    also measure an alternative SFU tap (PlainTransport -> UDP socket in Node)
 *
 * Two paths into the recorder. Direct (`--direct`): each call a SIPREC session set up over SIP with
 * metadata, its Opus RTP sent straight to the media threads' own sockets (no SFU hop), recorded
 * there through the gate in shared memory; its floor is the same sessions and sockets without
 * consent (every packet received in its thread and dropped at the gate). SFU (`--ramp`): plain
 * legs into mediasoup PlainTransports, tapped by a DirectTransport consumer on the main thread;
 * its floor is that tap into a consumer that only counts.
 *
 * Every measurement runs the process under test (bench/recorderProcess.ts) in its own OS
 * process: CPU (utime + stime) and memory (RSS, private) of its Node process and of each
 * mediasoup worker, of each ffmpeg, and of the load generator come from /proc. The load is real
 * RTP from bench/loadgen.c (one socket, sendmmsg, 20 ms per stream with per-stream phases and a
 * little jitter, calls arriving over a ramp) into mediasoup PlainTransports; consent and agent
 * schedules are posted to the control plane's ingest API (a control plane in this process, on a
 * throwaway PostgreSQL cluster, a fresh database per run) and reach the recorder over the policy
 * stream; the monthly cap is decided by the control plane.
 *
 * A step of the ramp passes when: every admitted call recorded from its first packet, no packet
 * sent was missing from the recording (sent by the generator = written by the recorder, per
 * stream), the event loop's p99 delay stayed under 50 ms over the steady window, the control
 * stream never went stale, and calls above `admission.maxStreams` were refused (`overloaded`).
 * A failing step ends the ramp (unless --continue).
 *
 * Figures: CPU is % of one core over the steady window (recorder 30 s, floors 20 s); per stream =
 * (Node + mediasoup workers [+ ffmpeg]) / streams. "x floor" = ours / floor at the same N. The
 * ffmpeg ratio compares ours at 1000 streams (else the largest step) with ffmpeg at its N. Memory
 * per stream: private memory after a GC at steady state minus at idle, / N; the summary also
 * fits a line over the ramp (fixed costs cancel). Event-loop delay = how late a 10 ms timer fires.
 *
 * Output: a table on stdout, JSON in bench-results/bench-<date>.json, the processes' logs in
 * bench-results/logs-<date>/. The full run keeps within ~13 min (--budget, seconds).
 */
import { execFileSync, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { ControlPlane } from '../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../src/controlplane/config.ts';
import { createToken, upsertIntegration } from '../src/facts/integrations.ts';
import { createLogger } from '../src/log/logger.ts';
import { createControlPlaneMetrics } from '../src/metrics/controlPlaneMetrics.ts';
import { startThrowawayCluster, type ThrowawayCluster } from '../scripts/pg/cluster.ts';
import { PolicyFacts, storedRecordingState } from '../test/support/policyFacts.ts';
import { Keyring } from '../src/crypto/Keyring.ts';
import { ensureS3Server, type S3Server } from '../scripts/s3/devServer.ts';
import { createS3Client } from '../src/storage/s3Endpoint.ts';
import type { AudioCodec } from '../src/sfu/mediaCodecs.ts';
import { ChildRpc, DIRECT_MODES, RECORDING_MODES, UNCONSENTED_MODES, type BenchMode, type CallSpec, type CloseResult, type CountersResult, type InitResult, type OpenedLeg } from './ipc.ts';
import { buildLoadgen, startLoadgen, writeProfiles, ROOT, type Destination, type LoadProfiles } from './loadgen.ts';
import { snapshot, cpuPercent, machineBusyPercent, pidsByCommand, POSTGRES_COMMANDS, S3_SERVER_COMMANDS, type ProcessGroup } from './procstat.ts';
import { measureExtract, type ExtractResult } from './extract.ts';
import { summarizeProfile, type ProfileSummary } from './profile.ts';
import { FLOOR_OF, f1, f3, floorKey, kb, printSummary, sum, summarize, table, type Floors, type RunResult } from './report.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

interface BenchOptions {
  preset: 'full' | 'quick' | 'profile';
  /** SFU path: recorded streams per step (N/2 two-party calls); empty skips the path. */
  ramp: number[];
  /** Direct path (SIPREC sessions into the media threads): streams per step; empty skips it. */
  direct: number[];
  steadyS: number;
  /** Calls arrive over this many seconds (spreads segment boundaries like real arrivals do). */
  arrivalS: number;
  warmupS: number;
  jitterUs: number;
  floor: boolean;
  /** Run the SFU path's largest step again with the main-thread DirectTransport tap (OPTIN_SFU_TAP=main). */
  compareTap: boolean;
  /** Also measure the alternative UDP tap (mode floor-udp) at each step: opt-in, for comparison. */
  udpFloor: boolean;
  /** Streams for the ffmpeg-per-stream baseline (0 = skip). */
  baseline: number;
  /** Streams for the G.711 -> Opus run on the direct path (0 = skip). */
  pcmu: number;
  extract: boolean;
  /** Profile the recorder's main thread over the steady window (V8 CPU profile) and summarise the hot spots. */
  cpuProfile: boolean;
  /** Keep ramping after a failing step. */
  continueOnFail: boolean;
  /** Extra calls opened above admission.maxStreams to prove they are refused, per step. */
  overflowCalls: number;
  segmentSeconds: number;
  /** The recorder's OPTIN_MANIFEST_FLUSH_SECONDS for the run. */
  manifestFlushS: number;
  workers: number;
  transcoderThreads: number;
  lagLimitMs: number;
  /** Wall-clock budget: optional phases that would start after it minus a margin are skipped. */
  budgetS: number;
  outDir: string;
}

function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      profile: { type: 'boolean' },
      ramp: { type: 'string' },
      steady: { type: 'string' },
      arrival: { type: 'string' },
      warmup: { type: 'string' },
      'jitter-us': { type: 'string' },
      'no-floor': { type: 'boolean' },
      'udp-floor': { type: 'boolean' },
      'no-tap-compare': { type: 'boolean' },
      baseline: { type: 'string' },
      pcmu: { type: 'string' },
      direct: { type: 'string' },
      'no-extract': { type: 'boolean' },
      'cpu-prof': { type: 'boolean' },
      continue: { type: 'boolean' },
      overflow: { type: 'string' },
      'segment-seconds': { type: 'string' },
      'manifest-flush': { type: 'string' },
      workers: { type: 'string' },
      'transcoder-threads': { type: 'string' },
      out: { type: 'string' },
      budget: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
    process.exit(0);
  }
  const preset: BenchOptions['preset'] = values.profile ? 'profile' : values.quick ? 'quick' : 'full';
  const cores = os.availableParallelism();
  const defaults: Record<BenchOptions['preset'], Partial<BenchOptions>> = {
    // Calls arrive over one segment length, so segment completions (and their PUTs) spread evenly
    // over time as they do with real calls, not in bursts every segment length.
    full: { direct: [1000, 1500, 2000], ramp: [1000], steadyS: 30, arrivalS: 60, warmupS: 3, baseline: 50, pcmu: 300, floor: true, extract: true, segmentSeconds: 60, manifestFlushS: 60 },
    quick: { direct: [200], ramp: [200], steadyS: 10, arrivalS: 3, warmupS: 2, baseline: 10, pcmu: 40, floor: true, extract: true, segmentSeconds: 10, manifestFlushS: 5 },
    profile: { direct: [], ramp: [1000], steadyS: 15, arrivalS: 10, warmupS: 3, baseline: 0, pcmu: 0, floor: false, extract: false, cpuProfile: true, segmentSeconds: 10, manifestFlushS: 5 },
  };
  const d = defaults[preset];
  const num = (v: string | undefined, fallback: number): number => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`bench: ${v} is not a non-negative number`);
    return n;
  };
  const steps = (v: string | undefined, fallback: number[], flag: string): number[] => {
    if (v === undefined) return fallback;
    const out = v.split(',').map((s) => num(s.trim(), 0)).filter((n) => n > 0);
    if (out.some((n) => n < 2 || n % 2 !== 0)) throw new Error(`bench: --${flag} takes even stream counts >= 2 (two-party calls), e.g. 500,1000; 0 skips`);
    return out;
  };
  return {
    preset,
    ramp: steps(values.ramp, d.ramp!, 'ramp'),
    direct: steps(values.direct, d.direct!, 'direct'),
    steadyS: num(values.steady, d.steadyS!),
    arrivalS: num(values.arrival, d.arrivalS!),
    warmupS: num(values.warmup, d.warmupS!),
    jitterUs: num(values['jitter-us'], 2000),
    floor: values['no-floor'] ? false : d.floor!,
    udpFloor: values['udp-floor'] ?? false,
    compareTap: !(values['no-tap-compare'] ?? false) && preset === 'full',
    baseline: num(values.baseline, d.baseline!),
    pcmu: num(values.pcmu, d.pcmu!),
    extract: values['no-extract'] ? false : d.extract!,
    cpuProfile: values['cpu-prof'] ?? d.cpuProfile ?? false,
    continueOnFail: values.continue ?? false,
    overflowCalls: num(values.overflow, 1),
    segmentSeconds: num(values['segment-seconds'], d.segmentSeconds!),
    manifestFlushS: num(values['manifest-flush'], d.manifestFlushS!),
    workers: num(values.workers, cores),
    transcoderThreads: num(values['transcoder-threads'], 1),
    lagLimitMs: 50,
    // 30 minutes for the whole `npm run bench`: the last phase may start at budget - 90 s, and the
    // longest phase (2000 streams) takes ~2 min, then the bucket cleanup (<= 45 s).
    budgetS: num(values.budget, preset === 'full' ? 1800 : 600),
    outDir: path.resolve(ROOT, values.out ?? 'bench-results'),
  };
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// One measurement
// ---------------------------------------------------------------------------------------------

interface Context {
  o: BenchOptions;
  s3: S3Server;
  /** The control plane's PostgreSQL (a database per run). */
  pg: ThrowawayCluster;
  loadgenBin: string;
  profiles: LoadProfiles;
  logDir: string;
  cacheDir: string;
  bucketPrefixes: string[];
  profileDir: string;
}

const log = (msg: string): void => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

async function measure(ctx: Context, mode: BenchMode, streams: number, codec: AudioCodec, label: string, variant?: { name: string; overrides: Record<string, unknown> }): Promise<RunResult> {
  const { o } = ctx;
  const tag = randomBytes(3).toString('hex');
  const wallStart = performance.now();
  const calls = streams / 2;
  // SIPREC sessions above the limit are refused with 503 at the INVITE (test/integration/siprec); here the SFU path's.
  const overflowCalls = mode === 'recorder' ? o.overflowCalls : 0;
  const direct = DIRECT_MODES.includes(mode);
  log(`${label}: ${streams} ${codec} streams (${calls} calls${overflowCalls ? ` + ${overflowCalls} above the admission limit` : ''}), mode ${mode}`);

  // A fresh control plane (and database) per run: its snapshot holds only this run's calls.
  const secret = randomBytes(32).toString('base64url');
  const dbName = `bench_${tag}`;
  const admin = new pg.Client({ connectionString: ctx.pg.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`); // a name of ours: bench_<6 hex>
  await admin.end();
  const dbUrl = new URL(ctx.pg.url);
  dbUrl.pathname = `/${dbName}`;
  const cpDir = mkdtempSync(path.join(os.tmpdir(), 'optin-bench-cp-'));
  const cp = await ControlPlane.start(
    loadControlPlaneConfig(
      { OPTIN_CONTROL_SECRET: secret, OPTIN_CONTROL_PORT: '0', OPTIN_DATABASE_URL: dbUrl.toString(), OPTIN_DATA_DIR: cpDir, OPTIN_LOG_LEVEL: 'warn' },
      { 'http.rateLimitPerMinute': 1_000_000, 'database.poolSize': 8 },
    ),
    { logger: createLogger('warn'), metrics: createControlPlaneMetrics({ defaultMetrics: false }), store: null },
  );
  const tokens = { ivr: '', wfm: '', hr: '', ops: '' };
  for (const scope of ['ivr', 'wfm', 'hr', 'ops'] as const) {
    const t = createToken(`bench-${scope}`);
    await upsertIntegration(cp.db, { id: `bench-${scope}`, secretHash: t.secretHash, scopes: [scope] }, Date.now());
    tokens[scope] = t.token;
  }
  const policy = new PolicyFacts({ url: cp.url, tokens });
  /** Posts facts `n` at a time (the API answers each after its commit). */
  const postAll = async (jobs: (() => Promise<unknown>)[], n = 16): Promise<void> => {
    for (let i = 0; i < jobs.length; i += n) await Promise.all(jobs.slice(i, i + n).map((j) => j()));
  };
  const bucketPrefix = `b${tag}-`;
  const records = RECORDING_MODES.includes(mode);
  if (records) ctx.bucketPrefixes.push(bucketPrefix);
  const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'optin-bench-spool-'));
  const overrides: Record<string, unknown> = {
    logLevel: 'warn',
    workerId: `bench-${tag}`,
    's3.endpoint': ctx.s3.endpoint,
    's3.accessKey': ctx.s3.accessKey,
    's3.secretKey': ctx.s3.secretKey,
    's3.bucketPrefix': bucketPrefix,
    keyring: { activeKeyId: 'b1', keys: { b1: Keyring.generateKeyBase64() } },
    'control.url': cp.streamUrl,
    'control.secret': secret,
    // The recorder refuses to start without an audit key; bench buckets stay removable (GOVERNANCE, 1 day).
    'audit.hmacKey': randomBytes(32).toString('hex'),
    'audit.lockMode': 'GOVERNANCE',
    'audit.lockDays': 1,
    'spool.dir': spoolDir,
    'mediasoup.workers': o.workers,
    // A port range of our own, away from the default one tests use on this shared machine.
    'mediasoup.rtcMinPort': 20000,
    'mediasoup.rtcMaxPort': 29999,
    'admission.maxStreams': streams,
    segmentSeconds: o.segmentSeconds,
    manifestFlushSeconds: o.manifestFlushS,
    transcoderThreads: o.transcoderThreads,
    ...(variant?.overrides ?? {}),
    ...(direct
      ? {
          'siprec.enabled': true,
          'siprec.udpPort': 0,
          'siprec.tcpPort': null,
          'siprec.media': { portMin: 30_000, portMax: 39_999, maxStreams: streams },
          // The bench's SRC names participants by their ids (an SBC's AoRs are hashed by default).
          'siprec.mapping': { siprec: { participant: [{ from: 'aor-user', transform: 'verbatim' }] } },
          // Every stream starts sending within the arrival ramp: the SRS's media timeout must not end the late ones first.
          'siprec.mediaTimeoutSeconds': Math.ceil(o.arrivalS + o.warmupS + 60),
        }
      : {}),
  };
  const logFile = path.join(ctx.logDir, `${label}.log`);
  const logFd = openSync(logFile, 'a');
  const profiling = o.cpuProfile && mode === 'recorder';
  const child = fork(path.join(HERE, 'recorderProcess.ts'), [], {
    cwd: ROOT,
    // OPTIN_BENCH_CPU_PROF_DIR: V8 CPU profiles of every thread of the process under test (media threads included);
    // OPTIN_BENCH_NODE_ARGS: more Node flags for it (e.g. --trace-gc).
    // --max-semi-space-size=2 as the recorder's launchers run it (package.json `recorder`, docker/Dockerfile).
    execArgv: ['--import', 'tsx', '--expose-gc', '--max-semi-space-size=2', ...(process.env.OPTIN_BENCH_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.OPTIN_BENCH_CPU_PROF_DIR}`] : []), ...(process.env.OPTIN_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    stdio: ['ignore', logFd, logFd, 'ipc'],
    // OPTIN_BENCH_RECORDER_ENV: environment for the process under test only, `K=V K=V` (an allocator
    // to compare, e.g. `LD_PRELOAD=... MALLOC_ARENA_MAX=2`), not for the S3 server or the load generator.
    env: { ...process.env, ...recorderEnv(process.env.OPTIN_BENCH_RECORDER_ENV) },
  });
  const rpc = new ChildRpc(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const notes: string[] = [];
  const failures: string[] = [];
  try {
    const init: InitResult = await rpc.call('init', {
      mode,
      overrides,
      ffmpegDir: path.join(ctx.cacheDir, `ffmpeg-${tag}`),
      ffmpegBasePort: 30000,
      ...(profiling ? { cpuProfileFile: path.join(ctx.profileDir, `${label}.cpuprofile`) } : {}),
    });
    await sleep(500);
    const idle = snapshot({ node: [init.pid], workers: init.workerPids });

    // --- calls: schedules and call facts through the control plane's API, then Routers and legs.
    const specs: CallSpec[] = [];
    const setup: (() => Promise<unknown>)[] = [];
    for (let i = 0; i < calls + overflowCalls; i++) {
      const callId = `c${tag}x${i}`;
      specs.push({
        callId,
        legs: [
          { participantId: 'pa', codec, ssrc: (0x10000000 + i * 2) >>> 0 },
          { participantId: 'pc', codec, ssrc: (0x10000001 + i * 2) >>> 0 },
        ],
      });
      // The direct floor's calls are known to the control plane too (same path), only never consented.
      if (records || UNCONSENTED_MODES.includes(mode)) {
        const agentId = `ag${tag}x${i}`;
        // One agent per call: each agent's monthly-cap counter is its own row (R6).
        setup.push(async () => {
          await policy.setSchedule(agentId, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 100);
          await policy.startCall(callId, [
            { participantId: 'pa', role: 'agent', subjectId: agentId },
            { participantId: 'pc', role: 'customer', subjectId: `cu${tag}x${i}` },
          ]);
        });
      }
    }
    const tFacts = performance.now();
    await postAll(setup);
    if (setup.length > 0) log(`${label}: ${setup.length * 2} schedule and call facts posted in ${((performance.now() - tFacts) / 1000).toFixed(1)} s`);
    const regular = specs.slice(0, calls);
    const overflow = specs.slice(calls);
    const t0 = performance.now();
    const legs: OpenedLeg[] = [];
    let pacedMs = 0;
    for (let i = 0; i < regular.length; i += 50) {
      const r = await rpc.call('open', { calls: regular.slice(i, i + 50), concurrency: 4 });
      legs.push(...r.legs);
      pacedMs += r.pacedMs;
    }
    if (pacedMs > 1000) notes.push(`call setup waited ${(pacedMs / 1000).toFixed(1)} s for the recorder's lag figure to settle`);
    // The overflow calls come after every admitted one, so the admission check sees them all.
    if (overflow.length > 0) legs.push(...(await rpc.call('open', { calls: overflow, concurrency: 1 })).legs);
    const setupMs = performance.now() - t0;
    log(`${label}: ${legs.length} legs set up in ${(setupMs / 1000).toFixed(1)} s`);

    // --- consent (R3: an explicit act with evidence), then wait until every admitted call records.
    let admissionMs = 0;
    if (records) {
      const t1 = performance.now();
      await postAll(specs.map((s) => () => policy.grantConsent(s.callId, 'pc', { method: 'dtmf', at: Date.now(), infoVersion: 'bench-v1' })));
      const ids = regular.map((s) => s.callId);
      let notWriting = ids;
      const deadline = Date.now() + 180_000;
      while (Date.now() < deadline) {
        notWriting = (await rpc.call('status', { callIds: ids })).notWriting;
        if (notWriting.length === 0) break;
        await sleep(250);
      }
      admissionMs = performance.now() - t1;
      if (notWriting.length > 0) failures.push(`${notWriting.length} admitted calls never started recording`);
      log(`${label}: consent granted; ${ids.length - notWriting.length}/${ids.length} calls recording after ${(admissionMs / 1000).toFixed(1)} s`);
    }
    if (mode === 'ffmpeg') {
      await sleep(1500); // every ffmpeg bound its port and waits for RTP
      await rpc.call('resume', {});
    }

    // --- load: every leg (overflow ones too: refused calls still get media, R5).
    const dests: Destination[] = legs.map((l) => ({
      ip: l.ip,
      port: l.rtpPort,
      ssrc: l.ssrc,
      payloadType: l.payloadType,
      profile: ctx.profiles.index[codec === 'opus' ? 'opus' : 'pcmu'][l.participantId === 'pa' ? 'agent' : 'customer'],
    }));
    // The floor writes no segments, so its calls need not arrive spread out: a short ramp saves
    // time; the steady window sees the same load either way.
    const floorMode = mode === 'floor' || mode === 'floor-udp' || UNCONSENTED_MODES.includes(mode);
    // ffmpeg writes nothing to S3 either, and its RTP input gives up on a stream that stays silent too long.
    const arrivalMs = (floorMode ? Math.min(o.arrivalS, 3) : mode === 'ffmpeg' ? Math.min(o.arrivalS, 10) : o.arrivalS) * 1000;
    const warmupMs = mode === 'ffmpeg' ? Math.max(o.warmupS * 1000, 5000) : o.warmupS * 1000;
    // The floors' cost converges within seconds (no segments, no uploads): 20 s is plenty and
    // keeps the whole run inside its time budget.
    const steadyMs = (floorMode ? Math.min(o.steadyS, 20) : o.steadyS) * 1000;
    const run = startLoadgen(ctx.loadgenBin, ctx.profiles.files, dests, {
      // ffmpeg is stopped while media still flows (see recorderProcess stopProcess): a longer tail.
      totalMs: arrivalMs + warmupMs + steadyMs + (mode === 'ffmpeg' ? 5000 : 1000),
      rampMs: arrivalMs,
      jitterUs: o.jitterUs,
      seed: parseInt(tag, 16),
      statsFile: path.join(ctx.cacheDir, `loadgen-${tag}.txt`),
    });
    const startedAt = await run.started;
    await sleep(Math.max(0, startedAt + arrivalMs + warmupMs - Date.now()));
    const pids = await rpc.call('pids', {});
    // Every core's use: the recorder (main thread and media threads), mediasoup workers, ffmpeg, the
    // load generator, the S3 server, and the control plane (this driver process) with PostgreSQL.
    const group: ProcessGroup = {
      node: [init.pid],
      workers: pids.workerPids,
      ffmpeg: pids.ffmpegPids,
      loadgen: [run.pid],
      s3: pidsByCommand(S3_SERVER_COMMANDS),
      control: [process.pid, ...pidsByCommand(POSTGRES_COMMANDS)],
    };
    if (mode === 'ffmpeg' && pids.ffmpegPids.length < legs.length) failures.push(`only ${pids.ffmpegPids.length} of ${legs.length} ffmpeg processes alive`);
    await rpc.call('windowStart', {});
    const a = snapshot(group, ['node']);
    await sleep(steadyMs);
    const b = snapshot(group, ['node']);
    const lag = await rpc.call('windowEnd', {});
    // Memory after the window, once the process under test collected its garbage (as at idle).
    const mem = snapshot(group);
    let ffmpegClose: CloseResult | undefined;
    if (mode === 'ffmpeg') ffmpegClose = await rpc.call('close', {}, 60_000);
    const gen = await run.done;
    const counters = mode === 'ffmpeg' ? { streams: [], dropped: {}, admissionRejections: {}, transcoderPendingFrames: 0 } : await settledCounters(rpc);

    // --- overload: calls above the limit must be reported not recorded, and write nothing.
    const lagRefusals = counters.admissionRejections['event-loop-lag'] ?? 0;
    if (lagRefusals > 0) failures.push(`${lagRefusals} calls refused at admission for event-loop lag during setup`);
    let overload: RunResult['overload'];
    if (overflow.length > 0) {
      const detail: string[] = [];
      let reported = 0;
      let refused = 0;
      let written = 0;
      for (const s of overflow) {
        const state = await storedRecordingState(cp.db, s.callId);
        const st = counters.streams.filter((c) => c.callId === s.callId);
        written += sum(st.map((c) => c.written));
        if (state && !state.recording) refused++;
        if (state?.reasons.includes('overloaded')) reported++;
        detail.push(`${s.callId}: ${state ? `${state.recording ? 'recording' : 'not recording'} (${state.reasons.join(', ')})` : 'no report'}, received ${sum(st.map((c) => c.received))}, written ${sum(st.map((c) => c.written))}`);
      }
      overload = { overflowCalls: overflow.length, refused, reportedOverloaded: reported, packetsWritten: written, detail };
      if (reported !== overflow.length || written > 0) failures.push(`calls above admission.maxStreams were not all refused: ${detail.join('; ')}`);
    }

    const close = ffmpegClose ?? (await rpc.call('close', {}, 300_000));
    await exited;

    // --- accounting
    const cpu = cpuPercent(a, b);
    const windowS = (b.atMs - a.atMs) / 1000;
    const measured = new Set(regular.map((s) => s.callId));
    const loss = lossOf(mode, legs, gen.sent, gen.failed, counters, measured);
    const n = streams;
    const ours = (cpu.node ?? 0) + (cpu.workers ?? 0) + (cpu.ffmpeg ?? 0);
    const busy = machineBusyPercent(a.machine, b.machine);
    const roles = ['node', 'workers', 'ffmpeg'];
    const steadyPrivate = sum(roles.map((r) => mem.memory[r]?.private ?? 0));
    const idlePrivate = (idle.memory.node?.private ?? 0) + (idle.memory.workers?.private ?? 0);
    const rss = sum(roles.map((r) => mem.memory[r]?.rss ?? 0));
    const result: RunResult = {
      ...(variant ? { variant: variant.name } : {}),
      label,
      mode,
      codec,
      streams: n,
      calls,
      wallS: (performance.now() - wallStart) / 1000,
      setupMs,
      admissionMs,
      windowS,
      cpu: {
        node: cpu.node ?? 0,
        nodeMain: cpu['node.main'] ?? 0,
        nodeThreads: cpu['node.threads'] ?? 0,
        workers: cpu.workers ?? 0,
        ffmpeg: cpu.ffmpeg ?? 0,
        total: ours,
        loadgen: cpu.loadgen ?? 0,
        s3: cpu.s3 ?? 0,
        control: cpu.control ?? 0,
        machineBusy: busy,
        others: Math.max(0, busy - ours - (cpu.loadgen ?? 0) - (cpu.s3 ?? 0) - (cpu.control ?? 0)),
      },
      perStream: {
        cpuPct: ours / n,
        nodeCpuPct: (cpu.node ?? 0) / n,
        workersCpuPct: (cpu.workers ?? 0) / n,
        streamsPerCore: ours > 0 ? (100 * n) / ours : 0,
        marginalPrivateBytes: (steadyPrivate - idlePrivate) / n,
        rssBytes: rss / n,
      },
      memory: { idle: idle.memory, steady: mem.memory },
      lag,
      loss,
      overload,
      loadgen: gen.summary,
      close,
      notes,
      failures,
    };
    judge(ctx, result);
    return result;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await cp.close();
    rmSync(cpDir, { recursive: true, force: true });
    closeSync(logFd);
    rmSync(spoolDir, { recursive: true, force: true });
    rmSync(path.join(ctx.cacheDir, `ffmpeg-${tag}`), { recursive: true, force: true });
    rmSync(path.join(ctx.cacheDir, `loadgen-${tag}.txt`), { force: true });
  }
}

/**
 * Counters once the pipeline is empty: packets still queued between the worker and Node, or
 * waiting in a jitter buffer for the next tick, are late, not lost. Read until two reads 500 ms
 * apart agree (at most 15 s).
 */
async function settledCounters(rpc: ChildRpc): Promise<CountersResult> {
  const total = (c: CountersResult) => sum(c.streams.map((x) => x.received + x.written));
  await sleep(600);
  let last = await rpc.call('counters', {});
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    await sleep(500);
    const next = await rpc.call('counters', {});
    if (total(next) === total(last)) return next;
    last = next;
  }
  return last;
}

/** Per stream: sent by the generator vs received by the tap vs written into the recording. */
function lossOf(mode: BenchMode, legs: OpenedLeg[], sent: number[], failed: number[], counters: CountersResult, measured: Set<string>): RunResult['loss'] {
  const byKey = new Map(counters.streams.map((c) => [`${c.callId}/${c.participantId}`, c]));
  const out = { sent: 0, failedToSend: 0, received: 0, written: 0, beforeRecorder: 0, inRecorder: 0, streamsWithLoss: 0, transcoderDrops: counters.dropped.transcoder ?? 0 };
  legs.forEach((l, i) => {
    if (!measured.has(l.callId)) return;
    const c = byKey.get(`${l.callId}/${l.participantId}`);
    const s = sent[i] ?? 0;
    out.sent += s;
    out.failedToSend += failed[i] ?? 0;
    if (mode === 'ffmpeg') return; // ffmpeg keeps no counters: its output files are checked instead
    const received = c?.received ?? 0;
    const written = RECORDING_MODES.includes(mode) ? (c?.written ?? 0) : received;
    out.received += received;
    out.written += written;
    if (written < s) out.streamsWithLoss++;
  });
  out.beforeRecorder = Math.max(0, out.sent - out.received);
  out.inRecorder = Math.max(0, out.received - out.written);
  return out;
}

function judge(ctx: Context, r: RunResult): void {
  const { o } = ctx;
  if (r.loadgen.lateP99Us > 5000) r.notes.push(`the load generator itself ran late (p99 ${r.loadgen.lateP99Us} us): the machine was saturated`);
  if (r.loss.failedToSend > 0) r.notes.push(`${r.loss.failedToSend} packets the generator could not send`);
  if (r.cpu.others > 30) r.notes.push(`other processes used ${r.cpu.others.toFixed(0)}% of a core during the window (shared machine)`);
  if (r.mode === 'ffmpeg') {
    if ((r.close?.ffmpegFilesWithData ?? 0) < r.streams) r.failures.push(`only ${r.close?.ffmpegFilesWithData ?? 0} of ${r.streams} ffmpeg outputs have data`);
    r.pass = r.failures.length === 0;
    return;
  }
  if ((r.lag?.upload?.spooled ?? 0) > 0) r.notes.push(`${r.lag?.upload?.spooled} segments went to the local spool: S3 answered slower than the store's upload timeout`);
  const lost = r.loss.sent - r.loss.written;
  if (lost > 0) r.failures.push(`${lost} packets sent but not ${RECORDING_MODES.includes(r.mode) ? 'written' : 'received'} (${r.loss.beforeRecorder} before the tap, ${r.loss.inRecorder} inside; ${r.loss.streamsWithLoss} streams)`);
  if (r.loss.transcoderDrops > 0) r.failures.push(`${r.loss.transcoderDrops} frames refused by the transcoder (written as silence)`);
  if (r.lag && r.lag.lagP99Ms >= o.lagLimitMs) r.failures.push(`event-loop delay p99 ${r.lag.lagP99Ms.toFixed(1)} ms >= ${o.lagLimitMs} ms`);
  // The media threads' loop: how late their packets are read (their drains' sleep included). Not
  // the decisions' loop (the main thread's, judged above); reported, and a note past the limit.
  const threadLag = r.lag?.threadLagP99MaxMs;
  if (threadLag !== undefined && threadLag >= o.lagLimitMs) r.notes.push(`a media thread's event-loop delay p99 reached ${threadLag.toFixed(1)} ms (>= ${o.lagLimitMs} ms) in some second of the window`);
  if (r.lag && r.lag.staleEvents > 0) r.failures.push(`control stream went stale ${r.lag.staleEvents} times (gates failed closed)`);
  r.pass = r.failures.length === 0;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

function gitDescribe(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}+dirty` : head;
  } catch {
    return 'unknown';
  }
}

async function removeBuckets(s3: S3Server, prefixes: string[], budgetMs: number): Promise<void> {
  const client = createS3Client(s3);
  const deadline = Date.now() + budgetMs;
  for (const prefix of prefixes) {
    for (const role of ['optin-media', 'optin-keys', 'optin-audit']) {
      if (Date.now() > deadline) return;
      const bucket = `${prefix}${role}`;
      try {
        if (!(await client.bucketExists(bucket))) continue;
        const names: { name: string; versionId?: string }[] = [];
        for await (const item of client.listObjects(bucket, '', true, { IncludeVersion: true }) as AsyncIterable<{ name?: string; versionId?: string | null }>) {
          if (item.name) names.push({ name: item.name, ...(item.versionId ? { versionId: item.versionId } : {}) });
        }
        for (let i = 0; i < names.length && Date.now() < deadline; i += 1000) await client.removeObjects(bucket, names.slice(i, i + 1000));
        await client.removeBucket(bucket);
      } catch {
        // Best effort: the bucket lifecycle rules expire the objects anyway.
      }
    }
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const started = Date.now();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  // The compiled generator and its packet files; outside node_modules so `npm ci` keeps them.
  const cacheDir = path.join(process.env.OPTIN_STATE_DIR ?? path.join(os.homedir(), '.cache', 'optin'), 'bench');
  const logDir = path.join(o.outDir, `logs-${stamp}`);
  const profileDir = path.join(o.outDir, `profiles-${stamp}`);
  mkdirSync(logDir, { recursive: true });
  mkdirSync(cacheDir, { recursive: true });
  if (o.cpuProfile) mkdirSync(profileDir, { recursive: true });

  const loadgenBin = buildLoadgen(cacheDir);
  const profiles = writeProfiles(cacheDir);
  log(`preset ${o.preset}: direct ${o.direct.join(', ') || '-'} streams, SFU ${o.ramp.join(', ') || '-'} streams; steady ${o.steadyS} s, arrivals over ${o.arrivalS} s; ${o.workers} mediasoup workers; ${os.availableParallelism()} cores`);
  const s3 = await ensureS3Server();
  log(`S3: ${s3.endpoint} (${s3.kind})`);
  const pgCluster = await startThrowawayCluster({ fast: true });
  log(`PostgreSQL for the control plane: throwaway cluster (fsync off)`);
  const ctx: Context = { o, s3, pg: pgCluster, loadgenBin, profiles, logDir, cacheDir, bucketPrefixes: [], profileDir };
  const runs: RunResult[] = [];
  const floors: Floors = new Map();
  const skipped: string[] = [];
  // `npm run bench` must end within the budget on a 2-core machine: a phase that would start in
  // the last 90 s is skipped (and said so), not squeezed.
  const inBudget = (phase: string): boolean => {
    if ((Date.now() - started) / 1000 < o.budgetS - 90) return true;
    skipped.push(phase);
    log(`${phase}: skipped, the ${o.budgetS} s budget is nearly used`);
    return false;
  };
  /** One path's ramp, each step followed by its floor; stops at the first failing step (unless --continue). */
  const ramp = async (mode: 'direct' | 'recorder', steps: number[]): Promise<void> => {
    const floorMode = FLOOR_OF[mode]!;
    const name = mode === 'direct' ? 'direct' : 'sfu';
    for (const n of steps) {
      if (!inBudget(`${name}-${n}`)) break;
      const r = await measure(ctx, mode, n, 'opus', `${name}-${n}`);
      runs.push(r);
      const threadLag = r.lag?.threadLagP99MaxMs;
      log(`${name}-${n}: ${r.pass ? 'PASS' : 'FAIL'} lost ${r.loss.sent - r.loss.written}, lag p99 ${f1(r.lag?.lagP99Ms ?? 0)} ms${threadLag === undefined ? '' : ` (media threads ${f1(threadLag)} ms)`}, CPU ${f1(r.cpu.total)}% (${f3(r.perStream.cpuPct)}%/stream)`);
      if (o.floor && inBudget(`${floorMode}-${n}`)) {
        const f = await measure(ctx, floorMode, n, 'opus', `${name}-floor-${n}`);
        runs.push(f);
        floors.set(floorKey(floorMode, n), f);
        log(`${name}-floor-${n}: CPU ${f1(f.cpu.total)}% (${f3(f.perStream.cpuPct)}%/stream) -> ours ${(r.perStream.cpuPct / f.perStream.cpuPct).toFixed(2)}x`);
      }
      if (mode === 'recorder' && o.udpFloor && inBudget(`floor-udp-${n}`)) {
        const u = await measure(ctx, 'floor-udp', n, 'opus', `floor-udp-${n}`);
        runs.push(u);
        log(`floor-udp-${n}: CPU ${f1(u.cpu.total)}% (${f3(u.perStream.cpuPct)}%/stream)`);
      }
      if (!r.pass && !o.continueOnFail && n !== steps.at(-1)) {
        log(`${name}-${n} failed: not ramping further (--continue to go on)`);
        break;
      }
    }
  };
  let extract: ExtractResult | undefined;
  const profileSummaries: ProfileSummary[] = [];
  try {
    await ramp('direct', o.direct);
    await ramp('recorder', o.ramp);
    // The tap compared (issue 16): the SFU path at its largest step with the main-thread DirectTransport tap.
    const tapN = o.ramp.at(-1);
    if (o.compareTap && tapN !== undefined && inBudget(`sfu-main-tap-${tapN}`)) {
      const r = await measure(ctx, 'recorder', tapN, 'opus', `sfu-main-tap-${tapN}`, { name: 'main-tap', overrides: { sfuTap: 'main' } });
      runs.push(r);
      log(`sfu-main-tap-${tapN}: ${r.pass ? 'PASS' : 'FAIL'} lost ${r.loss.sent - r.loss.written}, lag p99 ${f1(r.lag?.lagP99Ms ?? 0)} ms, CPU ${f1(r.cpu.total)}% (${f3(r.perStream.cpuPct)}%/stream)`);
    }
    if (o.baseline > 0 && inBudget('ffmpeg baseline')) {
      const n = o.baseline % 2 === 0 ? o.baseline : o.baseline + 1;
      const r = await measure(ctx, 'ffmpeg', n, 'opus', `ffmpeg-${n}`);
      runs.push(r);
      log(`ffmpeg-${n}: CPU ${f1(r.cpu.total)}% (${f3(r.perStream.cpuPct)}%/stream), ffmpeg private ${kb((r.memory.steady.ffmpeg?.private ?? 0) / n)} KB/stream`);
    }
    if (o.pcmu > 0 && inBudget('G.711 run')) {
      const n = o.pcmu % 2 === 0 ? o.pcmu : o.pcmu + 1;
      const r = await measure(ctx, 'direct', n, 'pcmu', `pcmu-${n}`);
      runs.push(r);
      log(`pcmu-${n}: ${r.pass ? 'PASS' : 'FAIL'} CPU ${f1(r.cpu.total)}% -> ${f1(r.perStream.streamsPerCore)} streams/core`);
    }
    if (o.extract && inBudget('extract')) {
      const prefix = `b${randomBytes(3).toString('hex')}-`;
      ctx.bucketPrefixes.push(prefix);
      extract = await measureExtract(createS3Client(s3), prefix);
      log(`extract: 30 min of audio in ${extract.totalMs.toFixed(0)} ms`);
    }
    if (o.cpuProfile) {
      for (const f of readdirSync(profileDir).filter((x) => x.endsWith('.cpuprofile'))) profileSummaries.push(summarizeProfile(path.join(profileDir, f)));
    }
  } finally {
    const summary = summarize(runs, floors, profiles.opusMeanPayloadBytes, extract, profileSummaries);
    const out = path.join(o.outDir, `bench-${stamp}.json`);
    const meta = {
      date: new Date(started).toISOString(),
      durationS: (Date.now() - started) / 1000,
      git: gitDescribe(),
      host: os.hostname(),
      cores: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model,
      node: process.version,
      options: o,
      load: { opusMeanPayloadBytes: profiles.opusMeanPayloadBytes, packetMs: 20, jitterUs: o.jitterUs },
      note: 'CPU figures are % of one core over the steady window; per stream = (Node + mediasoup workers + ffmpeg) / streams.',
    };
    writeFileSync(out, JSON.stringify({ meta, summary, runs, skipped }, null, 2));
    console.log(`\n${table(runs, floors)}`);
    printSummary(summary, runs, o.lagLimitMs);
    if (skipped.length) console.log(`Skipped for time: ${skipped.join(', ')}`);
    console.log(`\nJSON: ${path.relative(ROOT, out)}   logs: ${path.relative(ROOT, logDir)}   total ${((Date.now() - started) / 1000).toFixed(0)} s`);
    const t = Date.now();
    await removeBuckets(s3, ctx.bucketPrefixes, 45_000);
    log(`removed the benchmark's buckets in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    await s3.stop().catch(() => undefined);
    await pgCluster.stop().catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);

/** `K=V K=V` into an environment (OPTIN_BENCH_RECORDER_ENV); a word without `=` is an error. */
function recorderEnv(spec: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const word of spec?.split(' ').filter(Boolean) ?? []) {
    const at = word.indexOf('=');
    if (at <= 0) throw new Error(`OPTIN_BENCH_RECORDER_ENV: "${word}" is not K=V`);
    out[word.slice(0, at)] = word.slice(at + 1);
  }
  return out;
}
