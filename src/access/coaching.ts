import { randomInt } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { readOggOpus, joinOggOpus } from '../media/OggOpusReader.ts';
import { Segmenter, type Segment } from '../media/Segmenter.ts';
import { renderStereo, type FfmpegRunner, type StereoInput } from '../media/ffmpeg.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import type { RecordingSource, TrackSegment } from '../storage/types.ts';
import { toWav } from './wav.ts';

/**
 * Coaching playback (docs/architecture.md §6, R10): one stereo file per recording, agent LEFT, customer RIGHT,
 * both sides on one time axis taken from the segments' wall-clock anchors, so the coach hears
 * the conversation as it happened: a pause of the gate (a gap between runs) is silence of the
 * right length on both sides, never a jump.
 *
 * How: each participant's decrypted segments are re-muxed (not re-encoded) into ONE mono Ogg Opus
 * stream in which every gap is Opus silence of the right length (src/media/Segmenter.ts does exactly
 * that for the recorder already); ffmpeg then decodes each track, delays it to its first anchor on
 * the common axis, merges the two sides into stereo and encodes once.
 */

export const SAMPLE_RATE = 48_000;
const SAMPLES_PER_MS = SAMPLE_RATE / 1000;
/**
 * Inside one run, consecutive segments are contiguous by construction; their wall-clock anchors
 * may still disagree with the summed durations by a few ms (anchor jitter). Only a larger gap is
 * real (loss the jitter buffer did not cover, a gate pause) and becomes silence; smaller ones
 * are ignored, so no clicks of inserted silence appear mid-word.
 */
const CONTINUITY_SLACK_SAMPLES = 20 * SAMPLES_PER_MS;
/** Aligned tracks are built in 60 s Ogg pieces, then joined (bounded page tables). */
const PIECE_SAMPLES = 60 * SAMPLE_RATE;

export type RenderFormat = 'ogg' | 'wav';

export interface AlignedTrack {
  /** Mono Ogg Opus of the whole track, its first sample at `leadSamples` on the common axis. */
  ogg: Buffer;
  /** Offset of the track's first sample from the origin, 48 kHz samples. */
  leadSamples: number;
  /** Decoded length in 48 kHz samples (pre-skip removed), lead excluded. */
  samples: number;
}

/**
 * Re-muxes one participant's segments (in order) into one mono Ogg Opus stream that keeps time
 * from its first anchor on: gaps between runs (and larger anchor gaps) become Opus silence of
 * the right length. The lead-in before the first anchor is NOT made of silence packets but
 * returned as `leadSamples` and applied in PCM by the mixer: a decoder fed CELT silence and then
 * a SILK frame fades the first frame in (a mode transition without redundancy), which would
 * blur the very onset a coach listens for. Pure (no I/O): Ogg in, Ogg out.
 */
export function alignTrack(segments: readonly Pick<TrackSegment, 'ogg' | 'meta'>[], originMs: number): AlignedTrack | null {
  if (segments.length === 0) return null;
  const parsed = segments.map((s) => ({ meta: s.meta, stream: readOggOpus(s.ogg) }));
  const first = parsed[0]!;
  if (first.stream.head.channels !== 1) throw new OptinError('OGG_JOIN_MISMATCH', 'coaching render expects mono tracks');
  // The track's own pre-skip (encoder lookahead of a transcoded leg) is kept: the decoder drops
  // it from the start exactly as it does for the track alone.
  const preSkip = first.stream.head.preSkip;
  const segmenter = new Segmenter({ serial: randomInt(1, 0x7fff_ffff), segmentSamples: PIECE_SAMPLES, preSkip, vendor: 'optin' });
  const trackStartMs = first.meta.startWallClockMs;
  const pieces: Segment[] = [];
  let prevRun = first.meta.run;
  for (const { meta, stream } of parsed) {
    const target = Math.round((meta.startWallClockMs - trackStartMs) * SAMPLES_PER_MS);
    const gap = target - segmenter.position;
    if (gap > 0 && (meta.run !== prevRun || gap > CONTINUITY_SLACK_SAMPLES)) pieces.push(...segmenter.push({ kind: 'gap', samples: gap }));
    prevRun = meta.run;
    for (const p of stream.packets) {
      if (p.samples <= 0) throw new OptinError('OGG_MALFORMED', `segment ${meta.segment} holds an invalid Opus packet`);
      pieces.push(...segmenter.push({ kind: 'packet', payload: p.data, samples: p.samples }));
    }
  }
  const last = segmenter.close();
  if (last) pieces.push(last);
  return {
    ogg: joinOggOpus(pieces.map((p) => p.ogg), { vendor: 'optin', tags: {} }),
    leadSamples: Math.max(0, Math.round((trackStartMs - originMs) * SAMPLES_PER_MS)),
    samples: segmenter.position - preSkip,
  };
}

