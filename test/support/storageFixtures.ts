import { createHash } from 'node:crypto';
import type { SegmentInput } from '../../src/storage/types.ts';

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
