/**
 * Ogg Opus checks against the reference tools: ffmpeg must decode our files
 * without a single error or warning, and ffprobe must see the duration we
 * meant to write.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Writes `data` to a temp file, runs `fn` on its path, removes it. */
export function withTempFile<T>(data: Uint8Array, ext: string, fn: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'optin-media-'));
  const path = join(dir, `file${ext}`);
  try {
    writeFileSync(path, data);
    return fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs `ffmpeg -v error -i file -f null -` (decodes every packet) and
 * returns its stderr: empty means ffmpeg found nothing to complain about.
 * `-v warning` with `strict` also catches soft issues (granule, CRC, ...).
 */
export function ffmpegDecodeErrors(ogg: Uint8Array, level: 'error' | 'warning' = 'warning'): string {
  return withTempFile(ogg, '.opus', (path) => {
    const r = spawnSync('ffmpeg', ['-nostdin', '-v', level, '-i', path, '-f', 'null', '-'], { encoding: 'utf8' });
    if (r.status !== 0) return `ffmpeg exited with ${r.status}: ${r.stderr}`;
    return r.stderr;
  });
}

/** Duration of the stream (seconds) as ffprobe reports it. */
export function ffprobeDuration(ogg: Uint8Array): number {
  return withTempFile(ogg, '.opus', (path) => {
    const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', path], { encoding: 'utf8' });
    return Number(out.trim());
  });
}

/** Number of samples ffmpeg decodes (48 kHz mono), i.e. the playable length after pre-skip. */
export function decodedSamples(ogg: Uint8Array): number {
  return withTempFile(ogg, '.opus', (path) => {
    const out = execFileSync('ffmpeg', ['-nostdin', '-v', 'error', '-i', path, '-f', 's16le', '-ac', '1', '-ar', '48000', 'pipe:1'], {
      maxBuffer: 1 << 30,
    });
    return out.length / 2;
  });
}
