/**
 * Transcoder cost benchmark: CPU milliseconds per second of audio per
 * G.711 stream, through the real TranscoderPool (threads, batching,
 * message passing), for a few encoder settings.
 *
 *   npm run bench:transcode -- [--streams 40] [--seconds 5] [--threads 2]
 *
 * CPU is the whole process's (process.cpuUsage counts every thread), so the
 * figure includes the main thread's share of batching and messaging. On a
 * shared machine run it twice; compare settings within one run.
 */
import { parseArgs } from 'node:util';
import { TranscoderPool } from '../src/media/TranscoderPool.ts';

const { values } = parseArgs({
  options: {
    streams: { type: 'string', default: '40' },
    seconds: { type: 'string', default: '5' },
    threads: { type: 'string', default: '2' },
  },
});
const streams = Number(values.streams);
const seconds = Number(values.seconds);
const threads = Number(values.threads);

/** Speech-like test signal at 8 kHz: two wobbling harmonics plus a little noise. */
function signal(samples: number): Int16Array {
  const out = new Int16Array(samples);
  let seed = 1;
  for (let i = 0; i < samples; i++) {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    const t = i / 8000;
    const f = 180 + 40 * Math.sin(2 * Math.PI * 3 * t);
    const v = 6000 * Math.sin(2 * Math.PI * f * t) + 3000 * Math.sin(2 * Math.PI * 2.7 * f * t) + 300 * (seed / 2 ** 31 - 0.5);
    out[i] = Math.round(v);
  }
  return out;
}

async function run(complexity: number, frameMs: 20 | 60): Promise<{ cpuMsPerStreamSecond: number; wallMs: number; bytesPerSecond: number }> {
  const pool = new TranscoderPool({ threads, complexity, maxPendingFrames: streams * 10 });
  try {
    await pool.lookahead48k(); // wait until a thread is up
    const frame = (8000 * frameMs) / 1000;
    const tick = 5 * 160; // 100 ms of audio per stream per tick, as the recorder's shared tick would send
    const pcm = signal(8000 * seconds);
    let bytes = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let at = 0; at + tick <= pcm.length; at += tick) {
      const chunk = pcm.subarray(at, at + Math.floor(tick / frame) * frame);
      const out = await Promise.all(Array.from({ length: streams }, (_, s) => pool.encodeFrames(`bench-${s}`, chunk, frame)));
      for (const packets of out) for (const p of packets) bytes += p.length;
    }
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    return {
      cpuMsPerStreamSecond: (cpu.user + cpu.system) / 1000 / (streams * seconds),
      wallMs,
      bytesPerSecond: bytes / (streams * seconds),
    };
  } finally {
    await pool.close();
  }
}

console.log(`TranscoderPool: ${streams} streams x ${seconds} s of 8 kHz audio, ${threads} thread(s), 16 kbit/s VOIP\n`);
await run(5, 20); // warm-up: JIT and WASM compilation are not what we measure
console.log('complexity  frame   CPU ms per stream-second   streams per core   kbit/s   wall ms');
for (const complexity of [0, 5, 10]) {
  for (const frameMs of [20, 60] as const) {
    const r = await run(complexity, frameMs);
    console.log(
      `${String(complexity).padStart(10)}  ${`${frameMs} ms`.padStart(5)}   ${r.cpuMsPerStreamSecond.toFixed(2).padStart(24)}   ${String(Math.floor(1000 / r.cpuMsPerStreamSecond)).padStart(16)}   ${((r.bytesPerSecond * 8) / 1000).toFixed(1).padStart(6)}   ${r.wallMs.toFixed(0).padStart(7)}`,
    );
  }
}
