/**
 * Benchmark (issue 16 item 3): what one media-segment PUT costs this process, through the minio
 * client (`putObjectWithTags`) and through the lean signed PUT (src/storage/LeanPut.ts), in the
 * same run against the same S3 server:
 *
 *   npm run bench:put -- [--n 2000] [--concurrency 8] [--bytes 23000] [--rounds 2] [--only lean|minio] [--profile out.cpuprofile]
 *
 * Each PUT goes through `S3Objects.startPut` + `timed` exactly as the uploader sends a sealed
 * segment: random (incompressible) bodies of `--bytes`, the store's three tags and its segment
 * metadata. Rounds alternate minio, lean, minio, lean... after a warm-up of each (JIT,
 * connections), so drift in the machine's load does not favour one side. Reported per path:
 * CPU of this process per PUT (process.cpuUsage, user + system: the S3 server is another process
 * and not counted), latency p50/p99, TCP connections opened (diagnostics_channel
 * `net.client.socket`, so both paths are counted the same way), and the ratios.
 *
 * The S3 server: OPTIN_S3_ENDPOINT if set, else one started the way the other benchmarks do
 * (scripts/s3/devServer.ts: a minio binary on PATH, else the throwaway Ceph RGW). The bucket is
 * removed at the end.
 */
import { randomBytes } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { ensureS3Server } from '../scripts/s3/devServer.ts';
import type { MediaPutPath } from '../src/storage/LeanPut.ts';
import { SEGMENT_META_HEADER } from '../src/storage/manifest.ts';
import { mediaObjectKey, mediaTags } from '../src/storage/layout.ts';
import { createS3Client } from '../src/storage/s3Endpoint.ts';
import { S3Objects } from '../src/storage/S3Objects.ts';
import { removeBucketDeep } from '../test/support/s3.ts';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '8' },
    bytes: { type: 'string', default: '23000' },
    rounds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '200' },
    only: { type: 'string' },
    profile: { type: 'string' },
  },
});
const N = Number(values.n);
const CONCURRENCY = Number(values.concurrency);
const BYTES = Number(values.bytes);
const ROUNDS = Number(values.rounds);
const WARMUP = Number(values.warmup);
/** `--only lean|minio`: one path alone (for a CPU profile of it). */
const PATHS: MediaPutPath[] = values.only === 'lean' || values.only === 'minio' ? [values.only] : ['minio', 'lean'];

let socketsOpened = 0;
diagnostics.subscribe('net.client.socket', () => {
  socketsOpened++;
});

