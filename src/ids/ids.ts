import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';

/**
 * Ids are opaque pseudonymous strings (docs/architecture.md §10, "Ids"): call, participant, subject,
 * recording, worker, team lead, case reference. One alphabet everywhere, because ids end up in
 * object names, URLs and log lines, where a `/`, a `.` or a space would change what they mean.
 *
 * Pseudonymous, not merely well-formed: an id that looks like a phone number or an e-mail address
 * is refused wherever an id enters (R2, DESIGN §5 "object names and tags carry no personal data in
 * clear"), because it would end up in object names, audit entries and logs that can never be
 * scrubbed. The rule (docs/rules.md, "Ids"):
 * - a phone number: at least 7 digits and nothing else but an optional leading `+` and the
 *   separators people type (space, `-`, `_`, `.`, `(`, `)`, `/`), e.g. `46701234567`,
 *   `+46 70-123 45 67`, `070_123_4567`;
 * - an e-mail address: anything with an `@` between two non-empty parts.
 * A prefix makes a number an id (`call-20240605123456`), which is how numeric call references
 * from a PBX are meant to be passed; a phone number should be hashed (HMAC) by whoever holds it.
 */
export const ID_ALPHABET = 'A-Za-z0-9_-';
export const ID_MAX_LENGTH = 64;
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** For composing larger patterns (object keys, routes): the id without anchors, as a capture group. */
export const ID_CAPTURE = '([A-Za-z0-9_-]{1,64})';
export const ID_RULE = 'must match [A-Za-z0-9_-]{1,64}';
export const PSEUDONYMOUS_RULE = 'must be a pseudonymous id, not a phone number or an e-mail address (docs/rules.md, "Ids")';

/** The least digits that make a digits-only value a phone number (the shortest national numbers have 7). */
export const PHONE_MIN_DIGITS = 7;
const PHONE_LIKE = /^\+?[0-9 ()./_-]+$/;
const EMAIL_LIKE = /^[^@\s]+@[^@\s]+$/;

export type PersonalLook = 'phone-number' | 'e-mail-address';

/** What personal datum `value` looks like, if any (see the rule above). */
export function personalLook(value: string): PersonalLook | undefined {
  const v = value.trim();
  if (EMAIL_LIKE.test(v)) return 'e-mail-address';
  if (PHONE_LIKE.test(v) && (v.match(/[0-9]/g)?.length ?? 0) >= PHONE_MIN_DIGITS) return 'phone-number';
  return undefined;
}

export const IdSchema = z
  .string()
  .regex(ID_PATTERN, ID_RULE)
  .refine((v) => personalLook(v) === undefined, { message: PSEUDONYMOUS_RULE });

/** A well-formed, pseudonymous id. */
export function isId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value) && personalLook(value) === undefined;
}

/**
 * Throws INVALID_ID naming the field. A value that looks like a phone number or an e-mail address
 * is never echoed (it is personal data); anything else is shown only in a short, safe form.
 */
export function assertId(field: string, value: unknown): asserts value is string {
  if (isId(value)) return;
  if (typeof value === 'string') {
    const look = personalLook(value);
    if (look !== undefined) {
      throw new OptinError('INVALID_ID', `${field} looks like ${look === 'phone-number' ? 'a phone number' : 'an e-mail address'} (value not shown): ${PSEUDONYMOUS_RULE}`);
    }
  }
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 70)) : typeof value;
  throw new OptinError('INVALID_ID', `${field} ${ID_RULE}; got ${shown}`);
}

/** The reason `value` is not an id, for messages that must not echo it; undefined when it is one. */
export function idProblem(value: unknown): string | undefined {
  if (isId(value)) return undefined;
  if (typeof value === 'string') {
    const look = personalLook(value);
    if (look !== undefined) return `looks like ${look === 'phone-number' ? 'a phone number' : 'an e-mail address'}: ${PSEUDONYMOUS_RULE}`;
  }
  return ID_RULE;
}
