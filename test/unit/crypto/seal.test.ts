import { describe, expect, it } from 'vitest';
import { newDataKey } from '../../../src/crypto/Keyring.ts';
import {
  SEAL_OVERHEAD_BYTES,
  SegmentAuthError,
  encodeSegmentAad,
  openSegment,
  sealSegment,
  type SealCheck,
  type SegmentAad,
} from '../../../src/crypto/segmentSeal.ts';

const aad: SegmentAad = {
  bucket: 'optin-media',
  objectKey: 'rec/r_0123456789abcdef/p1/000003.ogg.sealed',
  recordingId: 'r_0123456789abcdef',
  participantId: 'p1',
  segment: 3,
};
const ogg = Buffer.concat([Buffer.from('OggS'), Buffer.alloc(40_000, 0x5a)]);

function failedCheck(fn: () => unknown): SealCheck {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SegmentAuthError);
    expect((err as SegmentAuthError).code).toBe('SEGMENT_AUTH_FAILED');
    return (err as SegmentAuthError).check;
  }
  throw new Error('expected SEGMENT_AUTH_FAILED');
}

describe('segment seal', () => {
  it('round-trips with a fixed 33-byte overhead and the OPTN header', () => {
    const key = newDataKey();
    const sealed = sealSegment(key, ogg, aad);
    expect(sealed.length).toBe(ogg.length + SEAL_OVERHEAD_BYTES);
    expect(sealed.subarray(0, 5).equals(Buffer.from('OPTN\x01', 'latin1'))).toBe(true);
    expect(sealed.includes(Buffer.alloc(64, 0x5a))).toBe(false);
    expect(openSegment(key, sealed, aad).equals(ogg)).toBe(true);
    expect(openSegment(key, sealSegment(key, Buffer.alloc(0), aad), aad).length).toBe(0);
  });

  it('uses a fresh nonce per seal', () => {
    const key = newDataKey();
    const nonces = new Set<string>();
    for (let i = 0; i < 2000; i++) nonces.add(sealSegment(key, Buffer.alloc(1), aad).subarray(5, 17).toString('hex'));
    expect(nonces.size).toBe(2000);
  });

  it('names the failed check: flipped bit, truncation, bad magic, version, wrong key', () => {
    const key = newDataKey();
    const sealed = sealSegment(key, ogg, aad);
    for (const pos of [5, 20, sealed.length - 20, sealed.length - 1]) {
      const flipped = Buffer.from(sealed);
      flipped[pos]! ^= 0x01;
      expect(failedCheck(() => openSegment(key, flipped, aad))).toBe('authentication');
    }
    expect(failedCheck(() => openSegment(key, sealed.subarray(0, sealed.length - 1), aad))).toBe('authentication');
    expect(failedCheck(() => openSegment(key, sealed.subarray(0, 20), aad))).toBe('too-short');
    const magic = Buffer.from(sealed);
    magic[0] = 0x58;
    expect(failedCheck(() => openSegment(key, magic, aad))).toBe('bad-magic');
    const version = Buffer.from(sealed);
    version[4] = 2;
    expect(failedCheck(() => openSegment(key, version, aad))).toBe('unsupported-version');
    expect(failedCheck(() => openSegment(newDataKey(), sealed, aad))).toBe('authentication');
  });

  it('binds bucket, object key, recording, participant and segment number', () => {
    const key = newDataKey();
    const sealed = sealSegment(key, ogg, aad);
    const moved: Partial<SegmentAad>[] = [
      { bucket: 'other-media' },
      { objectKey: 'rec/r_0123456789abcdef/p1/000004.ogg.sealed' },
      { recordingId: 'r_fedcba9876543210' },
      { participantId: 'p2' },
      { segment: 4 },
    ];
    for (const change of moved) {
      expect(failedCheck(() => openSegment(key, sealed, { ...aad, ...change }))).toBe('authentication');
    }
  });

  it('encodes the AAD injectively', () => {
    const a = encodeSegmentAad({ ...aad, recordingId: 'ab', participantId: 'c' });
    const b = encodeSegmentAad({ ...aad, recordingId: 'a', participantId: 'bc' });
    expect(a.equals(b)).toBe(false);
    expect(() => encodeSegmentAad({ ...aad, segment: -1 })).toThrow(/segment/);
    expect(() => encodeSegmentAad({ ...aad, bucket: '' })).toThrow(/bucket/);
  });
});
