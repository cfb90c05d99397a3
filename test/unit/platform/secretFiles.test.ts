/**
 * `<NAME>_FILE` secrets (src/config/secretFiles.ts) through both configuration loaders.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireAuditKey } from '../../../src/audit/auditKey.ts';
import { loadConfig } from '../../../src/config/config.ts';
import { withSecretFiles } from '../../../src/config/secretFiles.ts';
import { loadControlPlaneConfig } from '../../../src/controlplane/config.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'optin-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function secretFile(name: string, content: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, content, { mode: 0o600 });
  return file;
}

function errorOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (isOptinError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected an error');
}

describe('*_FILE secrets', () => {
  // Random: the configuration refuses placeholders and uniform values.
  const controlSecret = randomBytes(30).toString('base64url');
  const keyring = { activeKeyId: 'k1', keys: { k1: randomBytes(32).toString('base64') } };

  it('the recorder reads any of its variables from a file, trailing line breaks dropped', () => {
    const config = loadConfig({
      OPTIN_CONTROL_SECRET_FILE: secretFile('control', `${controlSecret}\n`),
      OPTIN_KEYRING_FILE: secretFile('keyring', `${JSON.stringify(keyring)}\r\n`),
      OPTIN_S3_SECRET_KEY_FILE: secretFile('s3', 'sk-with-a space \n\n'),
    });
    expect(config.control.secret).toBe(controlSecret);
    expect(config.keyring).toEqual(keyring);
    expect(config.s3.secretKey).toBe('sk-with-a space ');
  });

  it('the control plane likewise (the database URL carries the password)', () => {
    const url = 'postgres://optin:p%40ss@db:5432/optin';
    const config = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET_FILE: secretFile('cp', controlSecret), OPTIN_DATABASE_URL_FILE: secretFile('db', `${url}\n`) });
    expect(config.stream.secret).toBe(controlSecret);
    expect(config.database.url).toBe(url);
  });

  it('refuses both NAME and NAME_FILE, a missing file and an empty one, never printing a value', () => {
    const both = errorOf(() => loadConfig({ OPTIN_CONTROL_SECRET: controlSecret, OPTIN_CONTROL_SECRET_FILE: secretFile('c2', controlSecret) }));
    expect(both.code).toBe('CONFIG_INVALID');
    expect(both.message).toContain('both OPTIN_CONTROL_SECRET and OPTIN_CONTROL_SECRET_FILE');
    const missing = errorOf(() => loadControlPlaneConfig({ OPTIN_DATABASE_URL_FILE: path.join(dir, 'nope') }));
    expect(missing.code).toBe('SECRET_FILE_UNREADABLE');
    expect(missing.message).toContain('ENOENT');
    const empty = errorOf(() => loadConfig({ OPTIN_JWT_SECRET_FILE: secretFile('empty', '\n') }));
    expect(empty.message).toContain('empty');
    for (const e of [both, missing, empty]) expect(e.message).not.toContain(controlSecret);
  });

  it('only the names asked for, and the environment given is not modified', () => {
    const env = { OPTIN_X_FILE: secretFile('x', 'x'), OTHER_FILE: '/nonexistent' };
    const out = withSecretFiles(env, ['OPTIN_X']);
    expect(out).toEqual({ OPTIN_X: 'x', OTHER_FILE: '/nonexistent' });
    expect(env.OPTIN_X_FILE).toBeDefined();
    expect(withSecretFiles(env, [])).toBe(env);
  });
  it('a setting with a file variable of its own keeps its reader: OPTIN_AUDIT_HMAC_KEY_FILE is still refused when others can read it', () => {
    const key = randomBytes(32).toString('hex');
    const open = path.join(dir, 'audit-open');
    writeFileSync(open, `${key}\n`, { mode: 0o644 });
    expect(errorOf(() => requireAuditKey(loadConfig({ OPTIN_AUDIT_HMAC_KEY_FILE: open }).audit)).message).toContain('readable by others');
    expect(requireAuditKey(loadConfig({ OPTIN_AUDIT_HMAC_KEY_FILE: secretFile('audit', `${key}\n`) }).audit).toString('hex')).toBe(key);
    expect(requireAuditKey(loadControlPlaneConfig({ OPTIN_AUDIT_HMAC_KEY_FILE: secretFile('audit-cp', key) }).audit).toString('hex')).toBe(key);
  });
});
