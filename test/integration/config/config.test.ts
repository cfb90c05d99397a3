/**
 * Bad configuration fails fast at startup with one clear line naming the fix, never a stack trace
 * (issue 2), and the validated configuration object rejects each bad field by name (issue 7).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAuditKey, requireAuditKey } from '../../../src/audit/auditKey.ts';
import { loadConfig, MAX_RETENTION_SECONDS } from '../../../src/config/config.ts';
import { loadControlPlaneConfig } from '../../../src/controlplane/config.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { spawnRecorder } from '../../support/workerProcess.ts';
import { s3Config } from '../../support/s3.ts';

const GOOD = () => ({
  OPTIN_KEYRING: JSON.stringify({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } }),
  OPTIN_CONTROL_SECRET: randomBytes(32).toString('base64url'),
  OPTIN_AUDIT_HMAC_KEY: randomBytes(32).toString('hex'),
  OPTIN_HTTP_PORT: '0',
  OPTIN_MEDIASOUP_WORKERS: '1',
  OPTIN_LOG_LEVEL: 'error',
});

async function failsWith(env: Record<string, string>, code: string, fix: RegExp): Promise<string> {
  const w = spawnRecorder(env);
  const started = Date.now();
  const { code: exit } = await w.exited;
  const err = w.stderr().trim();
  expect(exit).toBe(1);
  expect(err.split('\n')).toHaveLength(1); // one line, no stack trace
  expect(err).not.toMatch(/\n\s+at /);
  expect(err.startsWith(`optin: ${code}:`)).toBe(true);
  expect(err).toMatch(fix);
  expect(Date.now() - started).toBeLessThan(15_000);
  return err;
}

describe('configuration', () => {
  it('has every default in one place and accepts a good environment', () => {
    const c = loadConfig({});
    expect(c.retentionSeconds).toBe(MAX_RETENTION_SECONDS);
    expect(c.segmentSeconds).toBe(10);
    expect(c.admission.maxStreams).toBe(1000);
    expect(c.mediaThreadSemiSpaceMb).toBe(2);
    expect(c.openSegments).toBe('disk');
    expect(loadConfig({ OPTIN_OPEN_SEGMENTS: 'memory' }).openSegments).toBe('memory');
    expect(c.segmentSealing).toBe('thread');
    expect(loadConfig({ OPTIN_SEGMENT_SEALING: 'thread' }).segmentSealing).toBe('thread');
    expect(loadConfig({ OPTIN_SEGMENT_SEALING: 'main' }).segmentSealing).toBe('main');
    expect(loadConfig({ OPTIN_RETENTION_SECONDS: '3600' }).retentionSeconds).toBe(3600);
  });

  it('names each invalid field and the variable that set it, never a secret value', () => {
    expect(() => loadConfig({ OPTIN_RETENTION_SECONDS: String(MAX_RETENTION_SECONDS + 1) })).toThrow(/retentionSeconds \(from OPTIN_RETENTION_SECONDS\).*30 days/);
    expect(() => loadConfig({ OPTIN_SEGMENT_SECONDS: 'ten' })).toThrow(/segmentSeconds \(from OPTIN_SEGMENT_SECONDS\)/);
    expect(() => loadConfig({ OPTIN_LOG_LEVEL: 'chatty' })).toThrow(/logLevel/);
    expect(() => loadConfig({ OPTIN_CONTROL_URL: 'not a url' })).toThrow(/control\.url/);
    expect(() => loadConfig({ OPTIN_RTC_MIN_PORT: '50000', OPTIN_RTC_MAX_PORT: '40000' })).toThrow(/rtcMinPort/);
    expect(() => loadConfig({ OPTIN_MEDIA_THREAD_SEMI_SPACE_MB: '0' })).toThrow(/mediaThreadSemiSpaceMb \(from OPTIN_MEDIA_THREAD_SEMI_SPACE_MB\)/);
    expect(() => loadConfig({ OPTIN_MEDIA_THREAD_SEMI_SPACE_MB: '1.5' })).toThrow(/mediaThreadSemiSpaceMb/);
    expect(() => loadConfig({ OPTIN_MEDIA_THREAD_OLD_SPACE_MB: '32' })).toThrow(/mediaThreadOldSpaceMb \(from OPTIN_MEDIA_THREAD_OLD_SPACE_MB\)/);
    expect(() => loadConfig({ OPTIN_MEDIA_THREAD_OLD_SPACE_MB: 'lots' })).toThrow(/mediaThreadOldSpaceMb/);
    expect(() => loadConfig({ OPTIN_OPEN_SEGMENTS: 'tape' })).toThrow(/openSegments \(from OPTIN_OPEN_SEGMENTS\)/);
    expect(() => loadConfig({ OPTIN_SEGMENT_SEALING: 'gpu' })).toThrow(/segmentSealing \(from OPTIN_SEGMENT_SEALING\)/);
    const secret = 'short-secret-value';
    let message = '';
    try {
      loadConfig({ OPTIN_CONTROL_SECRET: secret });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/control\.secret .*at least 32/);
    expect(message).not.toContain(secret);
    expect(() => loadConfig({ OPTIN_KEYRING: '{not json' })).toThrow(/OPTIN_KEYRING is not valid JSON/);
  });
});

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function configFile(content: unknown): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'optin-config-'));
  dirs.push(dir);
  const file = path.join(dir, 'optin.json');
  writeFileSync(file, JSON.stringify(content));
  return file;
}

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isOptinError(err, 'CONFIG_INVALID')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected CONFIG_INVALID');
}

describe('strict configuration: typos, placeholders and short keys are refused', () => {
  it('an unknown key in the config file is refused, naming it (a misspelt retention key is an error, not 30 days)', () => {
    expect(message(() => loadConfig({ OPTIN_CONFIG: configFile({ retentionSecond: 3600 }) }))).toMatch(/retentionSecond: unknown setting/);
    expect(message(() => loadConfig({ OPTIN_CONFIG: configFile({ spool: { maxByte: 1 } }) }))).toMatch(/spool\.maxByte: unknown setting/);
    expect(message(() => loadConfig({ OPTIN_CONFIG: configFile({ s3: { endpiont: 'http://x' } }) }))).toMatch(/s3\.endpiont: unknown setting/);
    expect(message(() => loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: randomBytes(32).toString('base64url'), OPTIN_CONTROL_CONFIG: configFile({ retentionSecond: 3600 }) }))).toMatch(
      /retentionSecond: unknown setting/,
    );
    expect(loadConfig({ OPTIN_CONFIG: configFile({ retentionSeconds: 3600 }) }).retentionSeconds).toBe(3600);
  });

  it('a retired variable is refused, naming its replacement', () => {
    expect(message(() => loadConfig({ OPTIN_CALL_CONTROL_SECRET: randomBytes(32).toString('base64url') }))).toMatch(/OPTIN_SOFTPHONE_JOIN_SECRET.*OPTIN_SIP_LEG_SECRET/);
    // Issue 14: recorders hold no key that can mint access tokens.
    expect(message(() => loadConfig({ OPTIN_JWT_SECRET: randomBytes(32).toString('base64url') }))).toMatch(/OPTIN_JWT_SECRET is no longer read.*OpenID Connect/);
  });

  it('placeholder secrets from docker/.env.example and the docs, short and uniform secrets are refused, never echoed', () => {
    const placeholders: Array<[Record<string, string>, RegExp]> = [
      [{ OPTIN_CONTROL_SECRET: 'change-me-at-least-32-characters-long-secret' }, /control\.secret \(from OPTIN_CONTROL_SECRET\): is a placeholder/],
      [{ OPTIN_S3_SECRET_KEY: 'change-me-recorder-secret' }, /s3\.secretKey.*placeholder/],
      [{ OPTIN_SOFTPHONE_JOIN_SECRET: 'ab'.repeat(20) }, /callControl\.joinSecret.*too uniform/],
      [{ OPTIN_SIP_LEG_SECRET: 'short-secret' }, /callControl\.sipLegSecret.*at least 32/],
      [{ OPTIN_KEYRING: JSON.stringify({ activeKeyId: 'k1', keys: { k1: Buffer.alloc(32, 7).toString('base64') } }) }, /keyring\.keys\.k1.*too uniform/],
    ];
    for (const [env, want] of placeholders) {
      const m = message(() => loadConfig(env));
      expect(m).toMatch(want);
      for (const v of Object.values(env)) expect(m).not.toContain(v);
    }
    const same = randomBytes(32).toString('base64url');
    expect(message(() => loadConfig({ OPTIN_SOFTPHONE_JOIN_SECRET: same, OPTIN_SIP_LEG_SECRET: same }))).toMatch(/must differ/);
    expect(message(() => loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: 'change-me-at-least-32-characters-long-secret' }))).toMatch(/stream\.secret.*placeholder/);
  });

  it('the audit key: required, long enough, not a placeholder; a key file must be private', () => {
    expect(() => requireAuditKey({})).toThrow(/no audit HMAC key: set OPTIN_AUDIT_HMAC_KEY/);
    expect(() => requireAuditKey({ hmacKey: randomBytes(16).toString('hex') })).toThrow(/at least 32 bytes/);
    expect(() => requireAuditKey({ hmacKey: 'REPLACE_WITH_64_HEX_DIGITS' })).toThrow(/placeholder/);
    expect(() => requireAuditKey({ hmacKey: '00'.repeat(32) })).toThrow(/too uniform/);
    expect(requireAuditKey({ hmacKey: randomBytes(32).toString('base64') })).toHaveLength(32);
    const dir = mkdtempSync(path.join(tmpdir(), 'optin-key-'));
    dirs.push(dir);
    const file = path.join(dir, 'audit.key');
    writeFileSync(file, randomBytes(32).toString('hex'), { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(() => loadAuditKey({ hmacKeyFile: file })).toThrow(/readable by others \(mode 644\): chmod 600/);
    chmodSync(file, 0o600);
    expect(loadAuditKey({ hmacKeyFile: file })).toHaveLength(32);
  });
});

describe('the recorder process refuses bad configuration clearly', () => {
  it('no audit HMAC key', async () => {
    const s3 = s3Config();
    const { OPTIN_AUDIT_HMAC_KEY: _k, ...noKey } = GOOD();
    await failsWith({ ...noKey, OPTIN_S3_ENDPOINT: s3.endpoint, OPTIN_S3_ACCESS_KEY: s3.accessKey, OPTIN_S3_SECRET_KEY: s3.secretKey }, 'CONFIG_INVALID', /no audit HMAC key: set OPTIN_AUDIT_HMAC_KEY/);
  }, 30_000);

  it('no object store configured', async () => {
    await failsWith(GOOD(), 'CONFIG_INVALID', /OPTIN_S3_ENDPOINT/);
  }, 30_000);

  it('object store unreachable', async () => {
    await failsWith({ ...GOOD(), OPTIN_S3_ENDPOINT: 'http://127.0.0.1:9', OPTIN_S3_ACCESS_KEY: 'a', OPTIN_S3_SECRET_KEY: 'b-unreachable-secret' }, 'S3_UNREACHABLE', /OPTIN_S3_ENDPOINT|s3:start/);
  }, 30_000);

  it('wrong object store keys', async () => {
    const s3 = s3Config();
    await failsWith({ ...GOOD(), OPTIN_S3_ENDPOINT: s3.endpoint, OPTIN_S3_ACCESS_KEY: s3.accessKey, OPTIN_S3_SECRET_KEY: 'wrong-secret-key' }, 'S3_BAD_CREDENTIALS', /OPTIN_S3_SECRET_KEY/);
  }, 30_000);

  it('missing mediasoup worker binary', async () => {
    const s3 = s3Config();
    await failsWith(
      { ...GOOD(), OPTIN_S3_ENDPOINT: s3.endpoint, OPTIN_S3_ACCESS_KEY: s3.accessKey, OPTIN_S3_SECRET_KEY: s3.secretKey, OPTIN_MEDIASOUP_WORKER_BIN: '/nowhere/mediasoup-worker' },
      'WORKER_BIN_MISSING',
      /npm run setup/,
    );
  }, 30_000);

  it('a bad keyring', async () => {
    const s3 = s3Config();
    const err = await failsWith(
      { ...GOOD(), OPTIN_S3_ENDPOINT: s3.endpoint, OPTIN_S3_ACCESS_KEY: s3.accessKey, OPTIN_S3_SECRET_KEY: s3.secretKey, OPTIN_KEYRING: JSON.stringify({ activeKeyId: 'k1', keys: { k1: 'dG9vLXNob3J0' } }) },
      '',
      /k1/,
    ).catch((e: Error) => e.message);
    expect(err).not.toContain('dG9vLXNob3J0');
  }, 30_000);
});
