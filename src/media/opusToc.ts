/**
 * Opus packet durations from the TOC byte, and synthetic silence packets
 * (RFC 6716 §3.1 - §3.4).
 *
 * Durations are in 48 kHz samples: Opus always signals time at 48 kHz in
 * RTP (RFC 7587 §4.1) and in Ogg (RFC 7845 §4), whatever the coded bandwidth.
 */
import { OptinError } from '../errors/OptinError.ts';

/** Samples at 48 kHz per frame for each of the 32 TOC configurations (RFC 6716 §3.1, Table 2). */
const FRAME_SAMPLES: Int32Array = (() => {
  const t = new Int32Array(32);
  for (let config = 0; config < 32; config++) {
    if (config < 12) t[config] = [480, 960, 1920, 2880][config & 3]!; // SILK-only: 10/20/40/60 ms
    else if (config < 16) t[config] = [480, 960][config & 1]!; // Hybrid: 10/20 ms
    else t[config] = [120, 240, 480, 960][config & 3]!; // CELT-only: 2.5/5/10/20 ms
  }
  return t;
})();

/** 120 ms: the longest legal packet (RFC 6716 §3.2.5, R5). */
export const OPUS_MAX_PACKET_SAMPLES = 5760;
/** 2.5 ms: the shortest frame, and the granularity of every Opus duration. */
export const OPUS_MIN_FRAME_SAMPLES = 120;
/** Longest frame in bytes (RFC 6716 §3.2.1, R2). */
const MAX_FRAME_BYTES = 1275;

/** Samples at 48 kHz of one frame with this TOC byte. */
export function opusFrameSamples(toc: number): number {
  return FRAME_SAMPLES[(toc >> 3) & 0x1f]!;
}

/**
 * Duration of an Opus packet in 48 kHz samples, or -1 when the packet breaks
 * one of the framing rules R1-R7 of RFC 6716 §3.4 (a decoder would reject
 * it, and writing it into an Ogg file would make the file fail to decode).
 * Validates the framing only, not the range-coded frame contents.
 */
export function opusPacketSamples(packet: Uint8Array): number {
  const n = packet.length;
  if (n < 1) return -1; // R1: at least one byte (the TOC)
  const toc = packet[0]!;
  const frame = FRAME_SAMPLES[toc >> 3]!;
  switch (toc & 3) {
    case 0: // §3.2.2: one frame
      return n - 1 <= MAX_FRAME_BYTES ? frame : -1; // R2
    case 1: // §3.2.3: two frames of equal size
      return (n - 1) % 2 === 0 && (n - 1) / 2 <= MAX_FRAME_BYTES ? 2 * frame : -1; // R3
    case 2: {
      // §3.2.4: two frames, the first one's length coded in 1-2 bytes (§3.2.1)
      const len = readFrameLength(packet, 1);
      if (len < 0) return -1;
      const headerBytes = packet[1]! >= 252 ? 2 : 1;
      const second = n - 1 - headerBytes - len;
      return second >= 0 && len <= MAX_FRAME_BYTES && second <= MAX_FRAME_BYTES ? 2 * frame : -1; // R4
    }
    default:
      return code3Samples(packet, frame);
  }
}

/** §3.2.1 frame length coding: 0-251 in one byte, 252-1275 as b0 + 4 * b1. -1 if truncated. */
function readFrameLength(packet: Uint8Array, at: number): number {
  if (at >= packet.length) return -1;
  const b0 = packet[at]!;
  if (b0 < 252) return b0;
  if (at + 1 >= packet.length) return -1;
  return b0 + 4 * packet[at + 1]!;
}

/** §3.2.5: code 3, an arbitrary number of frames, CBR or VBR, with optional padding. */
function code3Samples(packet: Uint8Array, frame: number): number {
  const n = packet.length;
  if (n < 2) return -1; // R6/R7 need the frame count byte
  const fc = packet[1]!;
  const vbr = (fc & 0x80) !== 0;
  const hasPadding = (fc & 0x40) !== 0;
  const count = fc & 0x3f;
  if (count === 0 || count * frame > OPUS_MAX_PACKET_SAMPLES) return -1; // R5
  let pos = 2;
  let padding = 0;
  if (hasPadding) {
    // Padding length: each 255 means "254 bytes and another length byte follows".
    for (;;) {
      if (pos >= n) return -1;
      const b = packet[pos++]!;
      padding += b === 255 ? 254 : b;
      if (b !== 255) break;
    }
  }
  let remaining = n - pos - padding;
  if (remaining < 0) return -1;
  if (!vbr) {
    // R6: CBR frames all have the same size.
    if (remaining % count !== 0 || remaining / count > MAX_FRAME_BYTES) return -1;
    return count * frame;
  }
  // R7: VBR, lengths of the first M-1 frames, the last one takes the rest.
  for (let i = 0; i < count - 1; i++) {
    const len = readFrameLength(packet, pos);
    if (len < 0) return -1;
    const headerBytes = packet[pos]! >= 252 ? 2 : 1;
    pos += headerBytes;
    remaining -= headerBytes + len;
    if (len > MAX_FRAME_BYTES || remaining < 0) return -1;
  }
  return remaining <= MAX_FRAME_BYTES ? count * frame : -1;
}

