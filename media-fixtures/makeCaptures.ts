/**
 * Builds RTP captures (src/rtp/RtpCapture.ts format, see README.md) from the
 * Opus tone files made by generate.sh, one per network scenario, each with
 * its ground truth in the metadata so tests can check the jitter buffer's
 * timeline against what the sender really sent.
 *
 *   npx tsx media-fixtures/makeCaptures.ts            -> generated/rtp/*.rtpcap
 *   npx tsx media-fixtures/makeCaptures.ts --committed -> rtp/opus-lossy-wrap.rtpcap (small, committed)
 *
 * Deterministic: a seeded PRNG, so the same inputs give byte-identical captures.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildRtp } from '../src/rtp/RtpPacket.ts';
import { writeRtpCapture } from '../src/rtp/RtpCapture.ts';
import { readOggOpus } from '../src/media/OggOpusReader.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const GENERATED = `${HERE}generated/`;
const CLOCK = 48_000;
const PT = 111;

export interface CaptureMeta {
  format: 'optin-rtp-capture/1';
  scenario: string;
  description: string;
  source: string;
  toneHz: number;
  codec: 'opus';
  clockRate: number;
  payloadType: number;
  seed: number;
  packetsSent: number;
  packetsCaptured: number;
  /** Ground truth: sender media time from the start of the first to the end of the last captured packet (48 kHz samples). */
  mediaSamples: number;
  /** Ground truth: sender wall-clock ms when the first captured packet's first sample was sent (capture clock). */
  firstSampleSendMs: number;
}

/** mulberry32: tiny seeded PRNG, good enough for network simulation. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Sent {
  /** Sender media time of the packet's first sample, 48 kHz samples from stream start. */
  media: number;
  samples: number;
  sendMs: number;
  seq: number;
  ts: number;
  ssrc: number;
  marker: boolean;
  payload: Uint8Array;
}

interface Scenario {
  name: string;
  description: string;
  seed: number;
  /** Limit to the first N packets of the source. */
  maxPackets?: number;
  seq0: number;
  ts0: number;
  ssrc: number;
  /** Build the send schedule (default: every packet, back to back). */
  schedule?: (packets: Uint8Array[], s: Scenario) => Sent[];
  /** Network: loss probability, extra delay jitter (ms), duplicate probability. */
  loss?: number;
  jitterMs?: number;
  duplicate?: number;
}

const FRAME = 960; // 20 ms at 48 kHz: ffmpeg was asked for 20 ms frames

function backToBack(packets: Uint8Array[], s: Scenario): Sent[] {
  return packets.map((payload, i) => ({
    media: i * FRAME,
    samples: FRAME,
    sendMs: (i * FRAME) / 48,
    seq: (s.seq0 + i) & 0xffff,
    ts: (s.ts0 + i * FRAME) >>> 0,
    ssrc: s.ssrc,
    marker: i === 0,
    payload,
  }));
}

/** Silence suppression: every 5 s the sender stops for 1.5 s; seq continues, ts advances, marker on resume. */
function dtx(packets: Uint8Array[], s: Scenario): Sent[] {
  const out: Sent[] = [];
  let media = 0;
  let seq = s.seq0;
  for (const [i, payload] of packets.entries()) {
    const resume = i > 0 && i % 250 === 0;
    if (resume) media += 75 * FRAME; // 1.5 s not sent
    out.push({ media, samples: FRAME, sendMs: media / 48, seq: seq & 0xffff, ts: (s.ts0 + media) >>> 0, ssrc: s.ssrc, marker: resume || i === 0, payload });
    media += FRAME;
    seq++;
  }
  return out;
}

/** Timestamp discontinuities with sequence and wall clock continuous: +1234567890 at 10 s, -500000 at 20 s. */
function tsJump(packets: Uint8Array[], s: Scenario): Sent[] {
  return backToBack(packets, s).map((p, i) => {
    let ts = p.ts;
    if (i >= 500) ts = (ts + 1_234_567_890) >>> 0;
    if (i >= 1000) ts = (ts - 500_000) >>> 0;
    return { ...p, ts };
  });
}

/** A new source at 15 s (new SSRC, sequence and timestamp bases) after a 300 ms pause in sending. */
function ssrcChange(packets: Uint8Array[], s: Scenario): Sent[] {
  const out: Sent[] = [];
  for (const [i, payload] of packets.entries()) {
    const second = i >= 750;
    const media = i * FRAME + (second ? 15 * FRAME : 0);
    const k = second ? i - 750 : i;
    out.push({
      media,
      samples: FRAME,
      sendMs: media / 48,
      seq: ((second ? 40_000 : s.seq0) + k) & 0xffff,
      ts: ((second ? 3_000_000_000 : s.ts0) + k * FRAME) >>> 0,
      ssrc: second ? 0x5eed0002 : s.ssrc,
      marker: k === 0,
      payload,
    });
  }
  return out;
}

