/**
 * docker/ is for deployments elsewhere (no engine runs here): what can be validated without one
 * is. Debian's docker-compose parses and checks the compose file; the Dockerfile and compose file
 * must agree with the code (entry points, ports, environment names the config really reads).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { requireAuditKey } from '../../../src/audit/auditKey.ts';
import { loadConfig } from '../../../src/config/config.ts';

describe('docker/', () => {
  it('compose.yaml is valid: 4-node erasure-coded MinIO, PostgreSQL, two control-plane replicas, two recorders', () => {
    copyFileSync('docker/.env.example', 'docker/.env.ci');
    try {
      const out = execFileSync('docker-compose', ['--env-file', 'docker/.env.ci', '-f', 'docker/compose.yaml', 'config'], { encoding: 'utf8' });
      for (const svc of ['minio1', 'minio2', 'minio3', 'minio4', 'buckets', 'postgres', 'control-1', 'control-2', 'recorder-1', 'recorder-2']) expect(out).toContain(`${svc}:`);
      expect(out).toContain('http://minio{1...4}/data{1...2}');
      expect(out).toContain('ilm rule add --expire-days 30');
      // Workers reach either replica through one name, over TLS with the private CA.
      expect(out).toContain('wss://control:8780/v1/stream');
      expect(out.match(/aliases:\n\s+- control\n/g)).toHaveLength(2);
    } finally {
      rmSync('docker/.env.ci', { force: true });
    }
  });

  it('the image runs our entry points and every OPTIN_ variable it sets is one the config reads', () => {
    const dockerfile = readFileSync('docker/Dockerfile', 'utf8');
    expect(dockerfile).toMatch(/^USER node$/m); // non-root
    expect(dockerfile).toContain('workers/recorder.ts');
    expect(existsSync('workers/recorder.ts') && existsSync('workers/control.ts')).toBe(true);
    // The recorder's settings and the control plane's (src/controlplane/config.ts).
    const known = readFileSync('src/config/config.ts', 'utf8') + readFileSync('src/controlplane/config.ts', 'utf8');
    const compose = readFileSync('docker/compose.yaml', 'utf8') + dockerfile;
    const used = new Set([...compose.matchAll(/\b(OPTIN_[A-Z0-9_]+)/g)].map((m) => m[1]!));
    // Read by the worker build script (scripts/mediasoup-worker/build.sh), not by a config; the
    // database password only by the postgres image (and inside OPTIN_DATABASE_URL).
    const notConfig = new Set(['OPTIN_CACHE_DIR', 'OPTIN_DB_PASSWORD']);
    for (const name of used) if (!notConfig.has(name)) expect(known, `${name} is not read by src/config/config.ts or src/controlplane/config.ts`).toContain(`${name}:`);
    // Everything the recorder refuses to start without is set by compose.
    for (const required of ['OPTIN_S3_ENDPOINT', 'OPTIN_KEYRING', 'OPTIN_CONTROL_SECRET', 'OPTIN_AUDIT_HMAC_KEY', 'OPTIN_S3_AUDIT_ACCESS_KEY', 'OPTIN_S3_AUDIT_SECRET_KEY']) {
      expect(used, `compose does not set ${required}`).toContain(required);
    }
  });

  it('.env.example holds placeholders only, and the configuration refuses every one of them', () => {
    const example = Object.fromEntries(
      readFileSync('docker/.env.example', 'utf8')
        .split('\n')
        .filter((l) => /^[A-Z0-9_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const secrets = ['OPTIN_S3_SECRET_KEY', 'OPTIN_CONTROL_SECRET', 'OPTIN_KEYRING', 'OPTIN_S3_AUDIT_SECRET_KEY'];
    for (const name of secrets) {
      expect(example[name], name).toBeTypeOf('string');
      expect(() => loadConfig({ [name]: example[name] }), name).toThrow(/placeholder|not valid base64|value not shown/);
    }
    expect(() => requireAuditKey({ hmacKey: example.OPTIN_AUDIT_HMAC_KEY })).toThrow(/placeholder/);
  });

  it('the recorder principal cannot touch the audit bucket; the audit principal can put but never delete', () => {
    type Statement = { Effect: string; Action: string[]; Resource: string[] };
    const recorder = (JSON.parse(readFileSync('docker/minio/optin-policy.json', 'utf8')) as { Statement: Statement[] }).Statement;
    expect(recorder.flatMap((s) => s.Resource).filter((r) => r.includes('optin-audit'))).toEqual([]);
    const audit = (JSON.parse(readFileSync('docker/minio/optin-audit-policy.json', 'utf8')) as { Statement: Statement[] }).Statement;
    const allowed = audit.filter((s) => s.Effect === 'Allow').flatMap((s) => s.Action);
    const denied = audit.filter((s) => s.Effect === 'Deny').flatMap((s) => s.Action);
    expect(allowed).toEqual(expect.arrayContaining(['s3:PutObject', 's3:GetObject', 's3:GetObjectVersion', 's3:ListBucketVersions']));
    expect(allowed.filter((a) => /Delete|Bypass|PutBucket/.test(a))).toEqual([]);
    expect(denied).toEqual(expect.arrayContaining(['s3:DeleteObject', 's3:DeleteObjectVersion', 's3:BypassGovernanceRetention', 's3:PutBucketObjectLockConfiguration']));
  });
});
