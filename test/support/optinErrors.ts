import { expect } from 'vitest';
import { isOptinError } from '../../src/errors/OptinError.ts';

/**
 * Assertions on the OptinErrors a call rejects or throws with: tests check the `code` (a row of
 * src/errors/errorTable.ts) and, where it matters, that the message names the fix.
 */

/**
 * Awaits `p` (a promise, or a function that returns one or throws) and expects an OptinError with
 * `code` (and `check`, for errors that carry one); returns its message. Anything else fails.
 */
export async function expectCode(p: Promise<unknown> | (() => unknown), code: string, check?: string): Promise<string> {
  try {
    if (typeof p === 'function') await p();
    else await p;
  } catch (err) {
    if (!isOptinError(err)) throw err;
    expect(err.code).toBe(code);
    if (check !== undefined) expect((err as { check?: string }).check).toBe(check);
    return err.message;
  }
  throw new Error(`expected ${code}`);
}

/** The code of the OptinError `fn` throws, or 'no error' (which then fails the comparison that follows). */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isOptinError(err)) return err.code;
    throw err;
  }
  return 'no error';
}

/** The code and message of the OptinError `fn` throws; throws if `fn` returns or throws anything else. */
export function optinErrorOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (isOptinError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected an OptinError');
}
