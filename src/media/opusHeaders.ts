/**
 * The two Ogg Opus header packets (RFC 7845 §5): the identification header
 * "OpusHead" and the comment header "OpusTags" (Vorbis-comment layout).
 * Serialisation for the writer, parsing for the reader.
 */
import { OptinError } from '../errors/OptinError.ts';

export interface OpusHead {
  /** Always 1 for RFC 7845 streams (the major version nibble must be 0). */
  version: number;
  channels: number;
  /** Samples at 48 kHz the decoder drops at the start (the encoder's lookahead). */
  preSkip: number;
  /** Sample rate of the original input (informational only, RFC 7845 §5.1 field 5). */
  inputSampleRate: number;
  /** Q7.8 dB gain to apply on output; we always write 0. */
  outputGain: number;
  mappingFamily: number;
}

export interface OpusTags {
  vendor: string;
  /** `KEY=value` comments, keys as written (RFC 7845 §5.2: case-insensitive ASCII). */
  comments: Record<string, string>;
}

const OPUS_HEAD_MAGIC = Buffer.from('OpusHead', 'latin1');
const OPUS_TAGS_MAGIC = Buffer.from('OpusTags', 'latin1');

/** RFC 7845 §5.1: 19 bytes for channel mapping family 0 (mono/stereo, no mapping table). */
export function encodeOpusHead(h: { channels: number; preSkip: number; inputSampleRate: number }): Buffer {
  const out = Buffer.alloc(19);
  OPUS_HEAD_MAGIC.copy(out, 0);
  out[8] = 1; // version
  out[9] = h.channels;
  out.writeUInt16LE(h.preSkip, 10);
  out.writeUInt32LE(h.inputSampleRate >>> 0, 12);
  out.writeInt16LE(0, 16); // output gain
  out[18] = 0; // mapping family 0: RTP order mono/stereo
  return out;
}

/** Vorbis comment field names: printable ASCII 0x20-0x7D except '=' (RFC 7845 §5.2). */
const TAG_KEY = /^[\x20-\x3c\x3e-\x7d]+$/;

/** RFC 7845 §5.2: magic, vendor string, then a length-prefixed list of UTF-8 `KEY=value` strings. */
export function encodeOpusTags(vendor: string, comments: Record<string, string> = {}): Buffer {
  const entries = Object.entries(comments).map(([k, v]) => {
    if (!TAG_KEY.test(k)) {
      throw new OptinError('OGG_INVALID_TAG', `Ogg Opus tag name ${JSON.stringify(k)} must be printable ASCII without '='`);
    }
    return Buffer.from(`${k}=${v}`, 'utf8');
  });
  const vendorBytes = Buffer.from(vendor, 'utf8');
  const size = 8 + 4 + vendorBytes.length + 4 + entries.reduce((n, e) => n + 4 + e.length, 0);
  const out = Buffer.alloc(size);
  let at = OPUS_TAGS_MAGIC.copy(out, 0);
  at = out.writeUInt32LE(vendorBytes.length, at);
  at += vendorBytes.copy(out, at);
  at = out.writeUInt32LE(entries.length, at);
  for (const e of entries) {
    at = out.writeUInt32LE(e.length, at);
    at += e.copy(out, at);
  }
  return out;
}

function malformed(what: string): OptinError {
  return new OptinError('OGG_MALFORMED', `not a valid Ogg Opus stream: ${what}; re-create the file`);
}

export function parseOpusHead(p: Uint8Array): OpusHead {
  const b = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  if (b.length < 19 || !b.subarray(0, 8).equals(OPUS_HEAD_MAGIC)) throw malformed('missing OpusHead');
  const version = b[8]!;
  // §5.1: readers must reject major version != 0 (upper nibble).
  if (version >> 4 !== 0) throw malformed(`unsupported OpusHead version ${version}`);
  const channels = b[9]!;
  if (channels === 0) throw malformed('OpusHead channel count 0');
  return {
    version,
    channels,
    preSkip: b.readUInt16LE(10),
    inputSampleRate: b.readUInt32LE(12),
    outputGain: b.readInt16LE(16),
    mappingFamily: b[18]!,
  };
}

export function parseOpusTags(p: Uint8Array): OpusTags {
  const b = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  if (b.length < 16 || !b.subarray(0, 8).equals(OPUS_TAGS_MAGIC)) throw malformed('missing OpusTags');
  let at = 8;
  const read = (n: number): Buffer => {
    if (at + n > b.length) throw malformed('truncated OpusTags');
    const s = b.subarray(at, at + n);
    at += n;
    return s;
  };
  const u32 = (): number => read(4).readUInt32LE(0);
  const vendor = read(u32()).toString('utf8');
  const count = u32();
  const comments: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const s = read(u32()).toString('utf8');
    const eq = s.indexOf('=');
    if (eq > 0) comments[s.slice(0, eq)] = s.slice(eq + 1);
  }
  return { vendor, comments };
}
