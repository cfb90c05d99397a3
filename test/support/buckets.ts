import type { Client, MakeBucketOpt } from 'minio';
import { afterAll } from 'vitest';
import { bucketNames, type BucketNames } from '../../src/storage/layout.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep } from './s3.ts';

/**
 * The S3 buckets one test file (or one stack) uses: named under fresh prefixes, so files and
 * parallel runs never see each other's objects, and removed with every version when the file
 * is done. Names are registered when handed out; whoever needs a bucket creates it (the store,
 * the audit trail and the app create theirs), and a name never created is skipped at the end.
 */
export class TestBuckets {
  readonly client: Client;
  readonly #base = freshBucketPrefix();
  readonly #names = new Set<string>();

  constructor(client: Client = makeMinioClient()) {
    this.client = client;
  }

  /** A fresh `t<10 hex>-` prefix, as config's `s3.bucketPrefix` takes it; optin's buckets under it are removed at the end. */
  prefix(): string {
    const prefix = `${freshBucketPrefix()}-`;
    this.layout(prefix);
    return prefix;
  }

  /** optin's bucket set (media, keys, audit) under `prefix` (default: a fresh one). */
  layout(prefix?: string): BucketNames {
    const names = prefix === undefined ? bucketNames({ prefix: this.prefix() }) : bucketNames({ prefix });
    for (const name of Object.values(names)) this.#names.add(name);
    return names;
  }

  /** A plain bucket name, `t<10 hex>-<role>`, for the test to create. */
  name(role: string): string {
    const name = `${this.#base}-${role}`;
    this.#names.add(name);
    return name;
  }

  /** A plain bucket `t<10 hex>-<role>`, created now. */
  async make(role: string, options?: MakeBucketOpt): Promise<string> {
    const name = this.name(role);
    await (options === undefined ? this.client.makeBucket(name) : this.client.makeBucket(name, 'us-east-1', options));
    return name;
  }

  /** Removes every bucket handed out, with all their object versions. */
  async removeAll(): Promise<void> {
    for (const name of this.#names) await removeBucketDeep(this.client, name);
    this.#names.clear();
  }
}

/**
 * A file's buckets, removed in an afterAll. Call it at the top of the file (or of a describe),
 * before the file's own afterAll: vitest runs after-hooks in reverse order, so the buckets go
 * after the stores and apps that write to them are closed.
 */
export function useBuckets(client?: Client): TestBuckets {
  const buckets = new TestBuckets(client);
  afterAll(() => buckets.removeAll());
  return buckets;
}