interface Pass {
  path: MediaPutPath;
  puts: number;
  cpuUsPerPut: number;
  /** Of which in the kernel (socket syscalls on loopback). */
  sysUsPerPut: number;
  wallMs: number;
  p50Ms: number;
  p99Ms: number;
  connections: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const s3 = await ensureS3Server();
const client = createS3Client(s3);
const bucket = `bench${randomBytes(4).toString('hex')}-put`;
await client.makeBucket(bucket, s3.region ?? 'us-east-1');
const layout = { media: bucket, keys: bucket, audit: bucket };
const objects: Record<MediaPutPath, S3Objects> = {
  minio: new S3Objects(client, layout, 5000, { mediaPut: 'minio' }),
  lean: new S3Objects(client, layout, 5000, { mediaPut: 'lean' }),
};
if (objects.lean.mediaPutPath !== 'lean') throw new Error('the lean path is not available for this client');

// What RecordingStore puts on a segment: three tags, the content type and the segment record.
const recordingId = `r_${randomBytes(8).toString('hex')}`;
const tags = mediaTags({ recordingId, expiresAtMs: Date.now() + 30 * 86_400_000, retentionSeconds: 30 * 86_400 });
const segRecord = { participantId: 'p-agent', segment: 0, run: 0, startWallClockMs: Date.now(), durationMs: 10_000, opusPayloadBytes: BYTES - 400, oggBytes: BYTES - 60, sealedBytes: BYTES, sha256: 'ab'.repeat(32), quality: { lost: 0, late: 0, concealed: 0 } };
const metadata = { 'Content-Type': 'application/octet-stream', [SEGMENT_META_HEADER]: Buffer.from(JSON.stringify(segRecord)).toString('base64url') };
// Bodies made before any measurement: generating them is not the PUT's cost.
const bodies = Array.from({ length: 64 }, () => randomBytes(BYTES));

/** TCP connections each path opened over the whole run, warm-up included (keep-alive reuse). */
const opened: Record<MediaPutPath, number> = { minio: 0, lean: 0 };

async function run(path: MediaPutPath, count: number, label: string): Promise<Pass> {
  const o = objects[path];
  const latencies: number[] = [];
  let next = 0;
  const sockets0 = socketsOpened;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < count; i = next++) {
        const key = mediaObjectKey(recordingId, `p-${label}`, i);
        const start = performance.now();
        await o.timed(o.startPut('media', key, bodies[i % bodies.length]!, tags, metadata), `PUT ${key}`);
        latencies.push(performance.now() - start);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  opened[path] += socketsOpened - sockets0;
  latencies.sort((a, b) => a - b);
  return {
    path,
    puts: count,
    cpuUsPerPut: (cpu.user + cpu.system) / count,
    sysUsPerPut: cpu.system / count,
    wallMs,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    connections: socketsOpened - sockets0,
  };
}

const fmt = (p: Pass, round: number | string): string =>
  `${String(round).padEnd(6)}${p.path.padEnd(7)}${String(p.puts).padStart(6)}${p.cpuUsPerPut.toFixed(0).padStart(10)}${p.sysUsPerPut.toFixed(0).padStart(8)}${((p.puts / p.wallMs) * 1000).toFixed(0).padStart(9)}` +
  `${p.p50Ms.toFixed(2).padStart(9)}${p.p99Ms.toFixed(2).padStart(9)}${String(p.connections).padStart(7)}`;

try {
  console.log(`S3: ${s3.endpoint} (${s3.kind}); ${N} PUTs of ${BYTES} B per pass, concurrency ${CONCURRENCY}, ${ROUNDS} rounds, warm-up ${WARMUP} each; Node ${process.version}`);
  for (const path of PATHS) await run(path, WARMUP, `warm-${path}`);
  console.log('round path     PUTs  CPU µs/PUT  of sys  PUTs/s  p50 ms   p99 ms  conns');
  const passes: Array<{ round: number; pass: Pass }> = [];
  // `--profile <file>`: a CPU profile of the measured passes only (not start-up or clean-up).
  const session = values.profile === undefined ? undefined : new Session();
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  for (let r = 1; r <= ROUNDS; r++) {
    for (const path of PATHS) {
      const pass = await run(path, N, `${path}-${r}`);
      passes.push({ round: r, pass });
      console.log(fmt(pass, r));
    }
  }
  const total = (path: MediaPutPath): Pass => {
    const ps = passes.filter((p) => p.pass.path === path).map((p) => p.pass);
    const puts = ps.reduce((a, p) => a + p.puts, 0);
    return {
      path,
      puts,
      cpuUsPerPut: ps.reduce((a, p) => a + p.cpuUsPerPut * p.puts, 0) / puts,
      sysUsPerPut: ps.reduce((a, p) => a + p.sysUsPerPut * p.puts, 0) / puts,
      wallMs: ps.reduce((a, p) => a + p.wallMs, 0),
      p50Ms: ps.map((p) => p.p50Ms).sort((a, b) => a - b)[Math.floor(ps.length / 2)]!,
      p99Ms: Math.max(...ps.map((p) => p.p99Ms)),
      connections: ps.reduce((a, p) => a + p.connections, 0),
    };
  };
  if (session && values.profile !== undefined) {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(values.profile, JSON.stringify(profile));
    session.disconnect();
    console.log(`CPU profile of the measured passes: ${values.profile}`);
  }
  const [minio, lean] = [total('minio'), total('lean')];
  if (PATHS.length === 2) {
    console.log(fmt(minio, 'all'));
    console.log(fmt(lean, 'all'));
    console.log(
    `lean vs minio: CPU per PUT ${(minio.cpuUsPerPut / lean.cpuUsPerPut).toFixed(2)}x less (${minio.cpuUsPerPut.toFixed(0)} -> ${lean.cpuUsPerPut.toFixed(0)} µs), ` +
      `p50 ${minio.p50Ms.toFixed(2)} -> ${lean.p50Ms.toFixed(2)} ms, p99 ${minio.p99Ms.toFixed(2)} -> ${lean.p99Ms.toFixed(2)} ms; ` +
        `connections opened over the run (warm-up included): minio ${opened.minio} (Node's global agent, keep-alive), lean ${opened.lean} ` +
        `(its own pool; ${JSON.stringify(objects.lean.leanPutStats())})`,
    );
  }
} finally {
  objects.lean.close();
  await removeBucketDeep(client, bucket).catch((err: unknown) => console.error(`bucket ${bucket} not removed: ${String(err)}`));
  await s3.stop();
}
