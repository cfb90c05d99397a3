/**
 * SegmentHold (src/mediathreads/SegmentHold.ts), the media thread's side of sealing: what it seals
 * opens with the same key to the Ogg it held, the key and the Ogg are zeroed once sealed, and a
 * request out of order is refused without losing what is held. Its PUT is exercised against the
 * real S3 server in test/integration/mediathreads/sealed-upload.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openSegment, SEAL_OVERHEAD_BYTES } from '../../../src/crypto/segmentSeal.ts';
import { sha256Hex } from '../../../src/crypto/digest.ts';
import { SegmentHold } from '../../../src/mediathreads/SegmentHold.ts';
import { expectCode } from '../../support/optinErrors.ts';

const aad = { bucket: 'media', objectKey: 'rec/r_1/p1/000000.ogg.sealed', recordingId: 'r_1', participantId: 'p1', segment: 0 };

function ogg(size = 3000): Buffer {
  const b = Buffer.alloc(size, 0x5a);
  b.write('OggS');
  return b;
}

describe('SegmentHold', () => {
  it('seals what it holds: the bytes open to the Ogg, the key and the Ogg are zeroed', () => {
    const hold = new SegmentHold(undefined);
    const file = ogg();
    const plain = Buffer.from(file);
    hold.hold(1, file);
    const key = randomBytes(32);
    const keyCopy = new Uint8Array(key);
    const figures = hold.seal(1, keyCopy, aad);
    expect(keyCopy.every((b) => b === 0)).toBe(true);
    // The Ogg is zeroed and its memory freed at once (discardBytes): nothing can read it any more.
    expect((file.buffer as ArrayBuffer).detached).toBe(true);
    expect(file.length).toBe(0);
    expect(figures.sealedBytes).toBe(plain.length + SEAL_OVERHEAD_BYTES);
    const sealed = Buffer.from(hold.take(1));
    expect(sealed.length).toBe(figures.sealedBytes);
    expect(sha256Hex(sealed)).toBe(figures.sha256);
    expect(openSegment(key, sealed, aad).equals(plain)).toBe(true);
    // Bound to where it belongs: another segment's AAD does not open it.
    expect(() => openSegment(key, sealed, { ...aad, segment: 1 })).toThrow();
    expect(hold.size).toBe(1);
    hold.release(1);
    expect(hold.size).toBe(0);
    expect(hold.canPut).toBe(false);
  });

  it('refuses requests out of order and keeps what it holds', async () => {
    const hold = new SegmentHold(undefined);
    const file = ogg();
    hold.hold(7, file);
    expectCode(() => hold.hold(7, ogg()), 'INTERNAL');
    expectCode(() => hold.take(7), 'INTERNAL'); // not sealed yet
    await expect(hold.put(7, 'media', 'k', {}, {})).rejects.toMatchObject({ code: 'INTERNAL' }); // no PUT path here
    expectCode(() => hold.seal(8, new Uint8Array(32), aad), 'INTERNAL'); // never held
    const key = randomBytes(32);
    const k = new Uint8Array(key);
    hold.seal(7, k, aad);
    // A second seal is refused, and still zeroes the key it was given.
    const again = new Uint8Array(randomBytes(32));
    expectCode(() => hold.seal(7, again, aad), 'INTERNAL');
    expect(again.every((b) => b === 0)).toBe(true);
    const sealed = Buffer.from(hold.take(7));
    expect(openSegment(key, sealed, aad).subarray(0, 4).toString()).toBe('OggS');
    expectCode(() => hold.take(7), 'INTERNAL'); // handed over once
  });

  it('releases an unsealed segment zeroed (freed where it owns its memory), and close forgets everything', () => {
    const hold = new SegmentHold(undefined);
    const a = ogg();
    // A view into a larger buffer: zeroed, the rest of that buffer untouched, nothing freed.
    const larger = ogg(6000);
    const b = larger.subarray(0, 3000);
    hold.hold(1, a);
    hold.hold(2, b);
    hold.release(1);
    expect((a.buffer as ArrayBuffer).detached).toBe(true);
    hold.release(1); // twice: nothing
    hold.close();
    expect(b.every((x) => x === 0)).toBe(true);
    expect((larger.buffer as ArrayBuffer).detached).toBe(false);
    expect(larger[3000]).toBe(0x5a);
    expect(hold.size).toBe(0);
  });
});
