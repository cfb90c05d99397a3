import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { oggCrcUpdate, oggPageCrc } from '../../../src/media/oggCrc.ts';
import { OggOpusWriter } from '../../../src/media/OggOpusWriter.ts';
import { joinOggOpus, readOggOpus, readOggPages } from '../../../src/media/OggOpusReader.ts';
import { opusPacketSamples } from '../../../src/media/opusToc.ts';
import { Segmenter } from '../../../src/media/Segmenter.ts';
import { decodedSamples, ffmpegDecodeErrors, ffprobeDuration } from '../../support/ogg.ts';
import { decodeToFloat32, toneAdvantageDb } from '../../support/audio.ts';

const GENERATED = new URL('../../../media-fixtures/generated/', import.meta.url);

/** BOS page (OpusHead) of a file muxed by ffmpeg's Ogg muxer: an independent CRC vector. */
const FFMPEG_BOS_PAGE = Buffer.from(
  '4f676753000200000000000000008fdcdf46000000007e38fa2f01134f707573486561640101380180bb0000000000',
  'hex',
);

let agentPackets: Uint8Array[] = [];
let speechPackets: Uint8Array[] = [];

beforeAll(() => {
  execFileSync('bash', [new URL('../../../media-fixtures/generate.sh', import.meta.url).pathname], { stdio: 'inherit' });
  agentPackets = readOggOpus(readFileSync(new URL('agent-tone.opus', GENERATED))).packets.map((p) => p.data);
  speechPackets = readOggOpus(readFileSync(new URL('agent-speech.opus', GENERATED))).packets.map((p) => p.data);
}, 120_000);

function writeFile(packets: readonly Uint8Array[], opts: Partial<ConstructorParameters<typeof OggOpusWriter>[0]> = {}): Buffer {
  const w = new OggOpusWriter({ serial: 0x1234, preSkip: 0, inputSampleRate: 48_000, ...opts });
  const parts = [w.header()];
  for (const p of packets) w.addPacket(p, Math.max(opusPacketSamples(p), 0));
  parts.push(w.finish());
  return Buffer.concat(parts);
}

describe('Ogg CRC (RFC 3533 §6: poly 0x04C11DB7, init 0, no reflection, no final xor)', () => {
  it('matches the check value of this CRC-32 variant', () => {
    // CRC-32/POSIX ("cksum") uses the same register with a final xor: its check 0x765E7680, inverted.
    expect(oggCrcUpdate(0, Buffer.from('123456789', 'latin1'))).toBe(~0x765e7680 >>> 0);
  });

  it('matches the checksum ffmpeg wrote on a real page', () => {
    expect(oggPageCrc(FFMPEG_BOS_PAGE)).toBe(FFMPEG_BOS_PAGE.readUInt32LE(22));
  });

  it('verifies every page of ffmpeg-written files, and rejects a flipped bit', () => {
    const file = readFileSync(new URL('customer-tone.opus', GENERATED));
    expect(readOggPages(file).length).toBeGreaterThan(2);
    const bad = Buffer.from(file);
    bad[200] = bad[200]! ^ 0x01;
    expect(() => readOggPages(bad)).toThrow(/CRC mismatch/);
  });
});

