import { describe, expect, it } from 'vitest';
import { GateSlots, SlotAllocator } from '../../../src/mediathreads/GateSlots.ts';

describe('GateSlots', () => {
  it('opens and closes a slot for the word it was claimed with', () => {
    const g = new GateSlots(4);
    const w = g.claim(2);
    expect(g.isOpen(2, w)).toBe(false);
    g.open(2, w);
    expect(g.isOpen(2, w)).toBe(true);
    g.close(2);
    expect(g.isOpen(2, w)).toBe(false);
    g.set(2, w, true);
    expect(g.isOpen(2, w)).toBe(true);
  });

  it('a reused slot never reads open for the track that held it before', () => {
    const g = new GateSlots(1);
    const old = g.claim(0);
    g.open(0, old);
    const fresh = g.claim(0);
    expect(fresh).not.toBe(old);
    expect(g.isOpen(0, old)).toBe(false);
    // The old track's stale word cannot open the slot for itself, nor for the new one.
    g.open(0, old);
    expect(g.isOpen(0, old)).toBe(false);
    expect(g.isOpen(0, fresh)).toBe(false);
    g.open(0, fresh);
    expect(g.isOpen(0, fresh)).toBe(true);
    expect(g.isOpen(0, old)).toBe(false);
    g.release(0);
    expect(g.isOpen(0, fresh)).toBe(false);
  });

  it('is one table seen through another view of the same buffer (what a thread holds)', () => {
    const main = new GateSlots(8);
    const thread = new GateSlots(main.buffer);
    const w = main.claim(5);
    main.open(5, w);
    expect(thread.isOpen(5, w)).toBe(true);
    main.close(5);
    expect(thread.isOpen(5, w)).toBe(false);
  });

  it('refuses an impossible capacity and runs out of slots clearly', () => {
    expect(() => new GateSlots(0)).toThrow(/capacity/);
    const a = new SlotAllocator(2);
    expect([a.take(), a.take()]).toEqual([0, 1]);
    expect(() => a.take()).toThrow(/gate slots/);
    a.give(1);
    expect(a.take()).toBe(1);
  });
});
