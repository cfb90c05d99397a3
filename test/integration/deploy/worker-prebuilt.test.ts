/**
 * scripts/mediasoup-worker/build.sh runs a downloaded prebuilt worker only when its sha256 is the
 * one pinned in prebuilt.sha256. Served here from a loopback mirror (OPTIN_WORKER_RELEASES_URL):
 * a stand-in "worker" (a script exiting 41, as a real worker does without MEDIASOUP_VERSION) in
 * the release's tarball layout. OPTIN_WORKER_NO_SOURCE_BUILD=1 stops a refused download from
 * falling through to the 7-minute source build.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { arch, release, tmpdir } from 'node:os';
import path from 'node:path';

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
const version = pkg.dependencies.mediasoup!.replace(/^[^0-9]*/, '');
const asset = `mediasoup-worker-${version}-linux-${arch()}-kernel${release().split('.')[0]}`;
let dir: string;
let server: Server;
let mirror: string;
let fakeSha: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'optin-prebuilt-'));
  const fake = path.join(dir, 'mediasoup-worker');
  writeFileSync(fake, '#!/bin/sh\n# a stand-in worker\nexit 41\n');
  chmodSync(fake, 0o755);
  fakeSha = createHash('sha256').update(readFileSync(fake)).digest('hex');
  execFileSync('tar', ['-czf', path.join(dir, 'asset.tgz'), '-C', dir, 'mediasoup-worker']);
  const tgz = readFileSync(path.join(dir, 'asset.tgz'));
  server = createServer((req, res) => {
    if (req.url === `/${version}/${asset}.tgz`) res.writeHead(200).end(tgz);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  mirror = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Asynchronous: the mirror answers from this process's event loop. */
function build(checksums: string | undefined, cache: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, OPTIN_CACHE_DIR: path.join(dir, cache), OPTIN_WORKER_RELEASES_URL: mirror, OPTIN_WORKER_NO_SOURCE_BUILD: '1' };
  if (checksums !== undefined) env.OPTIN_WORKER_CHECKSUMS = checksums;
  return new Promise((resolve) => {
    execFile('bash', ['scripts/mediasoup-worker/build.sh'], { env, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

describe('the prebuilt worker download is checked against a pinned sha256', () => {
  it('a binary matching its pinned line is used and cached', async () => {
    const sums = path.join(dir, 'good.sha256');
    writeFileSync(sums, `# pinned for the test\n${fakeSha}  ${asset}\n`);
    const r = await build(sums, 'cache-good');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`sha256 ${fakeSha}, as pinned`);
    expect(readFileSync(r.stdout.trim(), 'utf8')).toContain('a stand-in worker');
  });

  it('a binary with another sha256 is refused and never run', async () => {
    const sums = path.join(dir, 'bad.sha256');
    writeFileSync(sums, `${'0'.repeat(64)}  ${asset}\n`);
    const r = await build(sums, 'cache-bad');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`REFUSED ${asset}: sha256 ${fakeSha}`);
    expect(r.stdout).toBe('');
  });

  it('an asset with no pinned line is not even downloaded; the repository pins no stand-in', async () => {
    const sums = path.join(dir, 'other.sha256');
    writeFileSync(sums, `${fakeSha}  mediasoup-worker-0.0.0-linux-x64-kernel6\n`);
    expect((await build(sums, 'cache-none')).stderr).toContain(`no pinned checksum for ${asset}`);
    const repo = await build(undefined, 'cache-repo');
    expect(repo.status).toBe(1);
    expect(repo.stderr).toMatch(/REFUSED|no pinned checksum/);
  });
});
