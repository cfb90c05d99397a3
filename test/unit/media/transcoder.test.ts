import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRANSCODER_PRE_SKIP_48K, TranscoderPool } from '../../../src/media/TranscoderPool.ts';
import { Segmenter, type Segment } from '../../../src/media/Segmenter.ts';
import { joinOggOpus } from '../../../src/media/OggOpusReader.ts';
import { opusPacketSamples } from '../../../src/media/opusToc.ts';
import { decodeUlaw } from '../../../src/media/g711.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { decodeToFloat32, snrBestAlignment, toneAdvantageDb } from '../../support/audio.ts';
import { decodedSamples, ffmpegDecodeErrors } from '../../support/ogg.ts';

const GEN = new URL('../../../media-fixtures/generated/', import.meta.url);

/** 16-bit mono PCM at 8 kHz from any file ffmpeg reads. */
function pcm8k(file: string, seconds: number): Int16Array {
  const out = execFileSync('ffmpeg', ['-v', 'error', '-i', file, '-t', String(seconds), '-f', 's16le', '-ac', '1', '-ar', '8000', 'pipe:1'], { maxBuffer: 1 << 28 });
  return new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
}

/** Feeds PCM through the pool 5 frames (100 ms, one recorder tick) at a time, into a segmenter. */
async function transcode(pool: TranscoderPool, streamId: string, pcm: Int16Array): Promise<{ segments: Segment[]; packets: Buffer[] }> {
  const seg = new Segmenter({ serial: 3, preSkip: pool.preSkip, inputSampleRate: 8000 });
  const segments: Segment[] = [];
  const packets: Buffer[] = [];
  const chunk = 5 * 160;
  for (let at = 0; at + chunk <= pcm.length; at += chunk) {
    for (const p of await pool.encodeFrames(streamId, pcm.subarray(at, at + chunk))) {
      packets.push(p);
      segments.push(...seg.push({ kind: 'packet', payload: p, samples: opusPacketSamples(p) }));
    }
  }
  const last = seg.close();
  if (last) segments.push(last);
  return { segments, packets };
}

let pool: TranscoderPool;

beforeAll(() => {
  execFileSync('bash', [new URL('../../../media-fixtures/generate.sh', import.meta.url).pathname], { stdio: 'inherit' });
  pool = new TranscoderPool({ threads: 2 });
}, 120_000);

afterAll(async () => {
  await pool?.close();
});