describe('OggOpusWriter', () => {
  it('writes OpusHead alone on a BOS page, OpusTags on its own page, granule 0 (RFC 7845 §3, §5)', () => {
    const w = new OggOpusWriter({ serial: 42, preSkip: 312, inputSampleRate: 8000, tags: { ENCODER: 'optin', recording: 'r_1' } });
    const pages = readOggPages(w.header());
    expect(pages).toHaveLength(2);
    expect(pages.map((p) => [p.headerType, p.granule, p.sequence, p.serial, p.lacing.length])).toEqual([
      [0x02, 0, 0, 42, 1],
      [0x00, 0, 1, 42, 1],
    ]);
    const s = readOggOpus(Buffer.concat([w.header(), w.finish()]));
    expect(s.head).toMatchObject({ version: 1, channels: 1, preSkip: 312, inputSampleRate: 8000, outputGain: 0, mappingFamily: 0 });
    expect(s.tags).toEqual({ vendor: 'optin', comments: { ENCODER: 'optin', recording: 'r_1' } });
    expect(s.packets).toHaveLength(0);
    expect(s.complete).toBe(true);
  });

  it('laces packet sizes at the 255 boundaries exactly (RFC 3533 §5)', () => {
    const sizes = [0, 1, 254, 255, 256, 509, 510, 511, 765, 1275, 65_024, 65_025, 65_026, 70_000, 200_000];
    const packets = sizes.map((n, i) => Buffer.alloc(n, i + 1));
    const file = writeFile(packets);
    const back = readOggOpus(file).packets.map((p) => Buffer.from(p.data));
    expect(back.map((b) => b.length)).toEqual(sizes);
    back.forEach((b, i) => expect(b.equals(packets[i]!)).toBe(true));

    // A 255-byte packet needs [255, 0]; 510 needs [255, 255, 0].
    const lacing = (n: number): number[] => [...readOggPages(writeFile([Buffer.alloc(n)]))[2]!.lacing];
    expect(lacing(255)).toEqual([255, 0]);
    expect(lacing(510)).toEqual([255, 255, 0]);
    expect(lacing(0)).toEqual([0]);
    expect(lacing(254)).toEqual([254]);
  });

  it('splits packets longer than a page with continuation flags and granule -1 (RFC 3533 §6)', () => {
    const w = new OggOpusWriter({ serial: 1, preSkip: 0, inputSampleRate: 48_000 });
    w.addPacket(Buffer.alloc(10, 1), 960);
    w.addPacket(Buffer.alloc(200_000, 2), 960);
    w.addPacket(Buffer.alloc(10, 3), 960);
    const pages = readOggPages(Buffer.concat([w.header(), w.finish()])).slice(2);
    // 200000 bytes = 784 x 255 + 80: 785 lacing values. Page A: the small packet (closed
    // before the big one, which needs a fresh page); pages B-D: 255 values each, no packet
    // ends there -> granule -1; page E: the big packet's last 20 values + the last packet.
    expect(pages.map((p) => [p.headerType, p.granule, p.lacing.length])).toEqual([
      [0x00, 960, 1],
      [0x00, -1, 255],
      [0x01, -1, 255],
      [0x01, -1, 255],
      [0x01 | 0x04, 2880, 20 + 1],
    ]);
  });

  it('closes pages after ~1 s by default, granules count 48 kHz samples (RFC 7845 §4)', () => {
    const file = writeFile(agentPackets.slice(0, 500));
    const pages = readOggPages(file).slice(2);
    expect(pages).toHaveLength(10);
    expect(pages.map((p) => p.granule)).toEqual(Array.from({ length: 10 }, (_, i) => (i + 1) * 48_000));
    expect(pages.map((p) => p.sequence)).toEqual(Array.from({ length: 10 }, (_, i) => i + 2));
    expect(pages.map((p) => p.headerType & 0x04)).toEqual([...Array(9).fill(0), 0x04]);
  });

  it('closes a page before its 255 lacing values overflow', () => {
    const file = writeFile(Array.from({ length: 300 }, () => Buffer.alloc(3, 9)), { maxPageSamples: 1e9 });
    const pages = readOggPages(file).slice(2);
    expect(pages.map((p) => p.lacing.length)).toEqual([255, 45]);
  });

  it('finish() without audio gives an empty EOS page; finish() is idempotent', () => {
    const w = new OggOpusWriter({ serial: 5, preSkip: 0, inputSampleRate: 48_000 });
    const tail = w.finish();
    expect(readOggPages(tail)[0]).toMatchObject({ headerType: 0x04, granule: 0, sequence: 2 });
    expect(w.finish().length).toBe(0);
    expect(() => w.addPacket(Buffer.alloc(3), 960)).toThrow(/after finish/);
  });

  it('takePages() streams completed pages; the concatenation is the same file', () => {
    const a = new OggOpusWriter({ serial: 9, preSkip: 0, inputSampleRate: 48_000 });
    const parts = [a.header()];
    for (const p of agentPackets.slice(0, 300)) {
      a.addPacket(p, 960);
      parts.push(a.takePages());
    }
    parts.push(a.finish());
    expect(Buffer.concat(parts).equals(writeFile(agentPackets.slice(0, 300), { serial: 9 }))).toBe(true);
  });

  it('ffmpeg decodes the output with nothing on stderr, to the exact length', () => {
    const file = writeFile(agentPackets.slice(0, 500));
    expect(ffmpegDecodeErrors(file)).toBe('');
    expect(decodedSamples(file)).toBe(500 * 960);
    expect(ffprobeDuration(file)).toBeCloseTo(10, 3);
    // With a pre-skip, players drop it from the start (RFC 7845 §4.2).
    const skipped = writeFile(agentPackets.slice(0, 500), { preSkip: 312 });
    expect(ffmpegDecodeErrors(skipped)).toBe('');
    expect(decodedSamples(skipped)).toBe(500 * 960 - 312);
  });

  it('container overhead: under 2% for 20 ms speech packets at 24-32 kbit/s (printed)', () => {
    const rows: string[] = [];
    const measure = (label: string, packetBytes: number | readonly Uint8Array[], seconds: number, segmentSeconds: number, pageSamples?: number): number => {
      const packets = typeof packetBytes === 'number' ? Array.from({ length: seconds * 50 }, () => Buffer.alloc(packetBytes, 0x80)) : packetBytes.slice(0, seconds * 50);
      const seg = new Segmenter({ serial: 1, segmentSamples: segmentSeconds * 48_000, maxPageSamples: pageSamples });
      let ogg = 0;
      let payload = 0;
      for (const p of packets) {
        for (const s of seg.push({ kind: 'packet', payload: p, samples: 960 })) [ogg, payload] = [ogg + s.ogg.length, payload + s.opusPayloadBytes];
      }
      const last = seg.close();
      if (last) [ogg, payload] = [ogg + last.ogg.length, payload + last.opusPayloadBytes];
      const pct = ((ogg - payload) / payload) * 100;
      const kbps = (payload * 8) / packets.length / 20;
      rows.push(`${label.padEnd(44)} ${kbps.toFixed(1).padStart(5)} kbit/s  pages ${pageSamples ? `${pageSamples / 48_000} s` : 'max '}  overhead ${pct.toFixed(2)}%`);
      return pct;
    };
    const cbr24 = measure('CBR 60 B/20 ms, 10 s segments', 60, 60, 10);
    const cbr32 = measure('CBR 80 B/20 ms, 10 s segments', 80, 60, 10);
    measure('CBR 60 B/20 ms, 10 s segments', 60, 60, 10, 48_000);
    const long32 = measure('CBR 80 B/20 ms, one 60 s file', 80, 60, 60, 48_000);
    measure('CBR 40 B/20 ms (16 kbit/s G.711 transcode)', 40, 60, 10);
    const tone = measure('ffmpeg libopus tone, 10 s segments', agentPackets, 30, 10);
    measure('ffmpeg libopus speech (24k VBR), 10 s segments', speechPackets, 20, 10);
    console.log(`\nOgg overhead over raw Opus payload bytes:\n  ${rows.join('\n  ')}`);
    // Segmenter defaults (pages limited by lacing only).
    expect(cbr24).toBeLessThan(2.2);
    expect(cbr32).toBeLessThan(2);
    expect(long32).toBeLessThan(2); // 1 s pages on a long stream (extracts)
    expect(tone).toBeLessThan(2);
  });
});

