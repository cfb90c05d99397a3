/**
 * Benchmark: how long a 30-minute single-speaker extract takes (docs/architecture.md §7: "well under a second,
 * excluding network"). Run against an S3 server from the environment:
 *
 *   eval "$(bash scripts/s3/rgw.sh env)" && npm run bench:extract -- [--minutes 30] [--runs 5]
 *
 * It synthesizes the track from real Opus packets (media-fixtures/generated/agent-tone.opus,
 * looped) cut into 10 s segments by the recorder's Segmenter, stores them sealed through a real
 * RecordingStore in fresh buckets, then times the extract path through a RecordingReader (as the
 * CLI reads: no spool, no uploader): read every sealed object, verify its digest, unwrap the data
 * key, decrypt, and join into one continuous Ogg Opus.
 * "read" includes the S3 round trips of the local server (loopback), so it is an upper bound
 * for the CPU part and a fair figure for a store next to the worker. The buckets are removed
 * at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Keyring } from '../src/crypto/Keyring.ts';
import { createLogger } from '../src/log/logger.ts';
import { joinOggOpus, readOggOpus } from '../src/media/OggOpusReader.ts';
import { decodeToS16 } from '../src/media/ffmpeg.ts';
import { bucketNames } from '../src/storage/layout.ts';
import { RecordingReader } from '../src/storage/RecordingReader.ts';
import { RecordingStore } from '../src/storage/RecordingStore.ts';
import { assertS3Reachable, createS3Client } from '../src/storage/s3Endpoint.ts';
import { readJoinedTrack } from '../src/access/extract.ts';
import { storeSynthRecording } from '../test/support/synthRecording.ts';

const { values } = parseArgs({
  options: { minutes: { type: 'string', default: '30' }, runs: { type: 'string', default: '5' }, wav: { type: 'boolean', default: false } },
});
const minutes = Number(values.minutes);
const runs = Number(values.runs);

const { OPTIN_S3_ENDPOINT: endpoint, OPTIN_S3_ACCESS_KEY: accessKey, OPTIN_S3_SECRET_KEY: secretKey } = process.env;
if (!endpoint || !accessKey || !secretKey) {
  console.error('set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY (eval "$(bash scripts/s3/rgw.sh env)")');
  process.exit(2);
}
const s3cfg = { endpoint, accessKey, secretKey };
await assertS3Reachable(s3cfg);
const client = createS3Client(s3cfg);
const buckets = bucketNames({ prefix: `bench${randomBytes(3).toString('hex')}-` });
const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-bench-'));
const logger = createLogger('warn');
const keyring = Keyring.fromConfig({ activeKeyId: 'b1', keys: { b1: Keyring.generateKeyBase64() } });
const store = await RecordingStore.open({ client, buckets, keyring, spoolDir, spoolMaxBytes: 1 << 30, logger, sweep: false });

const source = readFileSync(fileURLToPath(new URL('../media-fixtures/generated/agent-tone.opus', import.meta.url)));
const recordingId = `r_${randomBytes(8).toString('hex')}`;
const seconds = minutes * 60;
const t0 = performance.now();
await storeSynthRecording(store, {
  recordingId,
  callId: 'bench-call',
  startedAtMs: Date.now() - (seconds + 60) * 1000,
  seconds,
  segmentSeconds: 10,
  participants: [{ participantId: 'p-agent', role: 'agent', subjectId: 'bench-agent', source }],
});
await store.drained(120_000);
const m = await store.getManifest(recordingId);
const sealedBytes = m.segments.reduce((a, s) => a + s.sealedBytes, 0);
console.log(`stored ${m.segments.length} segments, ${(sealedBytes / 1e6).toFixed(2)} MB sealed, ${minutes} min of audio, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

const reader = new RecordingReader({ client, buckets, keyring });
const times: number[] = [];
let joined: Buffer = Buffer.alloc(0);
for (let i = 0; i <= runs; i++) {
  const start = performance.now();
  joined = (await readJoinedTrack(reader, recordingId, 'p-agent')).ogg;
  const ms = performance.now() - start;
  if (i > 0) times.push(ms); // run 0 warms up the JIT and the connection pool
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)]!;
const stream = readOggOpus(joined);
const audioSeconds = (stream.lastGranule - stream.head.preSkip) / 48_000;
console.log(
  `extract (read + verify + decrypt + join) of ${(audioSeconds / 60).toFixed(2)} min of one speaker: ` +
    `median ${median.toFixed(0)} ms, min ${times[0]!.toFixed(0)} ms, max ${times.at(-1)!.toFixed(0)} ms over ${runs} runs ` +
    `= ${(audioSeconds / 60 / (median / 1000)).toFixed(0)} minutes of audio per second; output ${(joined.length / 1e6).toFixed(2)} MB Ogg Opus`,
);
// Breakdown: the same sealed objects fetched alone (sequential GETs, as the read path does), and
// the join alone on the decrypted segments. What remains is digest check + unwrap + decrypt.
const fetchTimes: number[] = [];
for (let i = 0; i < runs; i++) {
  const start = performance.now();
  for (const s of m.segments) await (await client.getObject(buckets.media, s.objectKey)).toArray();
  fetchTimes.push(performance.now() - start);
}
fetchTimes.sort((a, b) => a - b);
const decrypted: Buffer[] = [];
for await (const s of reader.openTrack(recordingId, 'p-agent')) decrypted.push(s.ogg);
const joinTimes: number[] = [];
for (let i = 0; i < runs; i++) {
  const start = performance.now();
  joinOggOpus(decrypted, { vendor: 'optin', tags: {} });
  joinTimes.push(performance.now() - start);
}
joinTimes.sort((a, b) => a - b);
const fetchMs = fetchTimes[Math.floor(runs / 2)]!;
const joinMs = joinTimes[Math.floor(runs / 2)]!;
console.log(
  `breakdown (medians): S3 GETs of the ${m.segments.length} sealed objects ${fetchMs.toFixed(0)} ms, join ${joinMs.toFixed(0)} ms, ` +
    `digest + unwrap + decrypt ~${Math.max(0, median - fetchMs - joinMs).toFixed(0)} ms; ` +
    `without the store round trips: ~${Math.max(0, median - fetchMs).toFixed(0)} ms`,
);

if (values.wav) {
  const start = performance.now();
  const pcm = await decodeToS16(joined, { rate: 48_000, channels: 1 });
  console.log(`WAV on request (ffmpeg decode of the joined file): ${(performance.now() - start).toFixed(0)} ms, ${(pcm.length / 1e6).toFixed(1)} MB`);
}

// Clean up: crypto-shred and delete through the store, then drop the buckets.
await store.deleteRecording(recordingId, { reason: 'benchmark-cleanup', actor: 'bench' });
await store.close();
for (const b of [buckets.media, buckets.keys]) {
  const names: string[] = [];
  for await (const o of client.listObjectsV2(b, '', true) as AsyncIterable<{ name?: string }>) if (o.name) names.push(o.name);
  if (names.length > 0) await client.removeObjects(b, names);
  await client.removeBucket(b).catch(() => undefined);
}
rmSync(spoolDir, { recursive: true, force: true });
