/**
 * Harness for SIPREC sessions recorded end to end (test/integration/siprec): the mapped
 * participant ids, the worker's R7 reports of a call, the ports of an SDP answer, the wait for a
 * recording's final manifest, and a stored track read back as 48 kHz PCM.
 */
import { expect } from 'vitest';
import { decodeToPcm } from '../../src/media/ffmpeg.ts';
import { joinOggOpus } from '../../src/media/OggOpusReader.ts';
import type { RecordingStateEvent } from '../../src/recorder/Recorder.ts';
import { toId } from '../../src/siprec/mapping.ts';
import type { Stack } from './stack.ts';
import { readTrack } from './storageFixtures.ts';

/** Participant ids under the default mapping rule (the AoR's user part, sha256, prefix p-). */
export const pid = (aor: string): string => toId(/^sip:([^@]+)@/.exec(aor)![1]!, { transform: 'sha256', prefix: 'p-' })!;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every R7 report the worker makes for `callId` from now on. */
export function reportsOf(stack: Stack, callId: string): RecordingStateEvent[] {
  const out: RecordingStateEvent[] = [];
  stack.app.recorder.on('state', (id, s) => {
    if (id === callId) out.push(s);
  });
  return out;
}

/** The port of every m-line of an SDP answer, in order (0 = refused). */
export function answerPorts(sdp: string): number[] {
  return sdp
    .split(/\r\n(?=m=)/)
    .slice(1)
    .map((block) => Number(/^m=\w+ (\d+)/.exec(block)![1]));
}

/** Waits until the recording's final manifest is written (the call ended with its last stream). */
export async function expectRecordingEnded(stack: Stack, recordingId: string): Promise<void> {
  const ended = async (): Promise<boolean> => (await stack.app.store.listRecordings()).some((r) => r.recordingId === recordingId && r.state === 'ended');
  for (let i = 0; i < 200 && !(await ended()); i++) await sleep(50);
  expect(await ended()).toBe(true);
}

export interface DecodedTrack {
  /** 48 kHz mono PCM of the whole track (segments joined). */
  readonly pcm: Float32Array;
  /** Wall clock of the track's first sample (the first segment's anchor). */
  readonly startWallClockMs: number;
  readonly segments: number;
}

/** One participant's stored track, decrypted, joined and decoded (ffmpeg must say nothing). */
export async function decodeTrack(stack: Stack, recordingId: string, participantId: string): Promise<DecodedTrack> {
  const segs = await readTrack(stack.app.store, recordingId, participantId);
  expect(segs.length, `track of ${participantId}`).toBeGreaterThanOrEqual(1);
  const { pcm, stderr } = await decodeToPcm(joinOggOpus(segs.map((s) => s.ogg)));
  expect(stderr.trim()).toBe('');
  return { pcm, startWallClockMs: segs[0]!.meta.startWallClockMs, segments: segs.length };
}

/** The sample range of a track between two wall-clock instants (clamped to the track). */
export function wallRange(track: DecodedTrack, fromMs: number, toMs: number): [number, number] {
  const at = (ms: number): number => Math.min(track.pcm.length, Math.max(0, Math.round(((ms - track.startWallClockMs) / 1000) * 48000)));
  return [at(fromMs), at(toMs)];
}
