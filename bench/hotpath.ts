/**
 * Micro-benchmark of the recorder's per-packet path, without mediasoup, sockets or S3: many
 * TrackRecorders fed real Opus RTP packets (the speech fixtures) on a simulated 20 ms clock,
 * driven by the shared tick, cutting real Ogg segments into a sink that only counts. It reports
 * CPU time (not wall time, so a busy shared machine distorts it less) per packet, to judge
 * changes to the hot path (TrackRecorder, JitterBuffer, Segmenter, OggOpusWriter, RtpPacket).
 *
 *     npm run bench:hotpath -- [--tracks 1000] [--seconds 60] [--rounds 3] [--no-metrics]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { TrackRecorder, type SegmentSink } from '../src/recorder/TrackRecorder.ts';
import { readOggOpus } from '../src/media/OggOpusReader.ts';
import { createLogger } from '../src/log/logger.ts';
import { createMetrics } from '../src/metrics/metrics.ts';
import { ROOT } from './loadgen.ts';

const { values } = parseArgs({
  options: {
    tracks: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '60' },
    rounds: { type: 'string', default: '3' },
    'no-metrics': { type: 'boolean', default: false },
  },
});
const TRACKS = Number(values.tracks);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);

const fixtures = ['agent', 'customer'].map(
  (who) => readOggOpus(readFileSync(path.join(ROOT, `media-fixtures/generated/${who}-speech.opus`))).packets.filter((p) => p.samples > 0).map((p) => p.data),
);

/** What mediasoup hands the tap: a fresh Buffer per packet (12-byte header + payload). */
function rtp(seq: number, ts: number, ssrc: number, payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(12 + payload.length);
  b[0] = 0x80;
  b[1] = 100;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(ssrc >>> 0, 8);
  b.set(payload, 12);
  return b;
}

function round(withRecorder: boolean): { cpuUs: number; packets: number; segments: number; bytes: number } {
  let segments = 0;
  let bytes = 0;
  const sink: SegmentSink = {
    putSegment: async (_meta, ogg) => {
      segments++;
      bytes += ogg.length;
      return { stored: 'uploaded' };
    },
  };
  const logger = createLogger('silent');
  const metrics = values['no-metrics'] ? undefined : createMetrics({ defaultMetrics: false });
  const tracks = Array.from({ length: TRACKS }, (_, i) => {
    const t = new TrackRecorder({
      callId: `c${i >> 1}`,
      participantId: i % 2 ? 'pc' : 'pa',
      codec: 'opus',
      segmentSamples: 480_000,
      sink,
      logger,
      metrics,
      onStoreError: () => undefined,
    });
    t.startRun('r_0123456789abcdef', 0, 1_000_000); // the gate opened as the clock below starts
    return t;
  });
  const seqs = tracks.map((_, i) => (i * 7919) & 0xffff);
  const tss = tracks.map((_, i) => (i * 104729) >>> 0);
  const ticks = (SECONDS * 1000) / 20;
  let now = 1_000_000;
  let packets = 0;
  const start = process.cpuUsage();
  for (let k = 0; k < ticks; k++) {
    now += 20;
    for (let i = 0; i < TRACKS; i++) {
      const fx = fixtures[i & 1]!;
      const buf = rtp(seqs[i]!, tss[i]!, 0x1000 + i, fx[(k + i) % fx.length]!);
      seqs[i] = (seqs[i]! + 1) & 0xffff;
      tss[i] = (tss[i]! + 960) >>> 0;
      if (withRecorder) tracks[i]!.onRtp(buf, now - (i % 20), true);
      packets++;
    }
    if (withRecorder) for (const t of tracks) t.tick(now);
  }
  const used = process.cpuUsage(start);
  return { cpuUs: used.user + used.system, packets, segments, bytes };
}

// Round 0 warms the JIT; the harness alone (packet building) is measured and subtracted.
round(true);
const harness = round(false);
const results: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const res = round(true);
  const perPacketNs = ((res.cpuUs - harness.cpuUs) * 1000) / res.packets;
  results.push(perPacketNs);
  console.log(`round ${r + 1}: ${res.packets} packets, ${res.segments} segments, ${(perPacketNs / 1000).toFixed(2)} us CPU per packet (recorder only)`);
}
results.sort((a, b) => a - b);
const median = results[Math.floor(results.length / 2)]!;
console.log(
  `median ${(median / 1000).toFixed(2)} us per packet = ${((median * 50) / 1e7).toFixed(4)} % of a core per 50 packet/s stream ` +
    `(${TRACKS} tracks, ${SECONDS} s, metrics ${values['no-metrics'] ? 'off' : 'on'}; harness ${((harness.cpuUs * 1000) / harness.packets / 1000).toFixed(2)} us/packet subtracted)`,
);
