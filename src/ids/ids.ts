import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';

/**
 * Ids are opaque pseudonymous strings (docs/architecture.md §10, "Ids"): call, participant, subject,
 * recording, worker, team lead, case reference. One alphabet everywhere, because ids end up in
 * object names, URLs and log lines, where a `/`, a `.` or a space would change what they mean.
 */
export const ID_ALPHABET = 'A-Za-z0-9_-';
export const ID_MAX_LENGTH = 64;
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** For composing larger patterns (object keys, routes): the id without anchors, as a capture group. */
export const ID_CAPTURE = '([A-Za-z0-9_-]{1,64})';
export const ID_RULE = 'must match [A-Za-z0-9_-]{1,64}';

export const IdSchema = z.string().regex(ID_PATTERN, ID_RULE);

export function isId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** Throws INVALID_ID naming the field; the offending value is shown only in a short, safe form. */
export function assertId(field: string, value: unknown): asserts value is string {
  if (isId(value)) return;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 70)) : typeof value;
  throw new OptinError('INVALID_ID', `${field} ${ID_RULE}; got ${shown}`);
}
