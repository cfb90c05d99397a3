import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import type { Client } from 'minio';
import type { S3ServerKind } from '../../scripts/s3/devServer.ts';
import { createS3Client, type S3Config } from '../../src/storage/s3Endpoint.ts';

/**
 * Helpers for test files that need S3. The server itself is started once per test run by
 * test/support/globalSetup.ts and handed over through vitest's provide/inject.
 */

export interface ProvidedS3 {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  kind: S3ServerKind;
}

declare module 'vitest' {
  export interface ProvidedContext {
    s3: ProvidedS3;
  }
}

/** Endpoint and keys of this run's S3 server. */
export function s3Config(): ProvidedS3 {
  const cfg = inject('s3');
  if (!cfg) {
    throw new Error(
      'no S3 server was provided: test/support/globalSetup.ts starts one only when a selected test file imports ' +
        'test/support/s3.ts (set OPTIN_S3_START=always to force it)',
    );
  }
  return cfg;
}

/**
 * A unique short prefix (`t<10 hex>`) for bucket names, so test files (and parallel runs by
 * other people on the same server) never collide: name buckets `${prefix}-media` etc. Bucket
 * names allow 3-63 characters of lowercase letters, digits and hyphens.
 */
export function freshBucketPrefix(): string {
  return `t${randomBytes(5).toString('hex')}`;
}

export function makeMinioClient(cfg: S3Config = s3Config()): Client {
  return createS3Client(cfg);
}

/**
 * Deletes a test bucket with everything in it, all versions included; object-locked versions
 * under GOVERNANCE retention are removed with the bypass header (COMPLIANCE ones cannot be, and
 * then the bucket stays: on the throwaway RGW it vanishes at shutdown anyway).
 */
export async function removeBucketDeep(client: Client, bucket: string): Promise<void> {
  if (!(await client.bucketExists(bucket))) return;
  // Page by page, deleting as we go: the next listing starts from what is left, never from a
  // version marker (RGW refuses minio-js's signature of some key/version-id markers past the
  // first 1000 versions: SignatureDoesNotMatch).
  for (;;) {
    const versions: { name: string; versionId?: string }[] = [];
    const stream = client.listObjects(bucket, '', true, { IncludeVersion: true });
    try {
      for await (const item of stream as AsyncIterable<{ name?: string; versionId?: string | null }>) {
        if (item.name) versions.push({ name: item.name, ...(item.versionId ? { versionId: item.versionId } : {}) });
        if (versions.length >= 1000) break;
      }
    } catch (err) {
      if (versions.length === 0) throw err;
    } finally {
      stream.destroy();
    }
    if (versions.length === 0) break;
    for (const v of versions) {
      await client
        .removeObject(bucket, v.name, { ...(v.versionId ? { versionId: v.versionId } : {}), governanceBypass: true })
        .catch(() => {});
    }
    if (versions.length < 1000) break;
  }
  await client.removeBucket(bucket).catch(() => {});
}

/** The names of the objects in `bucket` under `prefix` (current versions), sorted. */
export async function listNames(client: Client, bucket: string, prefix = ''): Promise<string[]> {
  const names: string[] = [];
  for await (const o of client.listObjects(bucket, prefix, true) as AsyncIterable<{ name?: string }>) {
    if (o.name) names.push(o.name);
  }
  return names.sort();
}
