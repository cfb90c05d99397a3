import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadControlPlaneConfig, storeConfigured } from '../../../src/controlplane/config.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

// A real-looking secret: placeholders and uniform strings are refused (src/crypto/secrets.ts).
const SECRET = randomBytes(30).toString('base64url');

function fails(env: NodeJS.ProcessEnv, pattern: RegExp): void {
  let err: unknown;
  try {
    loadControlPlaneConfig(env);
  } catch (e) {
    err = e;
  }
  expect(isOptinError(err, 'CONFIG_INVALID')).toBe(true);
  expect((err as Error).message).toMatch(pattern);
  expect((err as Error).message).not.toContain(SECRET);
}

describe('control-plane configuration', () => {
  it('has defaults for everything but the secret', () => {
    const c = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: SECRET });
    expect(c.http).toMatchObject({ host: '127.0.0.1', port: 8780, bodyLimitBytes: 65536 });
    expect(c.stream.heartbeatMs).toBe(1000);
    expect(c.database.url).toBeUndefined();
    expect(c.retentionSeconds).toBe(2_592_000);
    expect(storeConfigured(c)).toBe(false);
  });

  it('rejects unknown keys in the file, naming them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'optin-cfg-'));
    const file = join(dir, 'control.json');
    writeFileSync(file, JSON.stringify({ http: { port: 9000, hots: '0.0.0.0' }, heartbeat: 5 }));
    try {
      fails({ OPTIN_CONTROL_CONFIG: file }, /http\.hots: unknown setting[\s\S]*heartbeat: unknown setting/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses cleartext on a non-loopback address', () => {
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_CONTROL_HOST: '0.0.0.0' }, /TLS is required/);
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_CONTROL_HOST: '10.1.2.3' }, /TLS is required/);
    expect(loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_CONTROL_HOST: '0.0.0.0', OPTIN_CONTROL_TLS_CERT: 'c.pem', OPTIN_CONTROL_TLS_KEY: 'k.pem' }).http.host).toBe('0.0.0.0');
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_CONTROL_CLIENT_CA_FILE: 'ca.pem' }, /mutual TLS\) needs TLS/);
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_CONTROL_TLS_CERT: 'c.pem' }, /both/);
  });

  it('names the variable of a bad value and never echoes a secret', () => {
    fails({ OPTIN_CONTROL_SECRET: 'short' }, /stream\.secret \(from OPTIN_CONTROL_SECRET\): must be at least 32 characters \(value not shown\)/);
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_DATABASE_URL: 'mysql://x' }, /database\.url \(from OPTIN_DATABASE_URL\)/);
    fails({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_RETENTION_SECONDS: '9999999' }, /R8/);
  });

  it('needs the store settings complete or absent', () => {
    const c = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: SECRET, OPTIN_S3_ENDPOINT: 'http://127.0.0.1:7480' });
    expect(() => storeConfigured(c)).toThrow(/together/);
  });
});
