/**
 * The first recorded call, end to end, through real components: ffmpeg sends each leg as RTP into
 * mediasoup PlainTransports, the control plane gets the consent by DTMF two seconds in, the recorder
 * writes one sealed Ogg Opus track per speaker into the S3 server. Then every stored segment is
 * read back, decrypted, decoded by ffmpeg, and checked against the rules of DESIGN §2/§3.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { playFixtureCall, type FixtureCallResult } from '../../workers/fixtureCall.ts';
import { joinOggOpus } from '../../src/media/OggOpusReader.ts';
import { decodeToPcm } from '../../src/media/ffmpeg.ts';
import { mediaPrefix } from '../../src/storage/layout.ts';
import { openingEarlyBoundMs, useStack } from '../support/stack.ts';
import { fixturePath } from '../support/fixtures.ts';
import { toneAdvantageDb, snrBestAlignment } from '../support/audio.ts';
import type { TrackSegment } from '../../src/storage/types.ts';
import { readTrack } from '../support/storageFixtures.ts';

const AGENT_HZ = 523;
const CUSTOMER_HZ = 1230;
const stack = useStack({}, { agents: ['agent-a1'] });
let result: FixtureCallResult;
const tracks = new Map<string, TrackSegment[]>();

beforeAll(async () => {
  result = await playFixtureCall(stack.app, stack.policy, {
    callId: 'call-first',
    seconds: 8,
    consentAfterMs: 2000,
    legs: [
      { participantId: 'pa', subjectId: 'agent-a1', role: 'agent', teamLeadId: 'lead-l1', file: fixturePath('agent-tone.wav'), codec: 'opus' },
      { participantId: 'pc', subjectId: 'cust-c1', role: 'customer', file: fixturePath('customer-tone.wav'), codec: 'pcmu' },
    ],
  });
  await stack.app.store.drained(30_000);
  for (const pid of ['pa', 'pc']) {
    tracks.set(pid, await readTrack(stack.app.store, result.recordingId!, pid));
  }
}, 120_000);

describe('first recorded call', () => {
  it('recorded, and reported recording only after the explicit consent', () => {
    expect(result.recordingId).toMatch(/^r_[0-9a-f]{16}$/);
    expect(result.reports[0]).toMatchObject({ recording: false, reasons: ['no-consent'] });
    const firstOn = result.reports.find((r) => r.recording);
    expect(firstOn).toBeDefined();
    expect(firstOn!.at).toBeGreaterThanOrEqual(result.consentAtMs!);
    for (const leg of result.legs) expect(leg.droppedClosed).toBeGreaterThan(50); // ~2 s before consent, dropped
  });

  it('stores every segment sealed, tagged with its expiry, under pseudonymous names', async () => {
    const client = stack.app.s3;
    const bucket = `${stack.config.s3.bucketPrefix}${stack.config.s3.mediaBucket}`;
    const names: string[] = [];
    for await (const o of client.listObjectsV2(bucket, mediaPrefix(result.recordingId!), true)) names.push((o as { name: string }).name);
    expect(names.length).toBe(tracks.get('pa')!.length + tracks.get('pc')!.length);
    for (const name of names) {
      expect(name).not.toMatch(/agent-a1|cust-c1|lead-l1/);
      const body = Buffer.concat(await (await client.getObject(bucket, name)).toArray());
      expect(body.subarray(0, 4).toString()).toBe('OPTN'); // sealed, not Ogg
      expect(body.includes(Buffer.from('OggS'))).toBe(false);
      const tags = Object.fromEntries((await client.getObjectTagging(bucket, name)).map((t: { Key: string; Value: string }) => [t.Key, t.Value]));
      // The expiry tag is an instant in the future, at most 30 days away (R8).
      const expiresAt = Date.parse(tags['expires-at'] ?? '');
      expect(expiresAt).toBeGreaterThan(Date.now());
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 30 * 86_400_000);
    }
  });

  it('every segment decodes with ffmpeg without errors or warnings', async () => {
    for (const segs of tracks.values()) {
      expect(segs.length).toBeGreaterThanOrEqual(3);
      for (const s of segs) expect((await decodeToPcm(s.ogg)).stderr.trim()).toBe('');
    }
  });

  it('each track lasts exactly the consented part of the call (within 40 ms)', async () => {
    for (const leg of result.legs) {
      const { pcm, stderr } = await decodeToPcm(joinOggOpus(tracks.get(leg.participantId)!.map((s) => s.ogg)));
      expect(stderr.trim()).toBe('');
      const durationMs = (pcm.length / 48000) * 1000;
      expect(Math.abs(durationMs - leg.timelineMs)).toBeLessThan(40);
      expect(durationMs).toBeGreaterThan(5000); // ~6 s of the 8 s call followed the consent
      expect(durationMs).toBeLessThan(7000);
    }
  });

  it('each track holds its own speaker: the other tone at least 40 dB below', async () => {
    const agent = (await decodeToPcm(joinOggOpus(tracks.get('pa')!.map((s) => s.ogg)))).pcm;
    const customer = (await decodeToPcm(joinOggOpus(tracks.get('pc')!.map((s) => s.ogg)))).pcm;
    expect(toneAdvantageDb(agent, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(customer, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
  });

  it('G.711 in, Opus out: the transcoded customer track matches its source (SNR > 10 dB; measured ~13-14 dB: Opus at 16 kbit/s is perceptual, not waveform-exact)', async () => {
    const source = (await decodeToPcm(fixturePath('customer-tone.wav'))).pcm.subarray(0, 48000 * 4);
    const track = (await decodeToPcm(joinOggOpus(tracks.get('pc')!.map((s) => s.ogg)))).pcm;
    // Skip the first and last half second (encoder start-up and the end of the call).
    const { snrDb } = snrBestAlignment(source, track.subarray(24000, 24000 + 48000 * 4));
    console.log(`[e2e] G.711 -> Opus transcoded track SNR against the source: ${snrDb.toFixed(1)} dB`);
    expect(snrDb).toBeGreaterThan(10);
  });

  it('segments start after consent (within 20 ms and the longest thread stall) and the two speakers line up within 40 ms', () => {
    const a = tracks.get('pa')!;
    const c = tracks.get('pc')!;
    const earlyMs = openingEarlyBoundMs(stack);
    console.log(`first segment starts ${a[0]!.meta.startWallClockMs - result.consentAtMs!} ms after consent, the other speaker ${c[0]!.meta.startWallClockMs - result.consentAtMs!} ms; allowed before it ${Math.round(earlyMs)} ms`);
    expect(a[0]!.meta.startWallClockMs).toBeGreaterThanOrEqual(result.consentAtMs! - earlyMs);
    // One ffmpeg sends both legs on one clock (workers/fixtureCall.ts): the tracks must line up.
    expect(Math.abs(a[0]!.meta.startWallClockMs - c[0]!.meta.startWallClockMs)).toBeLessThan(40);
    for (const s of [...a, ...c]) expect(s.meta.quality).toMatchObject({ gate: 'open' });
  });
});
