/**
 * A minimal capture format for RTP with receive times: binary fixtures for
 * the media tests and input for load generators (documented in
 * media-fixtures/README.md).
 *
 *     "OPTNRTP1"                       8 bytes magic
 *     u32 BE  metadata length N
 *     N bytes metadata, UTF-8 JSON     (codec, clock rate, scenario, ground truth)
 *     repeated until end of file:
 *       f64 BE  arrival time, ms since capture start
 *       u16 BE  packet length L
 *       L bytes the RTP packet as received (header included)
 *
 * Records are in arrival order (the order a receiver sees them).
 */
import { OptinError } from '../errors/OptinError.ts';

export const RTP_CAPTURE_MAGIC = 'OPTNRTP1';

export interface RtpCaptureRecord {
  arrivalMs: number;
  packet: Buffer;
}

export interface RtpCapture<M = Record<string, unknown>> {
  meta: M;
  records: RtpCaptureRecord[];
}

export function writeRtpCapture(meta: unknown, records: readonly { arrivalMs: number; packet: Uint8Array }[]): Buffer {
  const metaBytes = Buffer.from(JSON.stringify(meta), 'utf8');
  let size = 12 + metaBytes.length;
  for (const r of records) {
    if (r.packet.length > 0xffff) throw new OptinError('RTP_CAPTURE_INVALID', 'RTP capture packets are limited to 65535 bytes');
    size += 10 + r.packet.length;
  }
  const out = Buffer.alloc(size);
  out.write(RTP_CAPTURE_MAGIC, 0, 'latin1');
  out.writeUInt32BE(metaBytes.length, 8);
  metaBytes.copy(out, 12);
  let at = 12 + metaBytes.length;
  for (const r of records) {
    out.writeDoubleBE(r.arrivalMs, at);
    out.writeUInt16BE(r.packet.length, at + 8);
    out.set(r.packet, at + 10);
    at += 10 + r.packet.length;
  }
  return out;
}

export function readRtpCapture<M = Record<string, unknown>>(buf: Uint8Array): RtpCapture<M> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (what: string): OptinError =>
    new OptinError('RTP_CAPTURE_INVALID', `not an optin RTP capture: ${what}; regenerate it with media-fixtures/generate.sh`);
  if (b.length < 12 || b.toString('latin1', 0, 8) !== RTP_CAPTURE_MAGIC) throw bad('bad magic');
  const metaLen = b.readUInt32BE(8);
  if (12 + metaLen > b.length) throw bad('truncated metadata');
  const meta = JSON.parse(b.toString('utf8', 12, 12 + metaLen)) as M;
  const records: RtpCaptureRecord[] = [];
  let at = 12 + metaLen;
  while (at < b.length) {
    if (at + 10 > b.length) throw bad(`truncated record header at byte ${at}`);
    const arrivalMs = b.readDoubleBE(at);
    const len = b.readUInt16BE(at + 8);
    if (at + 10 + len > b.length) throw bad(`truncated packet at byte ${at}`);
    records.push({ arrivalMs, packet: b.subarray(at + 10, at + 10 + len) });
    at += 10 + len;
  }
  return { meta, records };
}