const SCENARIOS: Scenario[] = [
  { name: 'clean', description: 'in order, 0-4 ms jitter, no loss', seed: 1, seq0: 1000, ts0: 123_456, ssrc: 0x0a11ce01, jitterMs: 4 },
  {
    name: 'lossy',
    description: '10% random loss, 0-60 ms jitter (reordering), 3% duplicates',
    seed: 2, seq0: 20_000, ts0: 987_654_321, ssrc: 0x0a11ce02, loss: 0.1, jitterMs: 60, duplicate: 0.03,
  },
  { name: 'dtx', description: 'silence suppression: 1.5 s without packets every 5 s, marker on resume', seed: 3, seq0: 5, ts0: 77, ssrc: 0x0a11ce03, schedule: dtx, jitterMs: 10 },
  { name: 'tsjump', description: 'timestamp jumps +1234567890 at 10 s and -500000 at 20 s, seq and wall clock continuous', seed: 4, seq0: 300, ts0: 1_000_000, ssrc: 0x0a11ce04, schedule: tsJump, jitterMs: 10 },
  { name: 'ssrc', description: 'SSRC change at 15 s with new seq/ts bases after 300 ms without packets', seed: 5, seq0: 700, ts0: 55_555, ssrc: 0x0a11ce05, schedule: ssrcChange, jitterMs: 10 },
  {
    name: 'seqwrap',
    description: 'sequence starts at 65500 and timestamp 5 s before 2^32: both wrap; 2% loss, 0-30 ms jitter',
    seed: 6, seq0: 65_500, ts0: 2 ** 32 - 5 * CLOCK, ssrc: 0x0a11ce06, loss: 0.02, jitterMs: 30,
  },
];

function capture(source: string, toneHz: number, packets: Uint8Array[], s: Scenario): { meta: CaptureMeta; file: Buffer } {
  const rand = prng(s.seed * 7919 + toneHz);
  const src = s.maxPackets ? packets.slice(0, s.maxPackets) : packets;
  const sent = (s.schedule ?? backToBack)(src, s);
  const BASE_DELAY_MS = 30;
  const records: { arrivalMs: number; packet: Buffer; sent: Sent }[] = [];
  for (const p of sent) {
    if (s.loss && rand() < s.loss) continue;
    const packet = buildRtp({ payloadType: PT, sequenceNumber: p.seq, timestamp: p.ts, ssrc: p.ssrc, marker: p.marker, payload: p.payload });
    const arrivalMs = p.sendMs + BASE_DELAY_MS + rand() * (s.jitterMs ?? 0);
    records.push({ arrivalMs, packet, sent: p });
    if (s.duplicate && rand() < s.duplicate) records.push({ arrivalMs: arrivalMs + 1 + rand() * 30, packet, sent: p });
  }
  // The first packet is never lost (the capture's truth starts at a known point).
  if (records[0]?.sent !== sent[0]) {
    const p = sent[0]!;
    const packet = buildRtp({ payloadType: PT, sequenceNumber: p.seq, timestamp: p.ts, ssrc: p.ssrc, marker: p.marker, payload: p.payload });
    records.unshift({ arrivalMs: p.sendMs + BASE_DELAY_MS, packet, sent: p });
  }
  records.sort((a, b) => a.arrivalMs - b.arrivalMs);
  const firstMedia = Math.min(...records.map((r) => r.sent.media));
  const lastEnd = Math.max(...records.map((r) => r.sent.media + r.sent.samples));
  const meta: CaptureMeta = {
    format: 'optin-rtp-capture/1',
    scenario: s.name,
    description: s.description,
    source,
    toneHz,
    codec: 'opus',
    clockRate: CLOCK,
    payloadType: PT,
    seed: s.seed,
    packetsSent: sent.length,
    packetsCaptured: records.length,
    mediaSamples: lastEnd - firstMedia,
    firstSampleSendMs: firstMedia / 48,
  };
  return { meta, file: writeRtpCapture(meta, records) };
}

function opusPackets(file: string): Uint8Array[] {
  return readOggOpus(readFileSync(file)).packets.map((p) => p.data);
}

function main(): void {
  if (process.argv.includes('--committed')) {
    // Small committed fixture (< 20 KB): 2 s of the agent tone, lossy, reordered, duplicated, wrapping.
    const packets = opusPackets(`${GENERATED}agent-tone.opus`);
    const s: Scenario = {
      name: 'lossy-wrap',
      description: '2 s of a 523 Hz tone: 10% loss, 0-60 ms jitter, 5% duplicates, seq wraps after 20 packets',
      seed: 42, maxPackets: 100, seq0: 65_516, ts0: 2 ** 32 - 10 * FRAME, ssrc: 0x0ddba11, loss: 0.1, jitterMs: 60, duplicate: 0.05,
    };
    const { file } = capture('agent-tone.opus', 523, packets, s);
    mkdirSync(`${HERE}rtp`, { recursive: true });
    writeFileSync(`${HERE}rtp/opus-lossy-wrap.rtpcap`, file);
    console.log(`rtp/opus-lossy-wrap.rtpcap: ${file.length} bytes`);
    return;
  }
  mkdirSync(`${GENERATED}rtp`, { recursive: true });
  for (const [who, hz] of [['agent', 523], ['customer', 1230]] as const) {
    const packets = opusPackets(`${GENERATED}${who}-tone.opus`);
    for (const s of SCENARIOS) {
      const { file } = capture(`${who}-tone.opus`, hz, packets, s);
      writeFileSync(`${GENERATED}rtp/${who}-${s.name}.rtpcap`, file);
    }
  }
}

main();
