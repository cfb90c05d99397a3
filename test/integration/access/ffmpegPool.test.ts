/**
 * The bounded ffmpeg pool of renders and extracts (issue 14 §8) with the real ffmpeg: at most
 * `concurrency` processes, a short queue, refusal at admission when both are full
 * (FFMPEG_BUSY, retryable: an API answers 503 with Retry-After), a timeout that kills a stuck
 * process, and a queued job that gives up after its wait.
 */
import { describe, expect, it } from 'vitest';
import { FfmpegPool } from '../../../src/media/ffmpeg.ts';

/** An ffmpeg job taking about `seconds` of wall time (a real-time read of a silent source). */
function slow(seconds: number): string[] {
  return ['-v', 'error', '-re', '-f', 'lavfi', '-i', `anullsrc=r=8000:cl=mono`, '-t', String(seconds), '-f', 's16le', 'pipe:1'];
}

describe('FfmpegPool', () => {
  it('runs at most `concurrency` at once, queues up to `queue`, and refuses beyond at once', async () => {
    const pool = new FfmpegPool({ concurrency: 2, queue: 1, timeoutMs: 10_000 });
    const jobs = [pool.run(slow(0.6), {}), pool.run(slow(0.6), {}), pool.run(slow(0.2), {})];
    expect(pool.running).toBe(2);
    expect(pool.queued).toBe(1);
    const t0 = performance.now();
    await expect(pool.run(slow(0.1), {})).rejects.toMatchObject({ code: 'FFMPEG_BUSY', retryable: true });
    // Refused at admission (not after waiting for a slot: the running jobs take 600 ms).
    expect(performance.now() - t0).toBeLessThan(300);
    const outs = await Promise.all(jobs);
    expect(outs[0]!.length).toBe(0.6 * 8000 * 2);
    expect(pool.running).toBe(0);
    expect(pool.retryAfterSeconds()).toBeGreaterThanOrEqual(1);
    pool.close();
  });

  it('kills a process that outlives the timeout and frees its slot', async () => {
    const pool = new FfmpegPool({ concurrency: 1, queue: 0, timeoutMs: 1500 });
    const t0 = performance.now();
    await expect(pool.run(slow(10), {})).rejects.toMatchObject({ code: 'FFMPEG_TIMEOUT' });
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(pool.running).toBe(0);
    await expect(pool.run(slow(0.05), {})).resolves.toBeInstanceOf(Buffer);
    pool.close();
  });

  it('a queued job gives up after its maximum wait; close() refuses the rest', async () => {
    const pool = new FfmpegPool({ concurrency: 1, queue: 1, timeoutMs: 10_000, maxWaitMs: 150 });
    const long = pool.run(slow(0.8), {});
    await expect(pool.run(slow(0.1), {})).rejects.toMatchObject({ code: 'FFMPEG_BUSY' });
    await long;
    const again = pool.run(slow(5), {});
    const t0 = performance.now();
    pool.close();
    await again; // a stopped process resolves with what it wrote
    expect(performance.now() - t0).toBeLessThan(2000);
    await expect(pool.run(slow(0.1), {})).rejects.toMatchObject({ code: 'FFMPEG_BUSY' });
  });
});