/**
 * TOC bytes for CELT-only fullband mono single-frame packets (RFC 6716 §3.1:
 * config 28-31 = CELT FB 2.5/5/10/20 ms, s = 0 mono, c = 0 one frame).
 */
const CELT_FB_TOC = { 120: 0xe0, 240: 0xe8, 480: 0xf0, 960: 0xf8 } as const;

/**
 * The 2-byte CELT frame 0xFF 0xFE decodes as silence: the range decoder's
 * first symbol is the CELT silence flag (RFC 6716 §4.3, Table 56) and these
 * bytes set it, after which the decoder reads nothing more. It is the same
 * frame WebRTC and many SFUs inject as "comfort" silence.
 */
const SILENT_CELT_FRAME = [0xff, 0xfe] as const;

/** A valid 20 ms mono silence packet (TOC 0xF8 = CELT FB 20 ms, one frame). */
export const OPUS_SILENCE_20MS: Buffer = Buffer.from([CELT_FB_TOC[960], ...SILENT_CELT_FRAME]);

/**
 * One packet of `frames` x 20 ms silent CELT frames (code 3 CBR, §3.2.5):
 * TOC, frame count byte, then `frames` copies of the 2-byte silent frame.
 * 3 frames = 60 ms in 8 bytes, versus 3 x 3 bytes plus 2 extra Ogg lacing
 * values for single frames, which keeps long DTX or loss gaps cheap. 60 ms,
 * not the legal maximum of 120 ms: some decoders (opusscript's wrapper among
 * them) size their output for 60 ms and truncate longer packets.
 */
function silenceMulti(frames: number): Buffer {
  const out = Buffer.allocUnsafe(2 + 2 * frames);
  out[0] = CELT_FB_TOC[960] | 3;
  out[1] = frames; // CBR, no padding
  for (let i = 0; i < frames; i++) {
    out[2 + 2 * i] = SILENT_CELT_FRAME[0];
    out[3 + 2 * i] = SILENT_CELT_FRAME[1];
  }
  return out;
}

// Silence packets are immutable and shared: build each shape once.
const SILENCE_MAX_FRAMES = 3;
const SILENCE_20MS_MULTI: Buffer[] = [OPUS_SILENCE_20MS];
for (let f = 2; f <= SILENCE_MAX_FRAMES; f++) SILENCE_20MS_MULTI[f - 1] = silenceMulti(f);
const SILENCE_SHORT = {
  120: Buffer.from([CELT_FB_TOC[120], ...SILENT_CELT_FRAME]),
  240: Buffer.from([CELT_FB_TOC[240], ...SILENT_CELT_FRAME]),
  480: Buffer.from([CELT_FB_TOC[480], ...SILENT_CELT_FRAME]),
} as const;

/**
 * Appends to `out` silence packets covering exactly `samples` (a multiple of
 * 120 = 2.5 ms; anything below that granularity is rounded down and returned
 * as the uncovered remainder). Long stretches use 60 ms packets; the tail
 * uses one 20 or 40 ms packet then at most one each of 10, 5 and 2.5 ms.
 * The packets are shared immutable buffers: never write into them.
 *
 * @returns the remainder (0..119 samples) not covered.
 */
export function pushOpusSilence(out: Buffer[], samples: number): number {
  let left = Math.max(0, Math.floor(samples));
  while (left >= 960) {
    const frames = Math.min(SILENCE_MAX_FRAMES, Math.floor(left / 960));
    out.push(SILENCE_20MS_MULTI[frames - 1]!);
    left -= frames * 960;
  }
  for (const size of [480, 240, 120] as const) {
    if (left >= size) {
      out.push(SILENCE_SHORT[size]);
      left -= size;
    }
  }
  return left;
}

/** Silence packets for `samples` (must be a multiple of 120 = 2.5 ms). */
export function opusSilence(samples: number): Buffer[] {
  if (!Number.isInteger(samples) || samples < 0 || samples % OPUS_MIN_FRAME_SAMPLES !== 0) {
    throw new OptinError('OPUS_SILENCE_INVALID', `Opus silence needs a non-negative multiple of 120 samples (2.5 ms), got ${samples}`);
  }
  const out: Buffer[] = [];
  pushOpusSilence(out, samples);
  return out;
}