describe('OggOpusReader', () => {
  it('reads ffmpeg output: header, packets, end-trimmed final granule', () => {
    const s = readOggOpus(readFileSync(new URL('agent-tone.opus', GENERATED)));
    expect(s.head.preSkip).toBe(312);
    expect(s.packets.every((p) => p.samples === 960)).toBe(true);
    expect(s.lastGranule).toBe(30 * 48_000 + 312);
    expect(s.complete).toBe(true);
  });

  it('rejects truncation, a second stream, and garbage', () => {
    const file = writeFile(agentPackets.slice(0, 60));
    expect(() => readOggOpus(file.subarray(0, file.length - 10))).toThrow(/truncated/);
    expect(() => readOggOpus(Buffer.concat([file, writeFile(agentPackets.slice(0, 2), { serial: 99 })]))).toThrow(/more than one logical stream/);
    expect(() => readOggOpus(Buffer.from('not an ogg file at all, not at all'))).toThrow(/capture pattern/);
    expect(() => readOggOpus(Buffer.alloc(0))).toThrow(/empty/);
  });
});

describe('joinOggOpus', () => {
  it('joins segment files into one continuous valid stream with the first pre-skip', () => {
    const seg = new Segmenter({ serial: 77, preSkip: 312, inputSampleRate: 8000, segmentSamples: 5 * 48_000 });
    const files: Buffer[] = [];
    for (const p of agentPackets.slice(0, 1200)) for (const s of seg.push({ kind: 'packet', payload: p, samples: 960 })) files.push(s.ogg);
    files.push(seg.close()!.ogg);
    expect(files).toHaveLength(5);

    const joined = joinOggOpus(files);
    const s = readOggOpus(joined);
    expect(s.serial).toBe(77);
    expect(s.head.preSkip).toBe(312);
    expect(s.head.inputSampleRate).toBe(8000);
    expect(s.packets).toHaveLength(1200);
    expect(s.lastGranule).toBe(1200 * 960);
    // Granules continue across the joins: every page-ending packet's granule is its running total.
    let total = 0;
    for (const p of s.packets) {
      total += p.samples;
      if (p.granule !== -1) expect(p.granule).toBe(total);
    }
    expect(ffmpegDecodeErrors(joined)).toBe('');
    expect(decodedSamples(joined)).toBe(1200 * 960 - 312);
    const pcm = decodeToFloat32(joined);
    expect(toneAdvantageDb(pcm, 523, 1230)).toBeGreaterThan(40);
  });

  it('joins a 30-minute track in well under a second', () => {
    // 180 segments of 10 s = 30 min of 20 ms packets (~80 bytes each).
    const seg = new Segmenter({ serial: 1 });
    const files: Buffer[] = [];
    for (let i = 0; i < 90_000; i++) {
      for (const s of seg.push({ kind: 'packet', payload: agentPackets[i % agentPackets.length]!, samples: 960 })) files.push(s.ogg);
    }
    const last = seg.close();
    if (last) files.push(last.ogg);
    expect(files).toHaveLength(180);
    joinOggOpus(files.slice(0, 10)); // warm-up (JIT)
    // CPU time, not wall time: this machine is shared and other test files run alongside.
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const joined = joinOggOpus(files);
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    const wallMs = performance.now() - t0;
    console.log(`joinOggOpus: 30 min (${files.length} segments, ${(joined.length / 1e6).toFixed(1)} MB) in ${cpuMs.toFixed(0)} ms CPU (${wallMs.toFixed(0)} ms wall)`);
    expect(readOggOpus(joined).lastGranule).toBe(90_000 * 960);
    expect(cpuMs).toBeLessThan(1000);
  });

  it('refuses files of different channel counts and corrupt input', () => {
    const mono = writeFile(agentPackets.slice(0, 5));
    const stereo = writeFile(agentPackets.slice(0, 5), { channels: 2 });
    expect(() => joinOggOpus([mono, stereo])).toThrow(/channels/);
    expect(() => joinOggOpus([])).toThrow(/at least one/);
    const bad = Buffer.from(mono);
    bad[bad.length - 3] = bad[bad.length - 3]! ^ 0xff;
    expect(() => joinOggOpus([mono, bad])).toThrow(/segment 1/);
  });
});
