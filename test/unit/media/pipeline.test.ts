/**
 * The whole pure media path on captured RTP: parseRtp -> JitterBuffer ->
 * Segmenter -> segment files -> joinOggOpus, checked with ffmpeg (clean
 * decode, exact length) and by spectrum (the right speaker, nothing else).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { JitterBuffer, codecTiming } from '../../../src/media/JitterBuffer.ts';
import { Segmenter, type Segment } from '../../../src/media/Segmenter.ts';
import { joinOggOpus } from '../../../src/media/OggOpusReader.ts';
import { parseRtp } from '../../../src/rtp/RtpPacket.ts';
import { readRtpCapture } from '../../../src/rtp/RtpCapture.ts';
import { decodeToFloat32, rmsDb, toneAdvantageDb } from '../../support/audio.ts';
import { decodedSamples, ffmpegDecodeErrors } from '../../support/ogg.ts';

const RTP = new URL('../../../media-fixtures/generated/rtp/', import.meta.url);

beforeAll(() => {
  execFileSync('bash', [new URL('../../../media-fixtures/generate.sh', import.meta.url).pathname], { stdio: 'inherit' });
}, 120_000);

interface Meta { mediaSamples: number; toneHz: number }

/** Records one capture the way the recorder does: a shared 20 ms tick pulls, segments come out. */
function record(name: string): { segments: Segment[]; total: number; meta: Meta; jb: JitterBuffer } {
  const cap = readRtpCapture<Meta>(readFileSync(new URL(name, RTP)));
  const jb = new JitterBuffer(codecTiming('opus'));
  const seg = new Segmenter({ serial: 0x600d });
  const segments: Segment[] = [];
  let total = 0;
  const eat = (items: ReturnType<JitterBuffer['pull']>): void => {
    for (const it of items) {
      total += it.samples;
      segments.push(...seg.push(it));
    }
  };
  let tick = 0;
  for (const r of cap.records) {
    for (; tick <= r.arrivalMs; tick += 20) eat(jb.pull(tick));
    const p = parseRtp(r.packet);
    if (p.ok) jb.push({ seq: p.packet.sequenceNumber, ts: p.packet.timestamp, ssrc: p.packet.ssrc, marker: p.packet.marker, payload: p.packet.payload }, r.arrivalMs);
  }
  eat(jb.pull(tick + 1000, { flush: true }));
  const last = seg.close();
  if (last) segments.push(last);
  return { segments, total, meta: cap.meta, jb };
}

describe('RTP capture -> jitter buffer -> segments -> joined extract', () => {
  it.each(['agent-lossy.rtpcap', 'customer-lossy.rtpcap', 'agent-dtx.rtpcap', 'customer-ssrc.rtpcap', 'agent-tsjump.rtpcap', 'customer-seqwrap.rtpcap'])(
    '%s: every segment and the join decode cleanly, at the sender\'s length, with only that speaker\'s tone',
    (name) => {
      const { segments, total, meta } = record(name);
      expect(segments.length).toBeGreaterThanOrEqual(3);
      for (const s of segments) expect(ffmpegDecodeErrors(s.ogg)).toBe('');
      const joined = joinOggOpus(segments.map((s) => s.ogg));
      expect(ffmpegDecodeErrors(joined)).toBe('');
      const decoded = decodedSamples(joined);
      // Gaps are filled in 2.5 ms steps: at most one step short overall.
      expect(total - decoded).toBeGreaterThanOrEqual(0);
      expect(total - decoded).toBeLessThan(120);
      expect(Math.abs(decoded - meta.mediaSamples)).toBeLessThan(10 * 48); // 10 ms over 30 s
      const pcm = decodeToFloat32(joined);
      const other = meta.toneHz === 523 ? 1230 : 523;
      // DTX cuts the tone on and off abruptly; those edges splatter over the whole spectrum,
      // so there the check looks at the first stretch of tone only.
      const end = name.includes('dtx') ? 4.5 * 48_000 : pcm.length;
      expect(toneAdvantageDb(pcm, meta.toneHz, other, 48_000, 0, end)).toBeGreaterThan(40);
    },
  );

  it('DTX pauses come out as digital silence of the paused length', () => {
    const { segments } = record('agent-dtx.rtpcap');
    const pcm = decodeToFloat32(joinOggOpus(segments.map((s) => s.ogg)));
    // The capture pauses for 1.5 s after every 5 s of tone: t = 5.0..6.5 s, 11.5..13.0 s, ...
    for (const start of [5, 11.5, 18, 24.5, 31]) {
      const from = Math.round((start + 0.1) * 48_000);
      const to = Math.round((start + 1.4) * 48_000);
      expect(rmsDb(pcm, from, to), `pause at ${start} s`).toBeLessThan(-90);
      expect(rmsDb(pcm, from - 48_000, from - 9_600), `tone before ${start} s`).toBeGreaterThan(-30);
    }
  });

  it('lost packets become short silences in place, not a shorter track', () => {
    const { segments, jb } = record('agent-lossy.rtpcap');
    const pcm = decodeToFloat32(joinOggOpus(segments.map((s) => s.ogg)));
    let silent = 0;
    for (let at = 0; at + 960 <= pcm.length; at += 960) if (rmsDb(pcm, at + 240, at + 720) < -60) silent++;
    const lost = jb.stats.lost;
    console.log(`lossy capture: ${lost} packets lost, ${silent} silent 20 ms frames in the decoded track`);
    expect(silent).toBeGreaterThan(lost * 0.6);
    expect(silent).toBeLessThanOrEqual(lost);
  });
});
