import { describe, expect, it } from 'vitest';
import { discardBytes, ownsItsMemory } from '../../../src/media/discardBytes.ts';

describe('discardBytes', () => {
  it('zeroes a buffer that owns its memory and frees that memory now (the view is left empty)', () => {
    const b = Buffer.allocUnsafe(140_000).fill(0x5a);
    const ab = b.buffer as ArrayBuffer;
    expect(ownsItsMemory(b)).toBe(true);
    discardBytes(b);
    expect(ab.detached).toBe(true);
    expect(b.length).toBe(0);
    expect(ownsItsMemory(b)).toBe(false);
    discardBytes(b); // twice: nothing left to do, no throw
  });

  it("only zeroes a view into memory it shares (Node's pool of small buffers, a slice): the rest is untouched", () => {
    const whole = Buffer.alloc(64, 0x11);
    const slice = whole.subarray(8, 24);
    expect(ownsItsMemory(slice)).toBe(false);
    discardBytes(slice);
    expect(whole.buffer.detached).toBe(false);
    expect([...whole.subarray(8, 24)].every((x) => x === 0)).toBe(true);
    expect(whole[0]).toBe(0x11);
    expect(whole[24]).toBe(0x11);
    const small = Buffer.from('pooled'); // a slice of Node's shared pool
    expect(ownsItsMemory(small)).toBe(false);
    discardBytes(small);
    expect(small.toString('hex')).toBe('000000000000');
  });

  it('only zeroes shared memory (a SharedArrayBuffer cannot be detached)', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(16)).fill(7);
    expect(ownsItsMemory(shared)).toBe(false);
    discardBytes(shared);
    expect([...shared].every((x) => x === 0)).toBe(true);
  });
});
