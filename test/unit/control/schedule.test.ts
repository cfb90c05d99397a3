import { describe, expect, it } from 'vitest';
import { checkSchedule, DAY_MS } from '../../../src/gate/schedule.ts';

const HOUR = 3_600_000;

/**
 * Schedule validation (R6) on the pure checker the worker applies to what it receives. The
 * control plane refuses the same schedules at ingest (test/integration/control/schedule.test.ts).
 */
describe('schedule validation (the worker\'s checker)', () => {
  const future = Date.now() + DAY_MS;

  it('accepts a sensible training schedule', () => {
    const windows = [0, 1, 2, 3, 4].map((d) => ({ start: future + d * DAY_MS, end: future + d * DAY_MS + 8 * HOUR }));
    expect(checkSchedule(windows, 10)).toEqual([]);
  });

  it('refuses end <= start', () => {
    expect(checkSchedule([{ start: future, end: future - 1 }], 5).map((p) => p.code)).toEqual(['window-empty']);
    expect(checkSchedule([{ start: future, end: future }], 5).map((p) => p.code)).toEqual(['window-empty']);
  });

  it('refuses overlapping windows', () => {
    expect(checkSchedule([{ start: future, end: future + 2 * HOUR }, { start: future + HOUR, end: future + 3 * HOUR }], 5).map((p) => p.code)).toEqual(['window-overlap']);
  });

  it('does not refuse windows in the past (the control plane does; harmless to the worker, subject to clock skew)', () => {
    const past = Date.now() - DAY_MS;
    expect(checkSchedule([{ start: past, end: past + HOUR }], 5)).toEqual([]);
  });

  it('refuses one window of seven days or more', () => {
    expect(checkSchedule([{ start: future, end: future + 7 * DAY_MS }], 5).map((p) => p.code)).toEqual(['window-too-long']);
    expect(checkSchedule([{ start: future, end: future + 7 * DAY_MS - 1 }], 5)).toEqual([]);
  });

  it('refuses contiguous windows that together cover seven days or more', () => {
    const days = Array.from({ length: 7 }, (_, d) => ({ start: future + d * DAY_MS, end: future + (d + 1) * DAY_MS }));
    expect(checkSchedule(days, 5).map((p) => p.code)).toContain('continuous-recording');
    // A one-minute gap each night is still continuous recording...
    const nearly = Array.from({ length: 8 }, (_, d) => ({ start: future + d * DAY_MS, end: future + (d + 1) * DAY_MS - 60_000 }));
    expect(checkSchedule(nearly, 5).map((p) => p.code)).toEqual(['continuous-recording']);
    // ...but six whole days, a real break, then six more is two training periods.
    const twoBlocks = [
      { start: future, end: future + 6 * DAY_MS },
      { start: future + 8 * DAY_MS, end: future + 14 * DAY_MS },
    ];
    expect(checkSchedule(twoBlocks, 5)).toEqual([]);
  });

  it('refuses a cap that is not a non-negative integer', () => {
    const w = [{ start: future, end: future + HOUR }];
    expect(checkSchedule(w, -1).map((p) => p.code)).toEqual(['bad-cap']);
    expect(checkSchedule(w, 1.5).map((p) => p.code)).toEqual(['bad-cap']);
    expect(checkSchedule(w, 0)).toEqual([]); // zero = never record this agent: valid
  });
});
