/**
 * Audio measurement helpers for media tests: decode anything ffmpeg reads
 * to mono float PCM at 48 kHz, measure tone power (Goertzel), compare two
 * signals (SNR at the best alignment).
 */
import { execFileSync } from 'node:child_process';

export const SAMPLE_RATE = 48_000;

/**
 * Decodes a file path or an in-memory file (any format ffmpeg knows) to
 * mono f32 PCM at `sampleRate`. Extra input options (e.g. ['-f', 'mulaw',
 * '-ar', '8000']) go before `-i` for raw inputs.
 */
export function decodeToFloat32(input: string | Uint8Array, options: { sampleRate?: number; inputArgs?: string[] } = {}): Float32Array {
  const sr = options.sampleRate ?? SAMPLE_RATE;
  const src = typeof input === 'string' ? input : 'pipe:0';
  const out = execFileSync(
    'ffmpeg',
    ['-nostdin', '-v', 'error', ...(options.inputArgs ?? []), '-i', src, '-f', 'f32le', '-ac', '1', '-ar', String(sr), 'pipe:1'],
    { input: typeof input === 'string' ? undefined : input, maxBuffer: 1 << 30 },
  );
  // Copy into an aligned buffer (the Buffer may have an odd byteOffset).
  return new Float32Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
}

/** Int16 PCM to float in [-1, 1). */
export function int16ToFloat(pcm: Int16Array): Float32Array {
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) f[i] = pcm[i]! / 32768;
  return f;
}

/**
 * Power of `freq` in `x[start, end)` by the Goertzel algorithm, with a Hann
 * window so a strong tone elsewhere does not leak into the measured bin.
 * Normalised so a full-scale sine gives about 0.25 whatever the length.
 */
export function goertzelPower(x: Float32Array, freq: number, sampleRate = SAMPLE_RATE, start = 0, end = x.length): number {
  const n = end - start;
  if (n <= 1) return 0;
  const w = (2 * Math.PI * freq) / sampleRate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1));
    const s0 = x[start + i]! * hann + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  // Hann's coherent gain is 0.5: a unit sine gives |X| = n / 4.
  return power / ((n / 2) * (n / 2));
}

export function db(ratio: number): number {
  return 10 * Math.log10(Math.max(ratio, 1e-30));
}

/** How many dB `freqA` is above `freqB` in `x` (optionally within a sample range). */
export function toneAdvantageDb(x: Float32Array, freqA: number, freqB: number, sampleRate = SAMPLE_RATE, start = 0, end = x.length): number {
  return db(goertzelPower(x, freqA, sampleRate, start, end) / Math.max(goertzelPower(x, freqB, sampleRate, start, end), 1e-30));
}

/** RMS level of `x[start, end)` in dBFS. */
export function rmsDb(x: Float32Array, start = 0, end = x.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += x[i]! * x[i]!;
  return db(sum / Math.max(1, end - start));
}

/**
 * SNR of `test` against `reference` after the best alignment: searches the
 * lag in [-maxLag, maxLag] maximising the normalised cross-correlation
 * (coarse step, then refined), applies the least-squares gain, and returns
 * 10 log10(signal / error) over the overlap. `lag` > 0 means `test` is late.
 */
export function snrBestAlignment(
  reference: Float32Array,
  test: Float32Array,
  maxLag = 4800,
): { snrDb: number; lag: number; gain: number } {
  // Correlate on a window from the middle of the reference (cheap, enough for alignment).
  const win = Math.min(16_384, Math.floor(reference.length / 2));
  const refStart = Math.max(maxLag, Math.floor(reference.length / 2 - win / 2));
  const corr = (lag: number): number => {
    let num = 0;
    let den = 0;
    for (let i = 0; i < win; i++) {
      const t = test[refStart + i + lag] ?? 0;
      num += reference[refStart + i]! * t;
      den += t * t;
    }
    return den > 0 ? num / Math.sqrt(den) : 0;
  };
  let best = 0;
  let bestVal = Number.NEGATIVE_INFINITY;
  const coarse = 8;
  for (let lag = -maxLag; lag <= maxLag; lag += coarse) {
    const v = corr(lag);
    if (v > bestVal) [bestVal, best] = [v, lag];
  }
  for (let lag = best - coarse; lag <= best + coarse; lag++) {
    const v = corr(lag);
    if (v > bestVal) [bestVal, best] = [v, lag];
  }
  // Least-squares gain and SNR over the whole overlap.
  let rt = 0;
  let tt = 0;
  const from = Math.max(0, -best);
  const to = Math.min(reference.length, test.length - best);
  for (let i = from; i < to; i++) {
    rt += reference[i]! * test[i + best]!;
    tt += test[i + best]! * test[i + best]!;
  }
  const gain = tt > 0 ? rt / tt : 0;
  let sig = 0;
  let err = 0;
  for (let i = from; i < to; i++) {
    const r = reference[i]!;
    const e = r - gain * test[i + best]!;
    sig += r * r;
    err += e * e;
  }
  return { snrDb: db(sig / Math.max(err, 1e-30)), lag: best, gain };
}