describe('TranscoderPool (worker threads, opusscript)', () => {
  it('starts its TypeScript thread under vitest and reports the libopus lookahead as the pre-skip', async () => {
    expect(await pool.lookahead48k()).toBe(TRANSCODER_PRE_SKIP_48K);
    expect(pool.preSkip).toBe(312);
  });

  it('G.711 µ-law tone -> Opus segments: clean decode, right length, the tone and not the other', async () => {
    const ulaw = readFileSync(new URL('customer-tone.pcmu', GEN)).subarray(0, 8000 * 12);
    const { segments, packets } = await transcode(pool, 'r_0123456789abcdef/customer-1/0', decodeUlaw(ulaw));
    expect(packets.every((p) => opusPacketSamples(p) === 960)).toBe(true);
    // 16 kbit/s target: about 40 bytes per 20 ms.
    const kbps = (packets.reduce((n, p) => n + p.length, 0) * 8) / (packets.length * 20);
    expect(kbps).toBeGreaterThan(10);
    expect(kbps).toBeLessThan(20);
    expect(segments.map((s) => s.preSkip)).toEqual([312, 0]);
    for (const s of segments) expect(ffmpegDecodeErrors(s.ogg)).toBe('');
    const joined = joinOggOpus(segments.map((s) => s.ogg));
    expect(decodedSamples(joined)).toBe(12 * 48_000 - 312);
    const pcm = decodeToFloat32(joined);
    expect(toneAdvantageDb(pcm, 1230, 523, 48_000, 4800, pcm.length)).toBeGreaterThan(40);
  });

  it('speech keeps its timing: with the pre-skip applied the output lines up with the input', async () => {
    const speech = pcm8k(new URL('agent-speech.wav', GEN).pathname, 8);
    const { segments } = await transcode(pool, 'call1_agent', speech);
    const out = decodeToFloat32(joinOggOpus(segments.map((s) => s.ogg)));
    const ref = decodeToFloat32(new URL('agent-speech.wav', GEN).pathname);
    // Reference: the same 8 kHz speech, back at 48 kHz (what a perfect codec would give).
    const ref8 = decodeToFloat32(Buffer.from(speech.buffer), { inputArgs: ['-f', 's16le', '-ar', '8000', '-ac', '1'] });
    const r = snrBestAlignment(ref8.subarray(0, out.length), out, 2400);
    console.log(`transcoded speech vs input: SNR ${r.snrDb.toFixed(1)} dB at lag ${r.lag} samples (48 kHz), gain ${r.gain.toFixed(2)}`);
    expect(Math.abs(r.lag)).toBeLessThanOrEqual(48); // within 1 ms
    expect(r.snrDb).toBeGreaterThan(3);
    expect(ref.length).toBeGreaterThan(0);
  });

  it('keeps each stream\'s encoder state: interleaved streams encode exactly as alone', async () => {
    const a = pcm8k(new URL('agent-tone-8k.wav', GEN).pathname, 1);
    const b = pcm8k(new URL('customer-tone-8k.wav', GEN).pathname, 1);
    const alone = new TranscoderPool({ threads: 1 });
    try {
      const ref = await alone.encodeFrames('solo', a);
      const mixed = await Promise.all([pool.encodeFrames('mix_a', a), pool.encodeFrames('mix_b', b)]);
      expect(mixed[0].map((p) => p.toString('hex'))).toEqual(ref.map((p) => p.toString('hex')));
    } finally {
      await alone.close();
    }
  });

  it('holds hundreds of encoders in one thread (opusscript heap growth does not break older ones)', async () => {
    const one = new TranscoderPool({ threads: 1 });
    try {
      const frame = new Int16Array(160).map((_, i) => Math.round(8000 * Math.sin(i / 3)));
      for (let round = 0; round < 2; round++) {
        const out = await Promise.all(Array.from({ length: 300 }, (_, s) => one.encode(`s${s}`, frame)));
        expect(out.every((p) => p.length > 0)).toBe(true);
      }
      expect(one.streams).toBe(300);
      one.closeStream('s0');
      expect(one.streams).toBe(299);
      expect((await one.encode('s0', frame)).length).toBeGreaterThan(0);
    } finally {
      await one.close();
    }
  });

  it('refuses work beyond its bounds with TRANSCODER_OVERLOADED (retryable), not an unbounded queue', async () => {
    const small = new TranscoderPool({ threads: 1, maxPendingFrames: 8, maxStreams: 2 });
    try {
      const err = await small.encodeFrames('x', new Int16Array(160 * 9)).catch((e: unknown) => e);
      expect(isOptinError(err, 'TRANSCODER_OVERLOADED')).toBe(true);
      expect((err as { retryable: boolean }).retryable).toBe(true);
      expect(small.pendingFrames).toBe(0);
      await small.encode('a', new Int16Array(160));
      await small.encode('b', new Int16Array(160));
      expect(isOptinError(await small.encode('c', new Int16Array(160)).catch((e: unknown) => e), 'TRANSCODER_OVERLOADED')).toBe(true);
      expect(isOptinError(await small.encode('a', new Int16Array(100)).catch((e: unknown) => e), 'TRANSCODER_BAD_FRAME')).toBe(true);
      expect(isOptinError(await small.encode('bad id!', new Int16Array(160)).catch((e: unknown) => e), 'TRANSCODER_BAD_STREAM')).toBe(true);
      // 40 and 60 ms frames are fine too (fewer packets, less Ogg overhead).
      const p60 = await small.encode('a', new Int16Array(480));
      expect(opusPacketSamples(p60)).toBe(2880);
    } finally {
      await small.close();
      await small.close();
    }
    expect(isOptinError(await small.encode('a', new Int16Array(160)).catch((e: unknown) => e), 'TRANSCODER_CLOSED')).toBe(true);
  });

  // Measures the machine (CPU time on two shared cores), not a rule: one retry allowed, counted
  // on the closing line (test/support/summaryReporter.ts).
  it('measures CPU per stream (printed): ms of CPU per second of audio', { retry: 1 }, async () => {
    const streams = 40;
    const seconds = 10;
    const tone = pcm8k(new URL('agent-tone-8k.wav', GEN).pathname, 1);
    const bench = new TranscoderPool({ threads: 2 });
    try {
      await bench.lookahead48k(); // threads up
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      // One 100 ms tick per iteration: 5 frames for each stream.
      for (let tick = 0; tick < seconds * 10; tick++) {
        const off = ((tick % 10) * 800) % (tone.length - 800);
        await Promise.all(Array.from({ length: streams }, (_, s) => bench.encodeFrames(`bench${s}`, tone.subarray(off, off + 800))));
      }
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - t0;
      const cpuMs = (cpu.user + cpu.system) / 1000;
      const perStreamSecond = cpuMs / (streams * seconds);
      const threads = await bench.threadStats();
      const encodeMs = threads.reduce((n, t) => n + t.encodeMs, 0);
      console.log(
        `transcode: ${streams} streams x ${seconds} s in ${wall.toFixed(0)} ms wall; ` +
          `process CPU ${perStreamSecond.toFixed(2)} ms per stream-second (threads busy encoding ${(encodeMs / (streams * seconds)).toFixed(2)} ms of wall time, inflated by CPU contention); ` +
          `one core ~ ${Math.floor(1000 / perStreamSecond)} streams`,
      );
      expect(perStreamSecond).toBeLessThan(50);
    } finally {
      await bench.close();
    }
  });
});
