import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PolicyServer } from '../../../src/control/PolicyServer.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { checkSchedule, DAY_MS } from '../../../src/gate/schedule.ts';

const HOUR = 3_600_000;
const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef';

/** Schedule validation (R6), on the pure checker and through the reference server's API. */
describe('schedule validation', () => {
  let server: PolicyServer;
  beforeAll(async () => {
    server = new PolicyServer({ secret: SECRET });
    await server.listen();
  });
  afterAll(() => server.close());

  const future = Date.now() + DAY_MS;

  function refused(windows: { start: number; end: number }[], cap: number): string {
    try {
      server.setSchedule('agent-1', windows, cap);
    } catch (err) {
      expect(isOptinError(err)).toBe(true);
      return `${(err as { code: string }).code}: ${(err as Error).message}`;
    }
    throw new Error('schedule was accepted');
  }

  it('accepts a sensible training schedule and broadcasts it as a delta', () => {
    const seq = server.seq;
    const windows = [0, 1, 2, 3, 4].map((d) => ({ start: future + d * DAY_MS, end: future + d * DAY_MS + 8 * HOUR }));
    const delta = server.setSchedule('agent-1', windows, 10);
    expect(delta.seq).toBe(seq + 1);
    expect(delta.fact).toMatchObject({ type: 'schedule.set', agentId: 'agent-1', monthlyCap: 10 });
  });

  it('refuses end <= start', () => {
    expect(refused([{ start: future, end: future }], 5)).toMatch(/POLICY_INVALID_FACT.*end must be after start/);
    expect(checkSchedule([{ start: future, end: future - 1 }], 5).map((p) => p.code)).toEqual(['window-empty']);
  });

  it('refuses overlapping windows', () => {
    expect(refused([{ start: future, end: future + 2 * HOUR }, { start: future + HOUR, end: future + 3 * HOUR }], 5)).toMatch(/POLICY_SCHEDULE_REJECTED.*overlaps/);
  });

  it('refuses windows in the past (server side only)', () => {
    const past = Date.now() - DAY_MS;
    expect(refused([{ start: past, end: past + HOUR }], 5)).toMatch(/POLICY_SCHEDULE_REJECTED.*past/);
    expect(checkSchedule([{ start: past, end: past + HOUR }], 5)).toEqual([]);
  });

  it('refuses one window of seven days or more', () => {
    expect(refused([{ start: future, end: future + 7 * DAY_MS }], 5)).toMatch(/POLICY_SCHEDULE_REJECTED.*seven days/);
    expect(checkSchedule([{ start: future, end: future + 7 * DAY_MS - 1 }], 5)).toEqual([]);
  });

  it('refuses contiguous windows that together cover seven days or more', () => {
    const days = Array.from({ length: 7 }, (_, d) => ({ start: future + d * DAY_MS, end: future + (d + 1) * DAY_MS }));
    expect(refused(days, 5)).toMatch(/POLICY_SCHEDULE_REJECTED.*contiguous/);
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
    expect(refused(w, -1)).toMatch(/POLICY_INVALID_FACT.*monthlyCap/);
    expect(refused(w, 1.5)).toMatch(/POLICY_INVALID_FACT.*monthlyCap/);
    expect(refused(w, Number.NaN)).toMatch(/POLICY_INVALID_FACT.*monthlyCap/);
    expect(checkSchedule(w, -1).map((p) => p.code)).toEqual(['bad-cap']);
    expect(checkSchedule(w, 0)).toEqual([]); // zero = never record this agent: valid
  });

  it('a refused schedule changes nothing and consumes no sequence number', () => {
    const seq = server.seq;
    refused([{ start: future, end: future + 8 * DAY_MS }], 5);
    expect(server.seq).toBe(seq);
  });
});
