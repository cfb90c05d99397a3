/**
 * `npm run build` and what the image runs (no container engine here, so the image's layout is
 * rebuilt in a temporary directory instead): package.json, the compiled dist/, bin/, and a
 * node_modules holding the PRODUCTION dependencies only (the lock file's non-dev packages). The
 * compiled workers then run with plain `node`, secrets from files, and the recorder serves the
 * prebuilt softphone bundle without esbuild or tsx being resolvable.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { resolveWorkerBin } from '../../../src/sfu/workerBin.ts';
import { useBuckets } from '../../support/buckets.ts';
import { startTestControlPlane } from '../../support/controlPlane.ts';
import { freePort } from '../../support/controlProcess.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { s3Config } from '../../support/s3.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };

let app: string; // the image's /app
let buildSeconds = 0;
const children: ChildProcess[] = [];
const prefix = useBuckets().prefix();

/** The image's node_modules: every top-level package the lock file does not mark dev-only. */
function productionNodeModules(dir: string): string[] {
  const names: string[] = [];
  for (const [key, info] of Object.entries(lock.packages)) {
    const m = /^node_modules\/((?:@[^/]+\/)?[^/]+)$/.exec(key);
    if (!m || info.dev) continue;
    const target = path.join(ROOT, 'node_modules', m[1]!);
    if (!existsSync(target)) continue; // an optional package for another platform
    mkdirSync(path.dirname(path.join(dir, m[1]!)), { recursive: true });
    symlinkSync(target, path.join(dir, m[1]!));
    names.push(m[1]!);
  }
  return names;
}

function jsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? jsFiles(p) : p.endsWith('.js') ? [p] : [];
  });
}

function spawnNode(args: string[], env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, args, { cwd: app, env: { PATH: process.env.PATH ?? '', HOME: app, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

async function waitFor(url: string, status: number, what: () => string, timeoutMs = 40_000): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      if (res.status === status) return res;
      last = `HTTP ${res.status}: ${await res.text()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms (last: ${last}); output:\n${what()}`);
}

beforeAll(() => {
  app = mkdtempSync(path.join(tmpdir(), 'optin-image-'));
  const started = Date.now();
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build/build.ts', '--out', path.join(app, 'dist')], { cwd: ROOT, stdio: 'pipe' });
  buildSeconds = (Date.now() - started) / 1000;
  cpSync(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
  cpSync(path.join(ROOT, 'bin'), path.join(app, 'bin'), { recursive: true });
  productionNodeModules(path.join(app, 'node_modules'));
}, 180_000);

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(app, { recursive: true, force: true });
});

