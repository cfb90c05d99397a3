/**
 * RTP fixed header parsing and building (RFC 3550 §5.1, §5.3.1).
 *
 * `parseRtp` is on the hot path (one call per received packet, thousands of
 * streams): it never throws, never copies the payload (a `subarray` view of
 * the input) and allocates one small result object. Anything that does not
 * follow the wire format is reported as `{ ok: false, reason: 'malformed' }`
 * with a `detail` for counters and debugging, never as an exception.
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
 *    |                           timestamp                           |
 *    |           synchronization source (SSRC) identifier            |
 *    |            contributing source (CSRC) identifiers  (CC x 32)  |
 *    |  (X) defined by profile       |  (X) length in 32-bit words   |
 *    |  (X) header extension ...                                     |
 *    |  payload ...                  | (P) padding ... | pad count   |
 */

import { OptinError } from '../errors/OptinError.ts';

export interface RtpPacket {
  marker: boolean;
  payloadType: number;
  sequenceNumber: number;
  /** 32-bit unsigned media timestamp, in the payload format's clock (48 kHz for Opus, 8 kHz for G.711). */
  timestamp: number;
  /** 32-bit unsigned synchronisation source. */
  ssrc: number;
  /** Contributing sources; a shared empty array when CC = 0 (the usual case). */
  csrcs: readonly number[];
  /** Header extension profile id (RFC 3550 §5.3.1; 0xBEDE = RFC 8285 one-byte), undefined when X = 0. */
  extensionProfile: number | undefined;
  /** Header extension body (without its 4-byte preamble), a view into the input; undefined when X = 0. */
  extension: Uint8Array | undefined;
  /** Number of padding bytes stripped from the end (0 when P = 0). */
  paddingLength: number;
  /** Payload view into the input buffer (no copy): padding already removed. */
  payload: Uint8Array;
}

export type MalformedDetail =
  | 'too-short'
  | 'version'
  | 'csrc-truncated'
  | 'extension-truncated'
  | 'padding-invalid';

export type ParseRtpResult =
  | { ok: true; packet: RtpPacket }
  | { ok: false; reason: 'malformed'; detail: MalformedDetail };

const RTP_VERSION = 2;
const FIXED_HEADER = 12;
const NO_CSRCS: readonly number[] = Object.freeze([]);

function malformed(detail: MalformedDetail): ParseRtpResult {
  return { ok: false, reason: 'malformed', detail };
}

/**
 * Parses one RTP packet. The returned `payload` (and `extension`) share
 * memory with `buf`: copy them if `buf` is reused by the transport.
 */
export function parseRtp(buf: Uint8Array): ParseRtpResult {
  const len = buf.length;
  if (len < FIXED_HEADER) return malformed('too-short');
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  // §5.1: V is the top two bits and must be 2 (0/1 were pre-RFC 1889, 3 is unused).
  if (b0 >> 6 !== RTP_VERSION) return malformed('version');
  const hasPadding = (b0 & 0x20) !== 0;
  const hasExtension = (b0 & 0x10) !== 0;
  const cc = b0 & 0x0f;

  let offset = FIXED_HEADER + cc * 4;
  if (offset > len) return malformed('csrc-truncated');

  let csrcs = NO_CSRCS;
  if (cc > 0) {
    const list: number[] = new Array<number>(cc);
    for (let i = 0; i < cc; i++) list[i] = readU32(buf, FIXED_HEADER + i * 4);
    csrcs = list;
  }

  let extensionProfile: number | undefined;
  let extension: Uint8Array | undefined;
  if (hasExtension) {
    // §5.3.1: 16-bit profile-defined id, 16-bit length counting 32-bit words
    // of the extension body, not including the 4-byte preamble itself.
    if (offset + 4 > len) return malformed('extension-truncated');
    extensionProfile = (buf[offset]! << 8) | buf[offset + 1]!;
    const words = (buf[offset + 2]! << 8) | buf[offset + 3]!;
    const end = offset + 4 + words * 4;
    if (end > len) return malformed('extension-truncated');
    extension = buf.subarray(offset + 4, end);
    offset = end;
  }

  let paddingLength = 0;
  if (hasPadding) {
    // §5.1: the last octet counts the padding octets including itself, so it
    // is at least 1 and the padding cannot reach into the header.
    paddingLength = buf[len - 1]!;
    if (paddingLength === 0 || paddingLength > len - offset) return malformed('padding-invalid');
  }

  return {
    ok: true,
    packet: {
      marker: (b1 & 0x80) !== 0,
      payloadType: b1 & 0x7f,
      sequenceNumber: (buf[2]! << 8) | buf[3]!,
      timestamp: readU32(buf, 4),
      ssrc: readU32(buf, 8),
      csrcs,
      extensionProfile,
      extension,
      paddingLength,
      payload: buf.subarray(offset, len - paddingLength),
    },
  };
}

function readU32(buf: Uint8Array, at: number): number {
  // `>>> 0` keeps the value unsigned (bitwise ops in JS are signed 32-bit).
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}

export interface BuildRtpOptions {
  payloadType: number;
  sequenceNumber: number;
  timestamp: number;
  ssrc: number;
  payload: Uint8Array;
  marker?: boolean;
  csrcs?: readonly number[];
  /** Header extension: profile id and body; the body is zero-padded to a multiple of 4 bytes. */
  extension?: { profile: number; data: Uint8Array };
  /** Total padding octets to append (1..255, including the count octet). */
  padding?: number;
}

function invalid(message: string): OptinError {
  return new OptinError('RTP_BUILD_INVALID', message);
}

/**
 * Serialises an RTP packet (for tests, fixture captures and load
 * generators). Values are masked to their field widths.
 */
export function buildRtp(o: BuildRtpOptions): Buffer {
  const csrcs = o.csrcs ?? NO_CSRCS;
  if (csrcs.length > 15) throw invalid('RTP allows at most 15 CSRCs (4-bit CC field)');
  const padding = o.padding ?? 0;
  if (padding < 0 || padding > 255) throw invalid('RTP padding must be 0..255 octets');
  const extWords = o.extension ? Math.ceil(o.extension.data.length / 4) : 0;
  if (extWords > 0xffff) throw invalid('RTP header extension body must be under 256 KiB');
  const extBytes = o.extension ? 4 + extWords * 4 : 0;
  const headerLen = FIXED_HEADER + csrcs.length * 4 + extBytes;
  const out = Buffer.alloc(headerLen + o.payload.length + padding);

  out[0] = (RTP_VERSION << 6) | (padding > 0 ? 0x20 : 0) | (o.extension ? 0x10 : 0) | csrcs.length;
  out[1] = (o.marker ? 0x80 : 0) | (o.payloadType & 0x7f);
  out.writeUInt16BE(o.sequenceNumber & 0xffff, 2);
  out.writeUInt32BE(o.timestamp >>> 0, 4);
  out.writeUInt32BE(o.ssrc >>> 0, 8);
  let offset = FIXED_HEADER;
  for (const csrc of csrcs) {
    out.writeUInt32BE(csrc >>> 0, offset);
    offset += 4;
  }
  if (o.extension) {
    out.writeUInt16BE(o.extension.profile & 0xffff, offset);
    out.writeUInt16BE(extWords, offset + 2);
    out.set(o.extension.data, offset + 4);
    offset += extBytes;
  }
  out.set(o.payload, offset);
  if (padding > 0) out[out.length - 1] = padding;
  return out;
}
