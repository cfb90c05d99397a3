/**
 * Issue 16: a closing gate stops writing within one packet on every media thread. Real worker
 * threads, real UDP sockets in them, real tracks (jitter buffer, segmenter, Ogg): the test sends
 * RTP to each thread's streams, closes every track's gate word between two packets, and reads the
 * stored Ogg: the packet before the close is there, the one right after it and every later one not.
 */
import dgram from 'node:dgram';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaThreadPool } from '../../../src/mediathreads/MediaThreadPool.ts';
import { ThreadedMediaPlane } from '../../../src/mediathreads/ThreadedMediaPlane.ts';
import type { ThreadedTrack } from '../../../src/mediathreads/ThreadedTrack.ts';
import { openThreadTrack, startThreadPlane, type ThreadPlane } from '../../support/threadTrack.ts';
import type { StreamEvent } from '../../../src/siprec/MediaPlane.ts';
import { buildRtp } from '../../../src/rtp/RtpPacket.ts';

const THREADS = 2;
const CALLS_PER_THREAD = 2;
/** Opus TOC 0xf8 (CELT FB 20 ms, one frame) and a marker naming the packet. */
const payloadOf = (callId: string, seq: number): Buffer => Buffer.concat([Buffer.from([0xf8]), Buffer.from(`${callId}/pkt-${String(seq).padStart(5, '0')}`)]);

let pool: MediaThreadPool;
let plane: ThreadedMediaPlane;
let sender: dgram.Socket;
let threads: ThreadPlane | undefined;
const events: StreamEvent[] = [];

beforeAll(async () => {
  threads = await startThreadPlane({ threads: THREADS, maxTracks: 64, portMin: 46_000, portMax: 46_999, maxStreams: 16, onEvent: (e) => events.push(e) });
  ({ pool, plane, sender } = threads);
});

afterAll(async () => {
  await threads?.close();
});

