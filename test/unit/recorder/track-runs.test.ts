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
      track.startRun('r_0000000000000001', round, now);
      send(130); // 2.6 s: two full segments and an open one, with frames still in the encoder
      const ending = track.endRun(now + 200); // the gate closes...
      track.startRun('r_0000000000000001', round + 100, now); // ...and reopens at once
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

  it('a reconnecting speaker: a new run inside the track, then another codec continuing the numbering in a new TrackRecorder', async () => {
    const stored: SegmentInput[] = [];
    const base = { callId: 'c2', participantId: 'p2', segmentSamples: 48000, sink: { putSegment: async (meta: SegmentInput) => void stored.push(meta) }, encoder: pool, logger: createLogger('silent'), onStoreError: () => undefined };
    const opus = new TrackRecorder({ ...base, codec: 'opus' });
    const opusPayload = Buffer.from([0xf8, 0xff, 0xfe]); // a 20 ms Opus packet (CELT, silence)
    let now = 2_000_000;
    const talk = (track: TrackRecorder, ssrc: number, pt: number, payload: Buffer, step: number, packets: number) => {
      let seq = ssrc & 0xffff;
      let ts = ssrc * 3;
      for (let i = 0; i < packets; i++) {
        track.onRtp(buildRtp({ payloadType: pt, sequenceNumber: seq++ & 0xffff, timestamp: ts >>> 0, ssrc, payload }), now, true);
        ts += step;
        now += 20;
        track.tick(now);
      }
    };
    opus.startRun('r_0000000000000002', 0, now);
    talk(opus, 0x1111, 100, opusPayload, 960, 75); // 1.5 s
    // The producer changed (new SSRC, new RTP clock): the same track, a new run.
    const ended = opus.restartRun(now, 1);
    expect(opus.recording).toBe(true);
    talk(opus, 0x2222, 100, opusPayload, 960, 75);
    await ended;
    // Reconnected with G.711: the numbering carries over into a new TrackRecorder.
    const closing = opus.endRun(now + 200);
    const pcmu = new TrackRecorder({ ...base, codec: 'pcmu', continueFrom: opus.continuation });
    await closing;
    pcmu.startRun('r_0000000000000002', 2, now);
    talk(pcmu, 0x3333, 0, Buffer.alloc(160, 0xff), 160, 75);
    await pcmu.close(now + 200);
    await opus.close(now + 200);
    await opus.settled();
    const runs = stored.map((m) => `${m.run}:${m.segment}`);
    expect(new Set(stored.map((m) => m.segment)).size, runs.join(' ')).toBe(stored.length);
    // Runs in order, segment numbers growing across them.
    const sorted = [...stored].sort((a, b) => a.segment - b.segment);
    expect(sorted.map((m) => m.run)).toEqual([...sorted.map((m) => m.run)].sort((a, b) => a - b));
    expect(new Set(stored.map((m) => m.run))).toEqual(new Set([0, 1, 2]));
    const totalMs = stored.reduce((a, m) => a + m.durationMs, 0);
    expect(totalMs).toBeGreaterThan(3 * 1500 - 3 * 80);
  }, 30_000);
});
