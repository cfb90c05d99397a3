/**
 * Extract throughput (docs/architecture.md §7: "a 30-minute single-speaker extract in well under a second,
 * excluding network"): writes one 30-minute track through the real store (Segmenter -> seal ->
 * S3), then times reading it back the way the extract does: `store.openTrack` (GET, digest
 * check, key unwrap, AES-GCM open per segment) and `joinOggOpus` into one continuous file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Client } from 'minio';
import { RecordingStore } from '../src/storage/RecordingStore.ts';
import { bucketNames } from '../src/storage/layout.ts';
import { Keyring } from '../src/crypto/Keyring.ts';
import { Segmenter } from '../src/media/Segmenter.ts';
import { readOggOpus, joinOggOpus } from '../src/media/OggOpusReader.ts';
import { createLogger } from '../src/log/logger.ts';
import { ROOT } from './loadgen.ts';

export interface ExtractResult {
  audioMinutes: number;
  segments: number;
  sealedBytes: number;
  /** Time to write the track (seal + PUT of every segment), for context only. */
  writeMs: number;
  /** openTrack over every segment: GET + verify + decrypt. */
  readDecryptMs: number;
  /** joinOggOpus of the decrypted segments into one file. */
  joinMs: number;
  totalMs: number;
  /** Minutes of audio extracted per second of wall time. */
  minutesPerSecond: number;
  joinedBytes: number;
}

export async function measureExtract(client: Client, bucketPrefix: string, minutes = 30): Promise<ExtractResult> {
  const spoolDir = mkdtempSync(path.join(os.tmpdir(), 'optin-bench-extract-'));
  const keyring = Keyring.fromConfig({ activeKeyId: 'x1', keys: { x1: Keyring.generateKeyBase64() } });
  const store = await RecordingStore.open({
    client,
    buckets: bucketNames({ prefix: bucketPrefix }),
    keyring,
    spoolDir,
    spoolMaxBytes: 256 * 1024 * 1024,
    logger: createLogger('warn'),
    sweep: false,
    nodeId: 'bench-extract',
  });
  try {
    const recordingId = `r_${randomBytes(8).toString('hex')}`;
    const now = Date.now();
    await store.beginRecording({
      recordingId,
      callId: `bx${randomBytes(4).toString('hex')}`,
      startedAt: now,
      participants: [
        { participantId: 'pa', role: 'agent', subjectId: 'bench-agent' },
        { participantId: 'pc', role: 'customer', subjectId: 'bench-customer' },
      ],
      consentEvidence: [{ method: 'dtmf', at: now, infoVersion: 'bench' }],
    });
    // The agent's track: the speech fixture's packets, looped for `minutes`.
    const packets = readOggOpus(readFileSync(path.join(ROOT, 'media-fixtures/generated/agent-speech.opus'))).packets.filter((p) => p.samples > 0);
    const segmenter = new Segmenter({ serial: 1234, segmentSamples: 480_000 });
    const t0 = performance.now();
    let sealedBytes = 0;
    let segments = 0;
    const put = async (seg: ReturnType<Segmenter['push']>[number]): Promise<void> => {
      const r = await store.putSegment(
        {
          recordingId,
          participantId: 'pa',
          segment: seg.index,
          run: 0,
          startWallClockMs: now + seg.startSample / 48,
          durationMs: Math.round(seg.samples / 48),
          opusPayloadBytes: seg.opusPayloadBytes,
          quality: { gate: 'open' },
        },
        seg.ogg,
      );
      sealedBytes += r.sealedBytes;
      segments++;
    };
    const total = (minutes * 60 * 48_000) / 960;
    for (let i = 0; i < total; i++) {
      const p = packets[i % packets.length]!;
      for (const seg of segmenter.push({ kind: 'packet', payload: p.data, samples: p.samples })) await put(seg);
    }
    const last = segmenter.close();
    if (last) await put(last);
    await store.endRecording(recordingId);
    await store.drained(60_000);
    const writeMs = performance.now() - t0;

    const t1 = performance.now();
    const files: Buffer[] = [];
    for await (const s of store.openTrack(recordingId, 'pa')) files.push(s.ogg);
    const t2 = performance.now();
    const joined = joinOggOpus(files);
    const t3 = performance.now();
    await store.deleteRecording(recordingId, { reason: 'benchmark cleanup', actor: 'bench' });
    return {
      audioMinutes: minutes,
      segments,
      sealedBytes,
      writeMs,
      readDecryptMs: t2 - t1,
      joinMs: t3 - t2,
      totalMs: t3 - t1,
      minutesPerSecond: minutes / ((t3 - t1) / 1000),
      joinedBytes: joined.length,
    };
  } finally {
    await store.close();
    rmSync(spoolDir, { recursive: true, force: true });
  }
}
