/**
 * Open segments on disk (src/media/OpenSegmentFiles.ts) in real media threads: a track's closed
 * pages go to an encrypted file of its thread's directory while the segment is open, the finished
 * segment holds every packet, and the file is gone when the segment is taken or the run erased.
 */
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaThreadPool } from '../../../src/mediathreads/MediaThreadPool.ts';
import { ThreadedMediaPlane } from '../../../src/mediathreads/ThreadedMediaPlane.ts';
import type { ThreadedTrack } from '../../../src/mediathreads/ThreadedTrack.ts';
import { openThreadTrack, startThreadPlane, type ThreadPlane } from '../../support/threadTrack.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';
import { createMetrics } from '../../../src/metrics/metrics.ts';

const root = mkdtempSync(join(tmpdir(), 'optin-open-segments-'));
const dir = join(root, 'open-segments');
/** 300 packets of 20 ms: a page closes at 255 (5.1 s), so the open segment has one on disk. */
const PACKETS = 300;
const marker = (callId: string, seq: number): Buffer => Buffer.from(`${callId}/voice-${String(seq).padStart(4, '0')}`);

const metrics = createMetrics();
/** The thread's `optin_open_segment_files` as it last reported (once a second). */
const openFiles = async (): Promise<number | undefined> => (await metrics.openSegmentFiles.get()).values.find((v) => v.labels.thread === '0')?.value;
let pool: MediaThreadPool;
let plane: ThreadedMediaPlane;
let sender: dgram.Socket;
let threads: ThreadPlane | undefined;

beforeAll(async () => {
  // A file left by an earlier process: removed when the threads start.
  mkdirSync(join(dir, 't0'), { recursive: true });
  writeFileSync(join(dir, 't0', 'left-by-a-crash.seg'), 'ciphertext of a dead key');
  threads = await startThreadPlane({ threads: 1, maxTracks: 16, portMin: 47_000, portMax: 47_099, maxStreams: 4, openSegmentDir: dir, metrics });
  ({ pool, plane, sender } = threads);
});

afterAll(async () => {
  await threads?.close();
  rmSync(root, { recursive: true, force: true });
});

async function recordingTrack(callId: string, ssrc: number, stored: Buffer[]): Promise<{ track: ThreadedTrack; send: () => Promise<void> }> {
  const senderPort = (sender.address() as { port: number }).port;
  const { track, rtpPort } = await openThreadTrack(pool, plane, { callId, senderPort, recordingId: `rec-${callId}`, stored: (ogg) => stored.push(ogg) });
  await sleep(50);
  const send = async (): Promise<void> => {
    for (let seq = 0; seq < PACKETS; seq++) {
      const payload = Buffer.concat([Buffer.from([0xf8]), marker(callId, seq)]);
      sender.send(buildRtp({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc, payload }), rtpPort, '127.0.0.1');
      await sleep(2);
    }
    const deadline = Date.now() + 5000;
    while (track.counters.received < PACKETS && Date.now() < deadline) await sleep(50);
    expect(track.counters.received).toBe(PACKETS);
  };
  return { track, send };
}

describe('media threads: open segments on disk, encrypted', () => {
  it('keeps closed pages in an encrypted file while the segment is open, and removes it when the segment is finished', async () => {
    expect(readdirSync(join(dir, 't0'))).toEqual([]); // the crash's leftover is gone
    const stored: Buffer[] = [];
    const { track, send } = await recordingTrack('call-kept', 0x4401, stored);
    await send();
    await sleep(150); // past the jitter buffer's hold
    const files = readdirSync(join(dir, 't0'));
    expect(files.length).toBe(1);
    expect(files[0]).toMatch(/^[0-9a-z]+\.seg$/); // a counter: no call or speaker in the name
    const onDisk = readFileSync(join(dir, 't0', files[0]!));
    expect(onDisk.length).toBeGreaterThan(255 * 20);
    expect(onDisk.includes(Buffer.from('voice-'))).toBe(false);
    await expect.poll(openFiles, { timeout: 3000 }).toBe(1);

    await track.endRun(Date.now());
    await track.close(Date.now());
    expect(readdirSync(join(dir, 't0'))).toEqual([]);
    await expect.poll(openFiles, { timeout: 3000 }).toBe(0);
    expect((await metrics.openSegmentFallbacks.get()).values.reduce((a, v) => a + v.value, 0)).toBe(0);
    const ogg = Buffer.concat(stored);
    const missing = Array.from({ length: PACKETS }, (_, s) => s).filter((s) => ogg.indexOf(marker('call-kept', s)) === -1);
    expect(missing).toEqual([]);
  });

  it('an erased run loses its file at once, and nothing of it is stored', async () => {
    const stored: Buffer[] = [];
    const { track, send } = await recordingTrack('call-erased', 0x4402, stored);
    await send();
    await sleep(150);
    expect(readdirSync(join(dir, 't0')).length).toBe(1);
    track.discardRun();
    const deadline = Date.now() + 2000;
    while (readdirSync(join(dir, 't0')).length > 0 && Date.now() < deadline) await sleep(10);
    expect(readdirSync(join(dir, 't0'))).toEqual([]);
    await track.close(Date.now());
    expect(stored).toEqual([]);
  });
});