describe('media threads: the gate in shared memory', () => {
  it('a closing gate stops writing within one packet on every thread, and nothing after it is stored', async () => {
    // Calls whose stable hash puts them on each thread.
    const callIds: string[] = [];
    const perThread = new Array<number>(THREADS).fill(0);
    for (let i = 0; callIds.length < THREADS * CALLS_PER_THREAD; i++) {
      const callId = `call-${i}`;
      const t = pool.threadOf(callId).index;
      if (perThread[t]! < CALLS_PER_THREAD) {
        perThread[t]!++;
        callIds.push(callId);
      }
    }
    const senderPort = (sender.address() as { port: number }).port;
    const stored = new Map<string, Buffer[]>();
    const legs: { callId: string; port: number; track: ThreadedTrack; ssrc: number }[] = [];
    for (const [i, callId] of callIds.entries()) {
      const { track, rtpPort } = await openThreadTrack(pool, plane, {
        callId,
        senderPort,
        recordingId: `rec-${callId}`,
        stored: (ogg) => {
          const list = stored.get(`rec-${callId}`) ?? [];
          list.push(ogg);
          stored.set(`rec-${callId}`, list);
        },
      });
      legs.push({ callId, port: rtpPort, track, ssrc: 0x1000 + i });
    }
    expect(new Set(legs.map((l) => pool.threadOf(l.callId).index)).size).toBe(THREADS);
    await sleep(50); // every thread has its tracks and runs

    const send = (seq: number): void => {
      for (const l of legs) {
        sender.send(buildRtp({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc: l.ssrc, payload: payloadOf(l.callId, seq) }), l.port, '127.0.0.1');
      }
    };
    const CLOSE_AFTER = 40;
    for (let seq = 0; seq <= CLOSE_AFTER; seq++) {
      send(seq);
      await sleep(20);
    }
    // Every packet so far was read by its thread (the threads' figures, once a second, say so).
    // Then close every gate word and send the next packet at once.
    const deadline = Date.now() + 5000;
    while (legs.some((l) => l.track.counters.received < CLOSE_AFTER + 1) && Date.now() < deadline) await sleep(50);
    expect(legs.map((l) => l.track.counters.received)).toEqual(legs.map(() => CLOSE_AFTER + 1));
    for (const l of legs) l.track.setWritable(false);
    for (let seq = CLOSE_AFTER + 1; seq <= CLOSE_AFTER + 20; seq++) {
      send(seq);
      await sleep(5);
    }
    await sleep(50);
    await Promise.all(legs.map((l) => l.track.endRun(Date.now())));
    await Promise.all(legs.map((l) => l.track.close(Date.now())));

    for (const l of legs) {
      const ogg = Buffer.concat(stored.get(`rec-${l.callId}`) ?? []);
      const kept = (seq: number): boolean => ogg.indexOf(payloadOf(l.callId, seq).subarray(1)) !== -1;
      const keptBefore = Array.from({ length: CLOSE_AFTER + 1 }, (_, s) => s).filter(kept).length;
      const keptAfter = Array.from({ length: 20 }, (_, k) => CLOSE_AFTER + 1 + k).filter(kept);
      console.log(`thread ${pool.threadOf(l.callId).index} ${l.callId}: kept ${keptBefore}/${CLOSE_AFTER + 1} before the close, ${keptAfter.length} after; last kept ${kept(CLOSE_AFTER) ? CLOSE_AFTER : 'earlier'}; dropped closed ${l.track.counters.droppedClosed}`);
      expect(kept(CLOSE_AFTER), `${l.callId}: the packet read just before the close is stored`).toBe(true);
      expect(keptBefore).toBe(CLOSE_AFTER + 1);
      expect(keptAfter, `${l.callId}: packets after the close`).toEqual([]);
      // Judged in the thread: every packet after the close was received there and dropped at once.
      expect(l.track.counters.received).toBe(CLOSE_AFTER + 21);
      expect(l.track.counters.droppedClosed).toBe(20);
    }
    expect(events.filter((e) => e.type === 'opened')).toHaveLength(legs.length);
  });

  it('a main thread that goes silent for more than a second: the media threads keep nothing until it is heard again', async () => {
    const callId = 'stall-call';
    const senderPort = 46_900 + (process.pid % 50);
    const stored: Buffer[] = [];
    const { track, rtpPort } = await openThreadTrack(pool, plane, { callId, senderPort, recordingId: 'rec-stall', stored: (ogg) => stored.push(ogg) });
    // The sender must go on while this thread is stalled: a thread of its own, 150 packets at 20 ms.
    const sender = new Worker(
      `const dgram = require('node:dgram'); const { workerData: w } = require('node:worker_threads');
       const s = dgram.createSocket('udp4'); s.bind(w.from, '127.0.0.1', () => {
         let seq = 0; const t = setInterval(() => {
           const p = Buffer.alloc(12 + 1 + 12); p[0] = 0x80; p[1] = 111; p.writeUInt16BE(seq, 2); p.writeUInt32BE(seq * 960, 4); p.writeUInt32BE(0x5eed, 8);
           p[12] = 0xf8; p.write('stall-' + String(seq).padStart(6, '0'), 13, 'latin1');
           s.send(p, w.to, '127.0.0.1'); if (++seq === 150) { clearInterval(t); setTimeout(() => s.close(), 100); }
         }, 20); });`,
      { eval: true, workerData: { from: senderPort, to: rtpPort } },
    );
    const senderDone = once(sender, 'exit');
    await sleep(600);
    // The main thread stalls for 1.8 s (its pulse stops with it); the gate word stays open.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1800);
    await senderDone;
    await sleep(100);
    await track.endRun(Date.now());
    await track.close(Date.now());
    const ogg = Buffer.concat(stored);
    const kept = (seq: number): boolean => ogg.indexOf(Buffer.from(`stall-${String(seq).padStart(6, '0')}`, 'latin1')) !== -1;
    const missing = Array.from({ length: 150 }, (_, s) => s).filter((s) => !kept(s));
    console.log(`main stalled 1.8 s: ${missing.length} packets not kept (${missing.join(",")}), dropped closed ${track.counters.droppedClosed}`);
    // Before the stall and after it everything is kept; in it, from about a second on, nothing.
    expect(kept(5) && kept(25)).toBe(true);
    expect(kept(149)).toBe(true);
    expect(missing.length).toBeGreaterThanOrEqual(20);
    expect(missing.length).toBeLessThanOrEqual(90); // never more than the stall itself (1.8 s of 20 ms packets)
    expect(missing.at(-1)! - missing[0]!).toBe(missing.length - 1);
    expect(track.counters.droppedClosed).toBe(missing.length);
  });
});
