import { readFileSync, statSync } from 'node:fs';
import { keyBytesProblem, secretProblem } from '../crypto/secrets.ts';
import { OptinError } from '../errors/OptinError.ts';

/**
 * The audit trail's HMAC key (R11, docs/rules.md "Audit"): one key for every writer and for the
 * verifier, given as hex or base64 of at least 32 bytes, in configuration (OPTIN_AUDIT_HMAC_KEY)
 * or in a file (OPTIN_AUDIT_HMAC_KEY_FILE) that only its owner can read. Someone who can write
 * the audit bucket but lacks this key cannot forge a consistent chain.
 */

/** Accepts 64+ hex digits or base64 of at least 32 bytes; refuses placeholders and uniform keys. */
export function parseHmacKey(text: string, what = 'OPTIN_AUDIT_HMAC_KEY'): Buffer {
  const trimmed = text.trim();
  const placeholder = secretProblem(trimmed, 0);
  if (placeholder !== undefined) throw new OptinError('CONFIG_INVALID', `${what} ${placeholder} (value not shown)`);
  const key = /^(?:[0-9a-fA-F]{2})+$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  const problem = keyBytesProblem(key);
  if (problem !== undefined) throw new OptinError('CONFIG_INVALID', `${what} ${problem}, as hex or base64 (value not shown; generate one with: openssl rand -hex 32)`);
  return key;
}

/**
 * The key from a value or a file; undefined when neither is set. A key file readable by group or
 * others is refused (like ssh does with private keys): the key is what makes the trail tamper-evident.
 */
export function loadAuditKey(source: { hmacKey?: string | undefined; hmacKeyFile?: string | undefined }): Buffer | undefined {
  if (source.hmacKey !== undefined && source.hmacKeyFile !== undefined) {
    throw new OptinError('CONFIG_INVALID', 'set OPTIN_AUDIT_HMAC_KEY or OPTIN_AUDIT_HMAC_KEY_FILE, not both');
  }
  if (source.hmacKey !== undefined) return parseHmacKey(source.hmacKey);
  if (source.hmacKeyFile === undefined) return undefined;
  const file = source.hmacKeyFile;
  let mode: number;
  let text: string;
  try {
    mode = statSync(file).mode;
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new OptinError('CONFIG_INVALID', `OPTIN_AUDIT_HMAC_KEY_FILE=${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if ((mode & 0o077) !== 0) {
    throw new OptinError('CONFIG_INVALID', `OPTIN_AUDIT_HMAC_KEY_FILE=${file} is readable by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`);
  }
  return parseHmacKey(text, `the key in ${file}`);
}

/** The key a writer needs: refuses to start without one (there is no unkeyed trail). */
export function requireAuditKey(source: { hmacKey?: string | undefined; hmacKeyFile?: string | undefined }): Buffer {
  const key = loadAuditKey(source);
  if (key === undefined) {
    throw new OptinError(
      'CONFIG_INVALID',
      'no audit HMAC key: set OPTIN_AUDIT_HMAC_KEY (hex or base64 of >= 32 random bytes, e.g. `openssl rand -hex 32`) or OPTIN_AUDIT_HMAC_KEY_FILE; ' +
        'every writer and the verifier need the same key',
    );
  }
  return key;
}
