/**
 * Bad configuration fails fast at startup with one clear line naming the fix, never a stack trace
 * (issue 2), and the validated configuration object rejects each bad field by name (issue 7).
 */
import { describe, expect, it } from 'vitest';
import { loadConfig, MAX_RETENTION_SECONDS } from '../../../src/config/config.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { spawnRecorder } from '../../support/workerProcess.ts';
import { s3Config } from '../../support/s3.ts';

const GOOD = () => ({
  OPTIN_KEYRING: JSON.stringify({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } }),
  OPTIN_CONTROL_SECRET: 'x'.repeat(40),
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
    expect(loadConfig({ OPTIN_RETENTION_SECONDS: '3600' }).retentionSeconds).toBe(3600);
  });

  it('names each invalid field and the variable that set it, never a secret value', () => {
    expect(() => loadConfig({ OPTIN_RETENTION_SECONDS: String(MAX_RETENTION_SECONDS + 1) })).toThrow(/retentionSeconds \(from OPTIN_RETENTION_SECONDS\).*30 days/);
    expect(() => loadConfig({ OPTIN_SEGMENT_SECONDS: 'ten' })).toThrow(/segmentSeconds \(from OPTIN_SEGMENT_SECONDS\)/);
    expect(() => loadConfig({ OPTIN_LOG_LEVEL: 'chatty' })).toThrow(/logLevel/);
    expect(() => loadConfig({ OPTIN_CONTROL_URL: 'not a url' })).toThrow(/control\.url/);
    expect(() => loadConfig({ OPTIN_RTC_MIN_PORT: '50000', OPTIN_RTC_MAX_PORT: '40000' })).toThrow(/rtcMinPort/);
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

describe('the recorder process refuses bad configuration clearly', () => {
  it('no object store configured', async () => {
    await failsWith(GOOD(), 'CONFIG_INVALID', /OPTIN_S3_ENDPOINT/);
  }, 30_000);

  it('object store unreachable', async () => {
    await failsWith({ ...GOOD(), OPTIN_S3_ENDPOINT: 'http://127.0.0.1:9', OPTIN_S3_ACCESS_KEY: 'a', OPTIN_S3_SECRET_KEY: 'b' }, 'S3_UNREACHABLE', /OPTIN_S3_ENDPOINT|s3:start/);
  }, 30_000);

  it('wrong object store keys', async () => {
    const s3 = s3Config();
    await failsWith({ ...GOOD(), OPTIN_S3_ENDPOINT: s3.endpoint, OPTIN_S3_ACCESS_KEY: s3.accessKey, OPTIN_S3_SECRET_KEY: 'wrong-secret' }, 'S3_BAD_CREDENTIALS', /OPTIN_S3_SECRET_KEY/);
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
