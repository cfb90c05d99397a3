/**
 * Extracts of a paused recording (issue 19 item 8): the audio joins the recording runs back to
 * back, and the extract manifest says where each run begins in the file, when it was recorded and
 * how long the pause before it lasted. Real Opus segments (the recorder's Segmenter) through the
 * real RecordingStore against the run's S3 server, read back by createExtract.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createExtract } from '../../../src/access/extract.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { readOggOpus } from '../../../src/media/OggOpusReader.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { useBuckets } from '../../support/buckets.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { synthSegments } from '../../support/synthRecording.ts';

const s3 = useBuckets();
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('extract of a recording with a pause', () => {
  it('carries two runs: the second at the first one\'s length in the audio, its wall-clock start, and the pause before it', async () => {
    const spoolDir = await mkdtemp(join(tmpdir(), 'optin-extract-runs-'));
    dirs.push(spoolDir);
    const store = await RecordingStore.open({
      client: s3.client,
      buckets: s3.layout(),
      keyring: Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } }),
      spoolDir,
      spoolMaxBytes: 64 << 20,
      logger: createLogger('silent'),
      sweep: false,
    });
    const recordingId = 'r_e0a5e0a5e0a5e0a5';
    const t0 = Date.now() - 60_000;
    await store.beginRecording({
      recordingId,
      callId: 'call-pause',
      startedAt: t0,
      participants: [
        { participantId: 'leg-a', role: 'agent', subjectId: 'agent-pause' },
        { participantId: 'leg-c', role: 'customer', subjectId: 'cust-pause' },
      ],
      consentEvidence: [{ method: 'dtmf', at: t0 - 500, infoVersion: 'v1' }],
    });
    // Run 0: 3 s from t0; paused 5 s; run 1: 2 s. Segments of 1 s; numbering continues across runs
    // (the recorder's TrackRecorder does the same: each run opens its own Segmenter).
    const source = readFileSync(fixturePath('customer-tone.opus'));
    const runs = [
      { run: 0, startMs: t0, seconds: 3 },
      { run: 1, startMs: t0 + 3000 + 5000, seconds: 2 },
    ];
    let segment = 0;
    const stored: Array<{ run: number; durationMs: number }> = [];
    for (const r of runs) {
      const segs = synthSegments(source, { seconds: r.seconds, segmentSeconds: 1 });
      const leadIn = segs[0]!.preSkip; // the run's encoder pre-skip: not audio, not in its duration
      for (const seg of segs) {
        const durationMs = (seg.samples - seg.preSkip) / 48;
        await store.putSegment(
          {
            recordingId,
            participantId: 'leg-c',
            segment: segment++,
            run: r.run,
            startWallClockMs: r.startMs + Math.max(0, seg.startSample - leadIn) / 48,
            durationMs,
            opusPayloadBytes: seg.opusPayloadBytes,
            quality: { gate: 'open', synthetic: true },
          },
          seg.ogg,
        );
        stored.push({ run: r.run, durationMs });
      }
    }
    await store.endRecording(recordingId);
    await store.drained(30_000);

    const pkg = await createExtract({ store }, { subjectId: 'cust-pause', caseRef: 'case-pause-1', actor: 'xop-1' });
    await store.close();

    expect(pkg.manifest.recordings).toHaveLength(1);
    const rec = pkg.manifest.recordings[0]!;
    const run0Ms = stored.filter((s) => s.run === 0).reduce((a, s) => a + s.durationMs, 0);
    const run1Ms = stored.filter((s) => s.run === 1).reduce((a, s) => a + s.durationMs, 0);
    console.log(`extract of a paused recording: runs ${JSON.stringify(rec.runs.map(({ segments: _s, ...r }) => r))}; audio ${rec.audio.durationMs} ms`);
    expect(rec.runs).toHaveLength(2);
    expect(rec.runs[0]).toMatchObject({ run: 0, audioOffsetMs: 0, durationMs: Math.round(run0Ms), start: new Date(t0).toISOString() });
    expect(rec.runs[0]!.pauseBeforeMs).toBeUndefined();
    expect(rec.runs[1]).toMatchObject({ run: 1, audioOffsetMs: Math.round(run0Ms), durationMs: Math.round(run1Ms), start: new Date(t0 + 8000).toISOString() });
    // The pause: from the end of run 0 (t0 + its duration) to the start of run 1.
    expect(rec.runs[1]!.pauseBeforeMs).toBe(Math.round(t0 + 8000 - (t0 + run0Ms)));
    expect(rec.runs[1]!.pauseBeforeMs).toBeGreaterThanOrEqual(4900);
    expect(rec.runs.flatMap((r) => r.segments)).toEqual(rec.segments.map((s) => s.segment));
    // The audio file is the two runs back to back: no 5 s of silence. Its length matches the runs'
    // within the second run's encoder pre-skip (a few ms), counted by the file itself.
    const audio = pkg.files.find((f) => f.name === rec.audio.name)!;
    const head = readOggOpus(audio.bytes);
    const fileMs = ((head.lastGranule - head.head.preSkip) / 48_000) * 1000;
    expect(Math.abs(fileMs - (rec.runs[1]!.audioOffsetMs + rec.runs[1]!.durationMs))).toBeLessThanOrEqual(10);
    expect(pkg.manifest.notes.some((n) => n.includes('pause is not in the audio'))).toBe(true);
  }, 60_000);
});
