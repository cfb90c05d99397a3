import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { s3Config } from '../support/s3.ts';

/**
 * `npm run demo` (workers/demo.ts) end to end, short: the control plane on its embedded database
 * (PGlite: no PostgreSQL server), the IVR's DTMF consent posted through the fact-ingest API with
 * its integration token, the recorder on the control plane's policy stream, a real fixture call
 * recorded from the consent on, decoded back and the audit chain verified (issue 13, item 8). The
 * S3 server is the test run's (OPTIN_S3_ENDPOINT), as a developer's own would be.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

describe('npm run demo', () => {
  it('records a call with consent posted to the control plane on its embedded database', { timeout: 180_000 }, async () => {
    const s3 = s3Config();
    const child = spawn(process.execPath, ['--import', 'tsx', 'workers/demo.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        OPTIN_S3_ENDPOINT: s3.endpoint,
        OPTIN_S3_ACCESS_KEY: s3.accessKey,
        OPTIN_S3_SECRET_KEY: s3.secretKey,
        OPTIN_DATABASE_URL: '', // the embedded default, whatever the caller's environment says
        OPTIN_DEMO_SECONDS: '8',
        OPTIN_DEMO_CONSENT_MS: '3000',
        OPTIN_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code, out).toBe(0);
    expect(out).toMatch(/control plane on https?:\/\/127\.0\.0\.1:\d+ \(embedded database\)/);
    expect(out).toContain('consent posted to the control plane');
    expect(out).toContain('recording state: RECORDING');
    // Media before the consent was dropped, media after it decoded cleanly, for both speakers.
    const legs = [...out.matchAll(/(p-agent|p-customer): (\d+) sealed segments .* decoded ([\d.]+) s cleanly; packets before consent dropped: (\d+)/g)];
    expect(legs.map((m) => m[1]).sort()).toEqual(['p-agent', 'p-customer']);
    for (const m of legs) {
      expect(Number(m[2])).toBeGreaterThan(0);
      expect(Number(m[3])).toBeGreaterThan(3);
      expect(Number(m[4])).toBeGreaterThan(0);
    }
    expect(out).toContain('audit chain: verified unbroken');
    // The people's side (issue 14): the recorder listed the recording, and the demo says where to sign in as each role.
    expect(out).toContain('catalogue: the recorder reported the recording');
    expect(out).toMatch(/web app: http:\/\/localhost:\d+\/ {2}\(open it as localhost; the OpenID provider runs at http:\/\/localhost:\d+\)/);
    for (const login of ['agent', 'lead', 'dpo', 'extract']) expect(out).toMatch(new RegExp(`\\[demo\\] {3}${login} +`));
  });
});
