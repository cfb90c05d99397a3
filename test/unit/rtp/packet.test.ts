import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buildRtp, parseRtp, type RtpPacket } from '../../../src/rtp/RtpPacket.ts';
import { readRtpCapture, writeRtpCapture } from '../../../src/rtp/RtpCapture.ts';
import { seeded } from '../../support/property.ts';

const COMMITTED = new URL('../../../media-fixtures/rtp/opus-lossy-wrap.rtpcap', import.meta.url);

function ok(buf: Uint8Array): RtpPacket {
  const r = parseRtp(buf);
  if (!r.ok) throw new Error(`expected a valid packet, got ${r.detail}`);
  return r.packet;
}

describe('parseRtp (RFC 3550 §5.1)', () => {
  it('reads the fixed header fields at their extremes', () => {
    const payload = Buffer.from([1, 2, 3, 4, 5]);
    const p = ok(buildRtp({ payloadType: 127, sequenceNumber: 65535, timestamp: 0xffffffff, ssrc: 0xfedcba98, marker: true, payload }));
    expect(p).toMatchObject({ marker: true, payloadType: 127, sequenceNumber: 65535, timestamp: 0xffffffff, ssrc: 0xfedcba98, paddingLength: 0 });
    expect(p.csrcs).toEqual([]);
    expect(p.extension).toBeUndefined();
    expect(Buffer.from(p.payload)).toEqual(payload);
  });

  it('returns the payload as a view into the input, without copying', () => {
    const buf = buildRtp({ payloadType: 111, sequenceNumber: 1, timestamp: 2, ssrc: 3, payload: Buffer.from('opus') });
    const p = ok(buf);
    expect(p.payload.buffer).toBe(buf.buffer);
    expect(p.payload.byteOffset).toBe(buf.byteOffset + 12);
  });

  it('skips CSRCs and a header extension, exposing both', () => {
    const ext = Buffer.from([0x10, 0xaa, 0x21, 0xbb, 0xcc]); // 5 bytes -> padded to 8
    const buf = buildRtp({
      payloadType: 0, sequenceNumber: 9, timestamp: 9, ssrc: 9, payload: Buffer.from([0xde, 0xad]),
      csrcs: [1, 0xffffffff], extension: { profile: 0xbede, data: ext },
    });
    const p = ok(buf);
    expect(p.csrcs).toEqual([1, 0xffffffff]);
    expect(p.extensionProfile).toBe(0xbede);
    expect(p.extension?.length).toBe(8);
    expect(Buffer.from(p.payload)).toEqual(Buffer.from([0xde, 0xad]));
  });

  it('strips padding (the last octet counts itself)', () => {
    const p = ok(buildRtp({ payloadType: 8, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: Buffer.from([7, 7, 7]), padding: 4 }));
    expect(p.paddingLength).toBe(4);
    expect(Buffer.from(p.payload)).toEqual(Buffer.from([7, 7, 7]));
  });

  it('accepts an empty payload and padding that fills the whole body', () => {
    expect(ok(buildRtp({ payloadType: 8, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: Buffer.alloc(0) })).payload.length).toBe(0);
    expect(ok(buildRtp({ payloadType: 8, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: Buffer.alloc(0), padding: 5 })).payload.length).toBe(0);
  });

  const base = (): Buffer => buildRtp({ payloadType: 111, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: Buffer.from([1, 2, 3, 4]) });
  it.each<[string, () => Uint8Array, string]>([
    ['empty', () => new Uint8Array(0), 'too-short'],
    ['11 bytes', () => base().subarray(0, 11), 'too-short'],
    ['version 1', () => { const b = base(); b[0] = (b[0]! & 0x3f) | 0x40; return b; }, 'version'],
    ['version 3', () => { const b = base(); b[0] = b[0]! | 0xc0; return b; }, 'version'],
    ['CC beyond the end', () => { const b = base(); b[0] = (b[0]! & 0xf0) | 0x0f; return b; }, 'csrc-truncated'],
    ['X without the extension preamble', () => { const b = base().subarray(0, 14); b[0] = b[0]! | 0x10; return b; }, 'extension-truncated'],
    ['extension length past the end', () => {
      const b = buildRtp({ payloadType: 1, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: Buffer.alloc(4), extension: { profile: 1, data: Buffer.alloc(4) } });
      b.writeUInt16BE(3, 14); // claims 12 bytes of extension, only 4 + 4 payload follow
      return b;
    }, 'extension-truncated'],
    ['padding count 0', () => { const b = base(); b[0] = b[0]! | 0x20; b[b.length - 1] = 0; return b; }, 'padding-invalid'],
    ['padding longer than the body', () => { const b = base(); b[0] = b[0]! | 0x20; b[b.length - 1] = 5; return b; }, 'padding-invalid'],
  ])('reports %s as malformed (%s) without throwing', (_name, make, detail) => {
    expect(parseRtp(make())).toEqual({ ok: false, reason: 'malformed', detail });
  });

  it('round-trips arbitrary header fields (property)', () => {
    fc.assert(
      fc.property(
        fc.record({
          payloadType: fc.integer({ min: 0, max: 127 }),
          sequenceNumber: fc.integer({ min: 0, max: 65535 }),
          timestamp: fc.integer({ min: 0, max: 0xffffffff }),
          ssrc: fc.integer({ min: 0, max: 0xffffffff }),
          marker: fc.boolean(),
          payload: fc.uint8Array({ maxLength: 300 }),
          csrcs: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 15 }),
          padding: fc.integer({ min: 0, max: 255 }),
          ext: fc.option(fc.uint8Array({ maxLength: 40 }), { nil: undefined }),
        }),
        (f) => {
          const buf = buildRtp({ ...f, extension: f.ext ? { profile: 0x1000, data: f.ext } : undefined });
          const p = ok(buf);
          expect(p).toMatchObject({ payloadType: f.payloadType, sequenceNumber: f.sequenceNumber, timestamp: f.timestamp, ssrc: f.ssrc, marker: f.marker, paddingLength: f.padding });
          expect(p.csrcs).toEqual(f.csrcs);
          expect(Buffer.from(p.payload)).toEqual(Buffer.from(f.payload));
        },
      ),
      seeded(),
    );
  });

  it('never throws on arbitrary bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const r = parseRtp(bytes);
        // A parsed packet's payload lies inside the bytes, after at least the fixed 12-byte header.
        if (r.ok) expect(12 + r.packet.payload.length).toBeLessThanOrEqual(bytes.length);
        else expect(r.reason).toBe('malformed');
      }),
      seeded({ numRuns: 2000 }),
    );
  });
});

