import type { Window } from './facts.ts';

/**
 * R6: agents are recorded only inside scheduled "training periods", never
 * continuously. The regulator's opinion says the scheduled time "should not be,
 * for example, whole weeks in a row", so a schedule in which any window, or any
 * run of windows that touch, covers seven days or more is refused.
 *
 * Windows separated by less than `contiguityToleranceMs` count as touching:
 * otherwise 00:00-23:59 every day for a month would pass on a technicality.
 */

export const DAY_MS = 86_400_000;
export const MAX_CONTIGUOUS_MS = 7 * DAY_MS;
export const DEFAULT_CONTIGUITY_TOLERANCE_MS = 60 * 60_000;

export type ScheduleProblemCode =
  | 'window-empty'
  | 'window-overlap'
  | 'window-in-past'
  | 'window-too-long'
  | 'continuous-recording'
  | 'bad-cap';

export interface ScheduleProblem {
  code: ScheduleProblemCode;
  message: string;
  /** Index of the offending window in the caller's array, when one is to blame. */
  index?: number;
}

export interface ScheduleCheckOptions {
  /** When given, windows that ended at or before this instant are refused (server side only: see below). */
  nowMs?: number;
  contiguityToleranceMs?: number;
}

/**
 * Returns every problem found (empty = valid). Pure.
 *
 * The worker checks incoming schedules without `nowMs`: a window in the past
 * is harmless to it (it never opens a gate) and clock skew would otherwise make
 * worker and server disagree; the control plane's ingest API refuses them when they are set (422).
 */
export function checkSchedule(windows: readonly Window[], monthlyCap: number, options: ScheduleCheckOptions = {}): ScheduleProblem[] {
  const tolerance = options.contiguityToleranceMs ?? DEFAULT_CONTIGUITY_TOLERANCE_MS;
  const problems: ScheduleProblem[] = [];
  if (!Number.isSafeInteger(monthlyCap) || monthlyCap < 0) {
    problems.push({ code: 'bad-cap', message: `monthlyCap must be a non-negative integer, got ${String(monthlyCap)}` });
  }
  windows.forEach((w, index) => {
    if (!(w.end > w.start)) problems.push({ code: 'window-empty', index, message: `window ${index}: end must be after start` });
    else if (w.end - w.start >= MAX_CONTIGUOUS_MS) {
      problems.push({ code: 'window-too-long', index, message: `window ${index} covers seven days or more; split recording into shorter training periods (R6)` });
    }
    if (options.nowMs !== undefined && w.end <= options.nowMs) {
      problems.push({ code: 'window-in-past', index, message: `window ${index} ended in the past` });
    }
  });
  const order = windows
    .map((w, index) => ({ w, index }))
    .filter(({ w }) => w.end > w.start)
    .sort((a, b) => a.w.start - b.w.start || a.w.end - b.w.end);
  let runStart = Number.NaN;
  let runEnd = Number.NaN;
  let runCount = 0;
  let reported = false;
  for (let i = 0; i < order.length; i++) {
    const cur = order[i]!;
    const prev = i > 0 ? order[i - 1]! : undefined;
    if (prev !== undefined && cur.w.start < prev.w.end) {
      problems.push({ code: 'window-overlap', index: cur.index, message: `window ${cur.index} overlaps window ${prev.index}` });
    }
    if (runCount > 0 && cur.w.start - runEnd < tolerance) {
      runEnd = Math.max(runEnd, cur.w.end);
      runCount++;
    } else {
      runStart = cur.w.start;
      runEnd = cur.w.end;
      runCount = 1;
      reported = false;
    }
    if (runCount > 1 && !reported && runEnd - runStart >= MAX_CONTIGUOUS_MS) {
      reported = true;
      problems.push({
        code: 'continuous-recording',
        index: cur.index,
        message: `windows up to ${cur.index} form a contiguous period of seven days or more; leave gaps between training periods (R6)`,
      });
    }
  }
  return problems;
}

/** Sorted copy for lookups (the schema and checkSchedule guarantee no overlap in accepted schedules). */
export function sortWindows(windows: readonly Window[]): Window[] {
  return [...windows].sort((a, b) => a.start - b.start);
}

/** Whether `nowMs` is inside one of the sorted windows (start inclusive, end exclusive). Binary search. */
export function insideWindow(sorted: readonly Window[], nowMs: number): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const w = sorted[mid]!;
    if (nowMs < w.start) hi = mid - 1;
    else if (nowMs >= w.end) lo = mid + 1;
    else return true;
  }
  return false;
}

/** First window boundary strictly after `nowMs`, or undefined when none is left. */
export function nextBoundary(sorted: readonly Window[], nowMs: number): number | undefined {
  let best: number | undefined;
  for (const w of sorted) {
    if (w.start > nowMs) {
      best = best === undefined ? w.start : Math.min(best, w.start);
      break; // sorted by start: later windows cannot start earlier
    }
    if (w.end > nowMs) best = best === undefined ? w.end : Math.min(best, w.end);
  }
  return best;
}