/** The time axis of a recording: from the first recorded sample of anyone to the last. */
export function renderSpan(m: Pick<RecordingManifest, 'segments' | 'participants'>, excluded?: ReadonlySet<string>): { originMs: number; endMs: number; samples: number } | null {
  const live = new Set(m.participants.filter((p) => p.erased === undefined && !(excluded?.has(p.participantId) ?? false)).map((p) => p.participantId));
  const segs = m.segments.filter((s) => live.has(s.participantId));
  if (segs.length === 0) return null;
  const originMs = Math.min(...segs.map((s) => s.startWallClockMs));
  const endMs = Math.max(...segs.map((s) => s.startWallClockMs + s.durationMs));
  return { originMs, endMs, samples: Math.max(1, Math.round((endMs - originMs) * SAMPLES_PER_MS)) };
}

/** Upper estimate of a render's size, to refuse before spending the work. */
export function estimateRenderBytes(samples: number, format: RenderFormat): number {
  // 64 kbit/s stereo Opus plus Ogg overhead; WAV: 4 bytes per stereo sample.
  return format === 'wav' ? 44 + samples * 4 : Math.ceil((samples / SAMPLE_RATE) * 9000) + 4096;
}

export interface RenderedPlayback {
  bytes: Buffer;
  contentType: string;
  durationMs: number;
}

export type TrackSource = Pick<RecordingSource, 'openTrack'>;

export interface RenderOptions {
  /** Where ffmpeg runs (the access API's bounded pool). */
  runner?: FfmpegRunner;
  /** Participants left out besides the erased ones (an erasure requested but not yet carried out: R9). */
  excluded?: ReadonlySet<string>;
}

/**
 * Renders the coaching file of a recording: agents LEFT, customers RIGHT. Erased participants
 * (and `excluded` ones) are left out (their side is silence). `maxBytes` bounds the result
 * (memory: the render is cached whole so players can seek).
 */
export async function renderCoaching(store: TrackSource, m: RecordingManifest, format: RenderFormat, maxBytes: number, options: RenderOptions = {}): Promise<RenderedPlayback> {
  const excluded = options.excluded;
  const span = renderSpan(m, excluded);
  if (span === null) throw new OptinError('RECORDING_EMPTY', `recording ${m.recordingId} holds no audio to play`);
  if (estimateRenderBytes(span.samples, format) > maxBytes) {
    throw new OptinError('RENDER_TOO_LARGE', `the ${format} render of ${m.recordingId} would exceed ${maxBytes} bytes; ask for format=ogg or raise the render cache size`);
  }
  const left: StereoInput[] = [];
  const right: StereoInput[] = [];
  for (const p of m.participants) {
    if (p.erased !== undefined || (excluded?.has(p.participantId) ?? false) || !m.segments.some((s) => s.participantId === p.participantId)) continue;
    const segs: TrackSegment[] = [];
    for await (const s of store.openTrack(m.recordingId, p.participantId)) segs.push(s);
    const aligned = alignTrack(segs, span.originMs);
    if (aligned === null) continue;
    (p.role === 'agent' ? left : right).push({ ogg: aligned.ogg, delaySamples: aligned.leadSamples });
  }
  const out = await renderStereo({ left, right, samples: span.samples, format: format === 'wav' ? 's16le' : 'ogg', ...(options.runner ? { runner: options.runner } : {}) });
  const bytes = format === 'wav' ? toWav(out, 2, SAMPLE_RATE) : out;
  return { bytes, contentType: format === 'wav' ? 'audio/wav' : 'audio/ogg; codecs=opus', durationMs: Math.round(span.samples / SAMPLES_PER_MS) };
}
