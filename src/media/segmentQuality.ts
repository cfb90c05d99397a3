import type { JitterStats } from './JitterBuffer.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Segment } from './Segmenter.ts';

/** The codecs optin records (media/ names them itself: it sits below sfu/). */
type RecordedCodec = 'opus' | 'pcmu' | 'pcma';

/**
 * The quality record stored with a segment (flat, small: it travels as S3 metadata). Counts are
 * the jitter buffer's for the segment's stretch of the track; durations in ms, rounded to 0.1
 * ms (jitter to 0.01 ms). No audio and no identifiers.
 */
// A type, not an interface: the store takes it as a flat record (an index signature).
export type SegmentQualityRecord = {
  /** Segments are only written while the gate is open (R4). */
  gate: 'open';
  run: number;
  expected: number;
  received: number;
  lost: number;
  reordered: number;
  duplicated: number;
  late: number;
  /** Loss and DTX filled by the jitter buffer (in the track's clock). */
  concealedMs: number;
  /** Filler silence the segmenter wrote for gaps (48 kHz Opus time). */
  silenceFilledMs: number;
  dtxMs: number;
  jitterMs: number;
  reanchors: number;
  ssrcChanges: number;
  codec: RecordedCodec;
};

/** Pure: the record for `segment` of run `run`, from the jitter stats taken for it. */
export function segmentQuality(stats: JitterStats, segment: Pick<Segment, 'silenceSamples'>, codec: RecordedCodec, run: number): SegmentQualityRecord {
  const perMs = codec === 'opus' ? 48 : 8;
  const ms = (samples: number, rate: number): number => Math.round((samples / rate) * 10) / 10;
  return {
    gate: 'open',
    run,
    expected: stats.expected,
    received: stats.received,
    lost: stats.lost,
    reordered: stats.reordered,
    duplicated: stats.duplicated,
    late: stats.late,
    concealedMs: ms(stats.concealedSamples, perMs),
    silenceFilledMs: ms(segment.silenceSamples, 48),
    dtxMs: ms(stats.dtxSamples, perMs),
    jitterMs: Math.round(stats.jitterMs * 100) / 100,
    reanchors: stats.reanchors,
    ssrcChanges: stats.ssrcChanges,
    codec,
  };
}

/**
 * A sealed segment's figures into the track metrics (loss ratio, jitter, lost packets, concealed
 * time): in-process tracks and the media threads' segments (whose threads have no registry) alike.
 */
export function observeSegmentQuality(m: Pick<Metrics, 'segments' | 'trackLossRatio' | 'trackJitterSeconds' | 'packetsLost' | 'concealedSeconds'>, q: SegmentQualityRecord): void {
  m.segments.inc({ result: 'sealed' });
  if (q.expected > 0) m.trackLossRatio.observe(q.lost / q.expected);
  m.trackJitterSeconds.observe(q.jitterMs / 1000);
  m.packetsLost.inc(q.lost);
  m.concealedSeconds.inc({ cause: 'loss-or-dtx' }, q.silenceFilledMs / 1000);
}
