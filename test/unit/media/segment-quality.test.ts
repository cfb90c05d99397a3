import { describe, expect, it } from 'vitest';
import { segmentQuality } from '../../../src/media/segmentQuality.ts';
import type { JitterStats } from '../../../src/media/JitterBuffer.ts';

const stats = (over: Partial<JitterStats>): JitterStats => ({
  received: 48, expected: 50, emitted: 48, lost: 2, reordered: 1, duplicated: 0, late: 1,
  dropped: { duplicate: 0, late: 1, probation: 0, 'stale-ssrc': 0, invalid: 0, overflow: 0 },
  concealedSamples: 0, dtxSamples: 0, reanchors: 0, ssrcChanges: 0, jitter: 0, jitterMs: 0,
  ...over,
});

describe('segmentQuality', () => {
  it('converts the track clock to ms (48 kHz Opus, 8 kHz G.711) and rounds for the metadata', () => {
    expect(segmentQuality(stats({ concealedSamples: 1925, dtxSamples: 960, jitterMs: 3.14159 }), { silenceSamples: 1925 }, 'opus', 2)).toEqual({
      gate: 'open', run: 2, expected: 50, received: 48, lost: 2, reordered: 1, duplicated: 0, late: 1,
      concealedMs: 40.1, silenceFilledMs: 40.1, dtxMs: 20, jitterMs: 3.14, reanchors: 0, ssrcChanges: 0, codec: 'opus',
    });
    // G.711: the jitter buffer counts 8 kHz samples; the segmenter's filler is always 48 kHz.
    expect(segmentQuality(stats({ concealedSamples: 160, dtxSamples: 4 }), { silenceSamples: 960 }, 'pcmu', 0)).toMatchObject({
      concealedMs: 20, dtxMs: 0.5, silenceFilledMs: 20, codec: 'pcmu',
    });
  });
});