describe('RTP capture format', () => {
  it('round-trips records and metadata', () => {
    const records = [
      { arrivalMs: 0.5, packet: buildRtp({ payloadType: 0, sequenceNumber: 1, timestamp: 160, ssrc: 7, payload: Buffer.alloc(160, 0xff) }) },
      { arrivalMs: 20.25, packet: Buffer.alloc(0) },
    ];
    const cap = readRtpCapture(writeRtpCapture({ scenario: 'x' }, records));
    expect(cap.meta).toEqual({ scenario: 'x' });
    expect(cap.records.map((r) => r.arrivalMs)).toEqual([0.5, 20.25]);
    expect(cap.records[0]!.packet).toEqual(records[0]!.packet);
  });

  it('the committed fixture parses: every record is valid RTP in arrival order', () => {
    const buf = readFileSync(COMMITTED);
    expect(buf.length).toBeLessThan(20_000);
    const cap = readRtpCapture<{ clockRate: number; packetsSent: number }>(buf);
    expect(cap.meta.clockRate).toBe(48_000);
    let prev = -Infinity;
    for (const r of cap.records) {
      expect(r.arrivalMs).toBeGreaterThanOrEqual(prev);
      prev = r.arrivalMs;
      const p = ok(r.packet);
      expect(p.payloadType).toBe(111);
    }
  });
});
