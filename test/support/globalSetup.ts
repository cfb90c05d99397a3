import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { ensureS3Server } from '../../scripts/s3/devServer.ts';
import { DEFAULT_REGION } from '../../src/storage/s3Endpoint.ts';
import { startThrowawayCluster } from '../../scripts/pg/cluster.ts';
// Type-only: brings the `ProvidedContext.s3` declaration into this file without loading vitest's
// worker-side `inject` in the main process.
import type {} from './s3.ts';
import type {} from './pg.ts';

/**
 * Once per test run: find or start the S3 server (OPTIN_S3_ENDPOINT, else a `minio` binary on
 * PATH, else the throwaway Ceph RGW of scripts/s3/rgw.sh) and hand its endpoint and keys to the
 * test files (`inject('s3')`, see test/support/s3.ts). At the end of the run the server is
 * stopped only if this run started it and no other run on the machine still uses it.
 *
 * A run whose selected test files do not use S3 (e.g. `vitest run test/unit/media/g711.test.ts`)
 * starts nothing: the RGW costs seconds and memory on a shared 2-core machine. A file uses S3 when
 * it imports test/support/s3.ts, directly or through another test/support helper.
 * OPTIN_S3_START=always|never overrides the detection.
 */

const SUPPORT_DIR = dirname(fileURLToPath(import.meta.url));
const USES_S3 = /support\/s3(\.ts)?['"]|from ['"]\.\/s3(\.ts)?['"]|inject\(['"]s3['"]\)/;

/** test/support modules that pull in ./s3.ts (one level deep is all we have). */
async function s3Helpers(): Promise<string[]> {
  const names = (await readdir(SUPPORT_DIR)).filter((n) => n.endsWith('.ts') && n !== 's3.ts' && n !== 'globalSetup.ts');
  const out: string[] = [];
  for (const n of names) {
    if (USES_S3.test(await readFile(join(SUPPORT_DIR, n), 'utf8'))) out.push(n.replace(/\.ts$/, ''));
  }
  return out;
}

async function runNeedsS3(project: TestProject): Promise<boolean> {
  const mode = process.env.OPTIN_S3_START ?? 'auto';
  if (mode === 'always') return true;
  if (mode === 'never') return false;
  try {
    // The CLI file filters: internal to vitest 4 (not in its typings). Without them we look at
    // every test file, which errs on the side of starting the server.
    const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
    const { testFiles } = await project.globTestFiles(filters);
    const helpers = await s3Helpers();
    const viaHelper = helpers.length > 0 ? new RegExp(`support/(${helpers.join('|')})(\\.ts)?['"]`) : null;
    for (const file of testFiles) {
      const src = await readFile(file, 'utf8');
      if (USES_S3.test(src) || viaHelper?.test(src)) return true;
    }
    return false;
  } catch {
    return true;
  }
}

/**
 * PostgreSQL, likewise: one throwaway cluster (scripts/pg/pg.sh, fsync off) per run, started only
 * when a selected file imports test/support/pg.ts (directly or through another support module);
 * OPTIN_PG_START=always|never overrides. Each file creates its own database in it.
 */
const USES_PG = /support\/pg(\.ts)?['"]|from ['"]\.\/pg(\.ts)?['"]|inject\(['"]pg['"]\)/;

async function runNeedsPg(project: TestProject): Promise<boolean> {
  const mode = process.env.OPTIN_PG_START ?? 'auto';
  if (mode === 'always') return true;
  if (mode === 'never') return false;
  try {
    const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern;
    const { testFiles } = await project.globTestFiles(filters);
    const names = (await readdir(SUPPORT_DIR)).filter((n) => n.endsWith('.ts') && n !== 'pg.ts' && n !== 'globalSetup.ts');
    const helpers: string[] = [];
    for (const n of names) if (USES_PG.test(await readFile(join(SUPPORT_DIR, n), 'utf8'))) helpers.push(n.replace(/\.ts$/, ''));
    const viaHelper = helpers.length > 0 ? new RegExp(`support/(${helpers.join('|')})(\\.ts)?['"]`) : null;
    for (const file of testFiles) {
      const src = await readFile(file, 'utf8');
      if (USES_PG.test(src) || viaHelper?.test(src)) return true;
    }
    return false;
  } catch {
    return true;
  }
}

async function setupPg(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!(await runNeedsPg(project))) return undefined;
  const cluster = await startThrowawayCluster({ fast: true });
  project.provide('pg', { adminUrl: cluster.url });
  return () => cluster.stop();
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const stopPg = await setupPg(project);
  const stopS3 = await setupS3(project).catch(async (err: unknown) => {
    await stopPg?.();
    throw err;
  });
  if (stopPg === undefined && stopS3 === undefined) return undefined;
  return async () => {
    await stopS3?.();
    await stopPg?.();
  };
}

async function setupS3(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!(await runNeedsS3(project))) return undefined;
  const server = await ensureS3Server();
  project.provide('s3', {
    endpoint: server.endpoint,
    accessKey: server.accessKey,
    secretKey: server.secretKey,
    region: server.region ?? DEFAULT_REGION,
    kind: server.kind,
  });
  return async () => {
    await server.stop();
  };
}
