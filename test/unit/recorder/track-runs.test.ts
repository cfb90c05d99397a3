/**
 * A transcoded (G.711) track whose gate closes and reopens while frames are still in the encoder
 * threads: the finishing run and the new one must never share a segment number (the store keys
 * segments by number), and both runs' audio must be handed over. Real TranscoderPool threads.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { TrackRecorder } from '../../../src/recorder/TrackRecorder.ts';
import { TranscoderPool } from '../../../src/media/TranscoderPool.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import { encodeUlaw } from '../../../src/media/g711.ts';
import { createLogger } from '../../../src/log/logger.ts';
import type { SegmentInput } from '../../../src/storage/types.ts';

const pool = new TranscoderPool({ threads: 1 });
afterAll(async () => {
  await pool.close();
});

describe('TrackRecorder runs', () => {
  it('never reuses a segment number when a G.711 run reopens before its encodes finish', async () => {
    const stored: SegmentInput[] = [];
    const track = new TrackRecorder({
      callId: 'c1',
      participantId: 'p1',
      codec: 'pcmu',
      segmentSamples: 48000, // 1 s segments
      sink: { putSegment: async (meta) => void stored.push(meta) },
      encoder: pool,
      logger: createLogger('silent'),
      onStoreError: () => undefined,
    });
    const tone = encodeUlaw(Array.from({ length: 160 }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 1000 * i) / 8000))));
    let seq = 100;
    let ts = 0;
    let now = 1_000_000;
    const send = (packets: number) => {
      for (let i = 0; i < packets; i++) {
        track.onRtp(buildRtp({ payloadType: 0, sequenceNumber: seq++ & 0xffff, timestamp: ts, ssrc: 7, payload: tone }), now, true);
        ts += 160;
        now += 20;
        track.tick(now);
      }
    };
    for (let round = 0; round < 5; round++) {
      track.startRun('r_0000000000000001', round);
      send(130); // 2.6 s: two full segments and an open one, with frames still in the encoder
      const ending = track.endRun(now + 200); // the gate closes...
      track.startRun('r_0000000000000001', round + 100); // ...and reopens at once
      send(60);
      await ending;
      await track.endRun(now + 200);
    }
    await track.settled();
    const numbers = stored.map((m) => m.segment);
    expect(new Set(numbers).size).toBe(numbers.length);
    // Every sample handed over: 5 x (2.6 s + 1.2 s) of audio.
    const totalMs = stored.reduce((a, m) => a + m.durationMs, 0);
    expect(totalMs).toBeGreaterThan(5 * 3800 - 5 * 60);
    expect(totalMs).toBeLessThan(5 * 3800 + 5 * 60);
  }, 30_000);
});
