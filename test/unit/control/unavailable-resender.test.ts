import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { UnavailableResender } from '../../../src/control/UnavailableResender.ts';

describe('UnavailableResender', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('sends the latest frame of a ref again after a backoff that doubles while it keeps failing', () => {
    const resent: string[] = [];
    const r = new UnavailableResender<string>({ resend: (m) => resent.push(m), minMs: 100, maxMs: 350 });
    r.sent('rec-1', 'begun');
    r.sent('rec-1', 'ended'); // supersedes
    expect(r.unavailable('rec-1')).toBe(true);
    expect(r.unavailable('rec-1')).toBe(true); // one resend due, not two
    vi.advanceTimersByTime(99);
    expect(resent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(resent).toEqual(['ended']);
    r.unavailable('rec-1');
    vi.advanceTimersByTime(199);
    expect(resent).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(resent).toHaveLength(2);
    r.unavailable('rec-1');
    vi.advanceTimersByTime(350); // capped
    expect(resent).toHaveLength(3);
  });

  it('knows nothing of refs it never sent; a newer frame resets the backoff and cancels a due resend', () => {
    const resent: string[] = [];
    const r = new UnavailableResender<string>({ resend: (m) => resent.push(m), minMs: 100 });
    expect(r.unavailable('nobody')).toBe(false);
    r.sent('rec-1', 'a');
    r.unavailable('rec-1');
    r.sent('rec-1', 'b'); // the newer report went out itself
    vi.advanceTimersByTime(1000);
    expect(resent).toEqual([]);
  });

  it('keeps only the most recent refs, and nothing after close', () => {
    const resent: string[] = [];
    const r = new UnavailableResender<string>({ resend: (m) => resent.push(m), minMs: 10, max: 2 });
    r.sent('a', 'A');
    r.sent('b', 'B');
    r.sent('c', 'C');
    expect(r.size).toBe(2);
    expect(r.unavailable('a')).toBe(false);
    r.unavailable('b');
    r.close();
    vi.advanceTimersByTime(100);
    expect(resent).toEqual([]);
    expect(r.size).toBe(0);
  });
});
