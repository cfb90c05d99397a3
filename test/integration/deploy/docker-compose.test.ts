/**
 * docker/ is for deployments elsewhere (no engine runs here): what can be validated without one
 * is. Debian's docker-compose parses and checks the compose file; the Dockerfile and compose file
 * must agree with the code (entry points, ports, environment names the config really reads).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { ConfigSchema } from '../../../src/config/config.ts';

describe('docker/', () => {
  it('compose.yaml is valid: 4-node erasure-coded MinIO, two recorders, the policy server', () => {
    copyFileSync('docker/.env.example', 'docker/.env.ci');
    try {
      const out = execFileSync('docker-compose', ['--env-file', 'docker/.env.ci', '-f', 'docker/compose.yaml', 'config'], { encoding: 'utf8' });
      for (const svc of ['minio1', 'minio2', 'minio3', 'minio4', 'buckets', 'policy', 'recorder-1', 'recorder-2']) expect(out).toContain(`${svc}:`);
      expect(out).toContain('http://minio{1...4}/data{1...2}');
      expect(out).toContain('ilm rule add --expire-days 30');
    } finally {
      rmSync('docker/.env.ci', { force: true });
    }
  });

  it('the image runs our entry points and every OPTIN_ variable it sets is one the config reads', () => {
    const dockerfile = readFileSync('docker/Dockerfile', 'utf8');
    expect(dockerfile).toMatch(/^USER node$/m); // non-root
    expect(dockerfile).toContain('workers/recorder.ts');
    expect(existsSync('workers/recorder.ts') && existsSync('workers/policy-server.ts')).toBe(true);
    const known = readFileSync('src/config/config.ts', 'utf8');
    const compose = readFileSync('docker/compose.yaml', 'utf8') + dockerfile;
    const used = new Set([...compose.matchAll(/\b(OPTIN_[A-Z0-9_]+)/g)].map((m) => m[1]!));
    // Read by workers/policy-server.ts and by the worker build script, not by the recorder's config.
    const policyOnly = new Set(['OPTIN_POLICY_PORT', 'OPTIN_POLICY_HOST', 'OPTIN_CACHE_DIR']);
    for (const name of used) if (!policyOnly.has(name)) expect(known, `${name} is not read by src/config/config.ts`).toContain(`${name}:`);
    expect(ConfigSchema).toBeDefined();
  });
});
