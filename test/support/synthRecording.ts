import { randomInt } from 'node:crypto';
import { OptinError } from '../../src/errors/OptinError.ts';
import { readOggOpus } from '../../src/media/OggOpusReader.ts';
import { Segmenter, type Segment } from '../../src/media/Segmenter.ts';
import type { ConsentEvidence, RecordingPolicy } from '../../src/storage/manifest.ts';
import type { RecordingStore } from '../../src/storage/RecordingStore.ts';
import type { BeginRecordingInput, ParticipantInput } from '../../src/storage/types.ts';

/**
 * Synthetic recordings made of real Opus packets (a fixture file, looped) cut by the recorder's
 * own Segmenter and stored through the real RecordingStore: for the extract benchmark and for
 * tests that need many recordings, long ones, or ones with chosen timestamps, without playing
 * each call in real time. Never used by the worker itself: it lives with the test support
 * because tests are its main users (and bench/extractStandalone.ts borrows it), and nothing that
 * ships may fabricate recordings.
 */

/** `seconds` of audio from `source` (an Ogg Opus file, looped) as recorder-style segments. */
export function synthSegments(source: Buffer, opts: { seconds: number; segmentSeconds?: number }): Segment[] {
  const stream = readOggOpus(source);
  const packets = stream.packets.filter((p) => p.samples > 0);
  if (packets.length === 0) throw new OptinError('INVALID_INPUT', 'synthSegments: the source holds no audio packets');
  const segmenter = new Segmenter({ serial: randomInt(1, 0x7fff_ffff), segmentSamples: Math.round((opts.segmentSeconds ?? 10) * 48_000), preSkip: stream.head.preSkip });
  const out: Segment[] = [];
  const target = Math.round(opts.seconds * 48_000);
  for (let i = 0; segmenter.position < target; i = (i + 1) % packets.length) {
    const p = packets[i]!;
    out.push(...segmenter.push({ kind: 'packet', payload: p.data, samples: p.samples }));
  }
  const last = segmenter.close();
  if (last) out.push(last);
  return out;
}

export interface SynthParticipant extends ParticipantInput {
  /** Ogg Opus file whose packets make this participant's audio. */
  source: Buffer;
  /** Offset of this participant's first sample from the recording start (default 0). */
  offsetMs?: number;
}

/**
 * Stores a whole recording: begin, every participant's segments (wall-clock anchors from
 * `startedAtMs`), end. Returns the final manifest's recording id.
 */
export async function storeSynthRecording(
  store: Pick<RecordingStore, 'beginRecording' | 'putSegment' | 'endRecording'>,
  input: {
    recordingId: string;
    callId: string;
    startedAtMs: number;
    seconds: number;
    segmentSeconds?: number;
    participants: SynthParticipant[];
    consentEvidence?: ConsentEvidence[];
    policy?: RecordingPolicy;
  },
): Promise<string> {
  const begin: BeginRecordingInput = {
    recordingId: input.recordingId,
    callId: input.callId,
    startedAt: input.startedAtMs,
    participants: input.participants.map(({ source: _s, offsetMs: _o, ...p }): ParticipantInput => p),
    consentEvidence: input.consentEvidence ?? [],
    ...(input.policy ? { policy: input.policy } : {}),
  };
  await store.beginRecording(begin);
  for (const p of input.participants) {
    const t0 = input.startedAtMs + (p.offsetMs ?? 0);
    for (const seg of synthSegments(p.source, { seconds: input.seconds, ...(input.segmentSeconds ? { segmentSeconds: input.segmentSeconds } : {}) })) {
      await store.putSegment(
        {
          recordingId: input.recordingId,
          participantId: p.participantId,
          segment: seg.index,
          run: 0,
          startWallClockMs: t0 + seg.startSample / 48,
          durationMs: seg.samples / 48,
          opusPayloadBytes: seg.opusPayloadBytes,
          quality: { gate: 'open', synthetic: true },
        },
        seg.ogg,
      );
    }
  }
  await store.endRecording(input.recordingId);
  return input.recordingId;
}