describe('npm run build', () => {
  it('emits JavaScript for src/ and the production workers, the assets beside it, and the browser bundles', () => {
    console.log(`build took ${buildSeconds.toFixed(1)} s`);
    for (const f of ['dist/workers/recorder.js', 'dist/workers/control.js', 'dist/src/cli/main.js']) {
      expect(existsSync(path.join(app, f)), f).toBe(true);
    }
    for (const f of ['dist/src/db/migrations/001_control_plane.sql', 'dist/src/dashboard/dashboard.html', 'dist/src/softphone/public/index.html', 'dist/src/softphone/public/softphone.js']) {
      expect(existsSync(path.join(app, f)), f).toBe(true);
    }
    const bundle = readFileSync(path.join(app, 'dist/bundles/mediasoup-client.js'), 'utf8');
    expect(bundle.length).toBeGreaterThan(50_000);
    expect(bundle).toContain('window.mediasoupClient');
    // No development tool is compiled in: the demo and the fixture player stay TypeScript.
    expect(existsSync(path.join(app, 'dist/workers/demo.js'))).toBe(false);
  });

  it('every relative import became .js, and every package the compiled code imports is a production dependency', () => {
    const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
    // Loaded lazily, only when running from source (tsx) or to build a missing bundle: the image
    // never reaches them (the runs below prove it with neither installed).
    const lazyDevOnly: Record<string, string> = { esbuild: 'src/http/browserBundle.js', tsx: 'src/async/threadEntry.js' };
    const bad: string[] = [];
    for (const file of jsFiles(path.join(app, 'dist'))) {
      const rel = path.relative(path.join(app, 'dist'), file);
      const text = readFileSync(file, 'utf8');
      const specifiers = /^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]|\brequire(?:\.resolve)?\(\s*['"]([^'"]+)['"]|createRequire\([^)]*\)(?:\.resolve)?\(\s*['"]([^'"]+)['"]/gm;
      for (const m of text.matchAll(specifiers)) {
        const spec = m.slice(1).find((g) => g !== undefined)!;
        if (spec.startsWith('.')) {
          if (spec.endsWith('.ts')) bad.push(`${rel}: ${spec} (not rewritten)`);
          continue;
        }
        if (builtins.has(spec) || spec.startsWith('node:')) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (name in pkg.dependencies) continue;
        if (lazyDevOnly[name] === rel) continue;
        bad.push(`${rel}: ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('the CLI runs from dist/ when there is no src/ (as in the image)', () => {
    const out = execFileSync(process.execPath, ['bin/optin.mjs', 'help'], { cwd: app, encoding: 'utf8' });
    expect(out).toContain('optin');
    // Neither development tool is resolvable from the image's node_modules.
    const req = createRequire(path.join(app, 'dist/src/http/browserBundle.js'));
    expect(() => req.resolve('esbuild')).toThrow();
    expect(() => req.resolve('tsx')).toThrow();
  });
});

describe('the compiled workers under plain node, production dependencies only', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('control plane: migrates PostgreSQL, reads its secrets from *_FILE, answers /readyz and /metrics', async () => {
    const secrets = path.join(app, 'secrets');
    mkdirSync(secrets, { mode: 0o700 });
    writeFileSync(path.join(secrets, 'control_secret'), `${randomBytes(32).toString('base64')}\n`);
    writeFileSync(path.join(secrets, 'database_url'), `${db.url}\n`);
    const port = await freePort();
    const cp = spawnNode(['--enable-source-maps', 'dist/workers/control.js'], {
      OPTIN_CONTROL_SECRET_FILE: path.join(secrets, 'control_secret'),
      OPTIN_DATABASE_URL_FILE: path.join(secrets, 'database_url'),
      OPTIN_CONTROL_PORT: String(port),
      OPTIN_DATA_DIR: path.join(app, 'var'),
    });
    await waitFor(`http://127.0.0.1:${port}/readyz`, 200, cp.output);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/^optin_control_db_up 1$/m);
    expect(cp.output()).not.toContain(db.url); // the URL holds the database password in production
    cp.child.kill('SIGTERM');
    await new Promise((r) => cp.child.once('exit', r));
  });

  it('recorder: starts mediasoup, reaches the store and the policy stream, serves the prebuilt softphone bundle', async () => {
    const s3 = s3Config();
    // The policy stream of a real control plane (in this process, on the run's PostgreSQL).
    const controlDb = await createTestDatabase();
    const control = await startTestControlPlane({ databaseUrl: controlDb.url, overrides: { 'stream.heartbeatMs': 500 }, createTokens: false });
    try {
      const secrets = path.join(app, 'secrets-recorder');
      mkdirSync(secrets, { mode: 0o700 });
      const put = (name: string, value: string): string => {
        writeFileSync(path.join(secrets, name), `${value}\n`, { mode: 0o600 });
        return path.join(secrets, name);
      };
      const port = await freePort();
      const rec = spawnNode(['--enable-source-maps', 'dist/workers/recorder.js'], {
        // The audit trail's key, from an owner-only file (its reader refuses any other).
        OPTIN_AUDIT_HMAC_KEY_FILE: put('audit_hmac_key', randomBytes(32).toString('hex')),
        OPTIN_S3_ENDPOINT: s3.endpoint,
        OPTIN_S3_ACCESS_KEY: s3.accessKey,
        OPTIN_S3_SECRET_KEY_FILE: put('s3_secret_key', s3.secretKey),
        OPTIN_S3_BUCKET_PREFIX: prefix,
        OPTIN_KEYRING_FILE: put('keyring', JSON.stringify({ activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } })),
        OPTIN_CONTROL_URL: control.cp.streamUrl,
        OPTIN_CONTROL_SECRET_FILE: put('control_secret', control.secret),
        OPTIN_SOFTPHONE_JOIN_SECRET_FILE: put('softphone_join_secret', randomBytes(32).toString('base64url')),
        OPTIN_SIP_LEG_SECRET_FILE: put('sip_leg_secret', randomBytes(32).toString('base64url')),
        OPTIN_MEDIASOUP_WORKER_BIN: resolveWorkerBin(),
        OPTIN_MEDIASOUP_WORKERS: '1',
        OPTIN_HTTP_PORT: String(port),
        OPTIN_SPOOL_DIR: path.join(app, 'spool'),
        OPTIN_MAX_EVENT_LOOP_LAG_MS: '5000',
        NODE_ENV: 'production',
      });
      await waitFor(`http://127.0.0.1:${port}/readyz`, 200, rec.output);
      const served = await (await waitFor(`http://127.0.0.1:${port}/softphone/mediasoup-client.js`, 200, rec.output)).text();
      expect(served).toBe(readFileSync(path.join(app, 'dist/bundles/mediasoup-client.js'), 'utf8'));
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/^optin_control_fresh 1$/m);
      rec.child.kill('SIGTERM');
      const code = await new Promise<number | null>((r) => rec.child.once('exit', (c) => r(c)));
      expect(code, rec.output()).toBe(0);
    } finally {
      await control.close();
      await controlDb.drop();
    }
  });
});
