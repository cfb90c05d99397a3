/**
 * Secrets that must never run in production: the placeholders shipped in docker/.env.example and
 * the docs, values that merely look like a placeholder, and keys too short or too uniform to be
 * random. Refused at startup (config.ts, controlplane/config.ts), naming the setting, never the value.
 */

/** Exactly the placeholder values the repository ships (docker/.env.example, README, docs). */
export const KNOWN_PLACEHOLDERS: ReadonlySet<string> = new Set([
  'change-me-root',
  'change-me-root-password',
  'change-me-recorder-secret',
  'change-me-audit-secret',
  'change-me-at-least-32-characters-long-secret',
  'change-me-at-least-32-characters-long-jwt-secret',
  'REPLACE_WITH_BASE64_OF_32_RANDOM_BYTES',
  'REPLACE_WITH_64_HEX_DIGITS',
  '<base64 of 32 bytes>',
  '<base64 of 32 random bytes>',
]);

/** Words that only a placeholder contains. */
const PLACEHOLDER_WORDS = /change[-_ ]?me|replace[-_ ]?(with|me)|placeholder|your[-_ ]?(secret|key|password)|<[^>]*>|^x{8,}$|^(secret|password)$/i;

/** The fewest distinct characters a random secret of 32+ characters shows (base64 of 24 random bytes has ~25). */
const MIN_DISTINCT_CHARS = 10;

/** Why `value` is not acceptable as a secret, or undefined. `minLength` in characters. */
export function secretProblem(value: string, minLength = 32): string | undefined {
  const v = value.trim();
  if (KNOWN_PLACEHOLDERS.has(v)) return 'is a placeholder from the examples: generate a real secret (openssl rand -base64 32)';
  if (PLACEHOLDER_WORDS.test(v)) return 'looks like a placeholder: generate a real secret (openssl rand -base64 32)';
  if (v.length < minLength) return `must be at least ${minLength} characters`;
  if (new Set(v).size < Math.min(MIN_DISTINCT_CHARS, Math.ceil(v.length / 3))) return 'is too uniform to be random: generate a real secret (openssl rand -base64 32)';
  return undefined;
}

/** Key bytes (already decoded): long enough and not all one byte pattern. */
export function keyBytesProblem(key: Buffer, minBytes = 32): string | undefined {
  if (key.length < minBytes) return `must hold at least ${minBytes} bytes`;
  if (new Set(key).size < 8) return 'is too uniform to be random: generate a real key (openssl rand -hex 32)';
  return undefined;
}
