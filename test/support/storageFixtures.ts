import { createHash } from 'node:crypto';
import type { AuditSink, SegmentInput, StorageAuditEntry, TrackSegment } from '../../src/storage/types.ts';

/**
 * Stand-ins and readers for storage tests: recognisable segment bytes and metadata, an audit sink
 * that keeps what it is handed, and whole tracks read back through the store.
 */

/**
 * Deterministic stand-in "Ogg" bytes per (recording, participant, segment): the storage layer
 * seals and moves bytes without parsing them, so tests can recognise every copy (and prove none
 * reaches the spool in clear) without encoding audio.
 */
export function fakeOgg(recordingId: string, participantId: string, segment: number, size = 4000): Buffer {
  const seed = createHash('sha256').update(`${recordingId}/${participantId}/${segment}`).digest();
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 32) seed.copy(out, i, 0, Math.min(32, size - i));
  out.write('OggS', 0, 'latin1');
  return out;
}

/** The recorder's metadata for a 10 s segment; `extra` overrides fields. */
export function segMeta(recordingId: string, participantId: string, segment: number, extra: Partial<SegmentInput> = {}): SegmentInput {
  return {
    recordingId,
    participantId,
    segment,
    run: 0,
    startWallClockMs: 1_700_000_000_000 + segment * 10_000,
    durationMs: 10_000,
    opusPayloadBytes: 3900,
    quality: { lostPackets: 0, concealedMs: 0, jitterMs: 3.5 },
    ...extra,
  };
}

/** An AuditSink that keeps a copy of every entry, in order (the trail itself is tested apart). */
export class MemoryAudit implements AuditSink {
  entries: StorageAuditEntry[] = [];
  async append(entry: StorageAuditEntry): Promise<unknown> {
    this.entries.push(structuredClone(entry));
    return undefined;
  }
}

/** Anything that plays a track back: the RecordingStore, or the app's store. */
export interface TrackSource {
  openTrack(recordingId: string, participantId: string): AsyncIterable<TrackSegment>;
}

/** One participant's track read back in full (decrypted), segment by segment. */
export async function readTrack(store: TrackSource, recordingId: string, participantId: string): Promise<TrackSegment[]> {
  const out: TrackSegment[] = [];
  for await (const s of store.openTrack(recordingId, participantId)) out.push(s);
  return out;
}

/** The Ogg files of one participant's track, in segment order. */
export async function readTrackOgg(store: TrackSource, recordingId: string, participantId: string): Promise<Buffer[]> {
  return (await readTrack(store, recordingId, participantId)).map((s) => s.ogg);
}
