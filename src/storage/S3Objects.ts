import type { Client } from 'minio';
import { collect, withTimeout } from '../async/promises.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import {
  KEYS_PREFIX,
  MANIFESTS_PREFIX,
  MEDIA_PREFIX,
  dataKeyObjectKey,
  dataKeyPrefix,
  lifecycleDays,
  manifestObjectKey,
  mediaPrefix,
  parseDataKeyObjectKey,
  type BucketNames,
} from './layout.ts';
import { LeanPut, type LeanPutOptions, type LeanPutStats, type MediaPutPath } from './LeanPut.ts';
import { s3ConfigOf } from './s3Endpoint.ts';
import { isNotFound, s3ErrorCode, storeError } from './s3Errors.ts';
import type { BucketRole } from './Spool.ts';
import { putObjectWithTags } from './taggedPut.ts';
import type { HeldSegment } from './types.ts';

// The tagged PUT lives in taggedPut.ts (LeanPut.ts shares its headers); its importers keep this path.
export { encodeTagging, putObjectWithTags, type PutObjectLock, type PutObjectResult, type PutObjectWithTagsOptions } from './taggedPut.ts';

/**
 * The store's S3 adapter: every request optin's recordings make to the object store, and nothing
 * about recordings beyond where their objects live (src/storage/layout.ts).
 *
 * - `putObjectWithTags`: one PUT with the object's tags (and optional object lock), taggedPut.ts;
 * - `S3Objects`: the media and keys buckets as the store sees them: PUT, GET, listings with every
 *   version, version-aware removal, object-lock checks, bucket setup and lifecycle rules, each
 *   with a deadline (a black-holed store must not hang a writer or a deletion).
 */

// ---------------------------------------------------------------------------------------------
// The store's two buckets
// ---------------------------------------------------------------------------------------------

export interface RemoteObject {
  name: string;
  versionId?: string;
  /** Listed with versions: false for a version that is not the current one. */
  isLatest?: boolean;
}

/** What the store holds of one recording (or one participant of it), every version listed. */
export interface RemoteListing {
  keyObjects: RemoteObject[];
  mediaObjects: RemoteObject[];
  manifestObjects: RemoteObject[];
}

const LIFECYCLE_RULE_PREFIX = 'optin-expiry-';
/** S3 DeleteObjects takes at most 1000 keys per request. */
const DELETE_BATCH = 1000;

export interface S3ObjectsOptions {
  /**
   * `lean` (default): media segments go through LeanPut (one signed request on a bounded
   * keep-alive pool, 1.1-1.2x less CPU per PUT than the minio client: bench/putCost.ts), when the
   * client's endpoint and keys are known (a client made by `createS3Client`); otherwise, and with
   * `minio`, through the minio client (`putObjectWithTags`). Everything else always goes through
   * the minio client.
   */
  mediaPut?: MediaPutPath;
  /** The lean path's pool size and stall limit (LeanPut.ts). */
  leanPut?: LeanPutOptions;
}

export class S3Objects {
  readonly buckets: Readonly<BucketNames>;
  readonly #client: Client;
  readonly #timeoutMs: number;
  readonly #lockEnabled = new Map<string, boolean>();
  readonly #mediaPut: MediaPutPath;
  readonly #leanOptions: LeanPutOptions;
  /** Made at the first media PUT (readers never PUT); null: the client's settings are unknown. */
  #lean: LeanPut | null | undefined;

  /** `timeoutMs`: a PUT's deadline; GETs get twice that, listings and batch deletes four times. */
  constructor(client: Client, buckets: Readonly<BucketNames>, timeoutMs: number, options: S3ObjectsOptions = {}) {
    this.#client = client;
    this.buckets = buckets;
    this.#timeoutMs = timeoutMs;
    this.#mediaPut = options.mediaPut ?? 'lean';
    this.#leanOptions = options.leanPut ?? {};
  }

  /** The path media PUTs take now ('minio' when the lean one was asked for but cannot be made). */
  get mediaPutPath(): MediaPutPath {
    if (this.#lean !== undefined) return this.#lean === null ? 'minio' : 'lean';
    return this.#mediaPut === 'lean' && s3ConfigOf(this.#client) !== undefined ? 'lean' : 'minio';
  }

  /** Requests and connections of the lean path (undefined before its first PUT or when unused). */
  leanPutStats(): LeanPutStats | undefined {
    return this.#lean?.stats();
  }

  /** Closes the lean path's pooled connections (the minio client has none of its own to close). */
  close(): void {
    this.#lean?.close();
    this.#lean = null;
  }

  #leanPut(): LeanPut | null {
    if (this.#lean === undefined) {
      const cfg = this.#mediaPut === 'lean' ? s3ConfigOf(this.#client) : undefined;
      this.#lean = cfg === undefined ? null : new LeanPut(cfg, this.#leanOptions);
    }
    return this.#lean;
  }

  /**
   * Starts one PUT and returns the raw request, without a deadline: the caller keeps it (a
   * deletion waits for it, or removes the object if it lands late) and times it with `timed`.
   * Media carries its tags on the PUT itself (the lean path when configured, which sends the
   * same headers); keys and manifests are JSON, through the minio client.
   */
  startPut(role: BucketRole, objectKey: string, body: Buffer | HeldSegment, tags?: Record<string, string>, metadata?: Record<string, string>): Promise<unknown> {
    const bucket = this.buckets[role];
    if (!Buffer.isBuffer(body)) {
      // Held by a media thread: PUT from there on the thread's own lean path (the same request
      // LeanPut sends here), or, when this store goes through the minio client, brought here first.
      if (role === 'media' && tags !== undefined && body.put !== undefined && this.mediaPutPath === 'lean') return body.put(bucket, objectKey, tags, metadata ?? {});
      return body.take().then((bytes) => this.startPut(role, objectKey, bytes, tags, metadata));
    }
    if (role === 'media' && tags !== undefined) {
      const lean = this.#leanPut();
      return lean !== null ? lean.putWithTags(bucket, objectKey, body, tags, metadata) : putObjectWithTags(this.#client, bucket, objectKey, body, tags, metadata);
    }
    return this.#client.putObject(bucket, objectKey, body, body.length, { 'Content-Type': 'application/json', ...metadata });
  }

  /** Rejects with a retryable STORAGE_TIMEOUT after `factor` times the request deadline. */
  timed<T>(p: Promise<T>, what: string, factor = 1): Promise<T> {
    const ms = this.#timeoutMs * factor;
    return withTimeout(p, ms, () => new OptinError('STORAGE_TIMEOUT', `${what} took longer than ${ms} ms`, { retryable: true }));
  }

  /** The object's bytes, null when it does not exist; anything else is STORAGE_UNAVAILABLE. */
  async get(role: BucketRole, objectKey: string): Promise<Buffer | null> {
    try {
      const stream = await this.timed(this.#client.getObject(this.buckets[role], objectKey), `GET ${objectKey}`, 2);
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw storeError(err, `read ${objectKey}`);
    }
  }

  /** The user metadata of one object (HEAD). */
  async metadata(role: BucketRole, objectKey: string): Promise<Record<string, unknown>> {
    const stat = await this.#client.statObject(this.buckets[role], objectKey);
    return stat.metaData as Record<string, unknown>;
  }

  /** Every version (when `versions`), so a versioned bucket keeps no older copy. */
  async *list(role: BucketRole, prefix: string, versions: boolean): AsyncGenerator<RemoteObject> {
    const bucket = this.buckets[role];
    const stream = this.#client.listObjects(bucket, prefix, true, versions ? { IncludeVersion: true } : undefined);
    const timer = setTimeout(() => stream.destroy(new Error(`listing ${bucket}/${prefix} timed out`)), this.#timeoutMs * 4);
    try {
      for await (const raw of stream as AsyncIterable<{ name?: string; versionId?: string | null; isLatest?: boolean | string }>) {
        if (typeof raw.name !== 'string') continue;
        yield {
          name: raw.name,
          ...(raw.versionId && raw.versionId !== 'null' ? { versionId: raw.versionId } : {}),
          ...(raw.isLatest === undefined ? {} : { isLatest: raw.isLatest === true || raw.isLatest === 'true' }),
        };
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Keys, media and manifest of a recording (or only a participant's key and media), every version. */
  async listRecording(recordingId: string, participantId?: string): Promise<RemoteListing> {
    const keyPrefix = participantId === undefined ? dataKeyPrefix(recordingId) : dataKeyObjectKey(recordingId, participantId);
    const keyObjects = await collect(this.list('keys', keyPrefix, true));
    const mediaObjects = await collect(this.list('media', mediaPrefix(recordingId, participantId), true));
    const manifestObjects =
      participantId === undefined
        ? (await collect(this.list('keys', manifestObjectKey(recordingId), true))).filter((o) => o.name === manifestObjectKey(recordingId))
        : [];
    return {
      keyObjects: keyObjects.filter((o) => participantId !== undefined || parseDataKeyObjectKey(o.name)?.recordingId === recordingId),
      mediaObjects,
      manifestObjects,
    };
  }

  /** OBJECT_LOCKED, naming the object and its retention, if any object in the listing is locked. */
  async assertNotLocked(listing: RemoteListing, nowMs: number): Promise<void> {
    const groups: Array<[BucketRole, RemoteObject[]]> = [
      ['keys', [...listing.keyObjects, ...listing.manifestObjects]],
      ['media', listing.mediaObjects],
    ];
    for (const [role, objects] of groups) {
      const bucket = this.buckets[role];
      if (objects.length === 0 || !(await this.#isLockEnabled(bucket))) continue;
      for (const o of objects) {
        const opts = o.versionId ? { versionId: o.versionId } : undefined;
        const retention = await this.#client.getObjectRetention(bucket, o.name, opts as { versionId: string }).catch(() => null);
        const until = retention?.retainUntilDate ? Date.parse(retention.retainUntilDate) : NaN;
        if (retention && Number.isFinite(until) && until > nowMs) {
          throw lockedError(bucket, o.name, `${retention.mode} retention until ${new Date(until).toISOString()}`);
        }
        const hold = await this.#client.getObjectLegalHold(bucket, o.name, opts as { versionId: string }).catch(() => null);
        if (hold === 'ON') throw lockedError(bucket, o.name, 'a legal hold');
      }
    }
  }

  /** Removes every listed object version; an absent one is fine, a locked one is OBJECT_LOCKED. */
  async removeAll(role: BucketRole, objects: RemoteObject[]): Promise<void> {
    const bucket = this.buckets[role];
    for (let i = 0; i < objects.length; i += DELETE_BATCH) {
      const batch = objects.slice(i, i + DELETE_BATCH).map((o) => (o.versionId ? { name: o.name, versionId: o.versionId } : { name: o.name }));
      const result = (await this.timed(this.#client.removeObjects(bucket, batch), `delete in ${bucket}`, 4)) as unknown[];
      for (const r of result ?? []) {
        // minio-js returns per-object errors in two shapes depending on the server's XML.
        const e = (r as { Error?: { Code?: string; Key?: string; Message?: string } } | null)?.Error ?? (r as { Code?: string; Key?: string; Message?: string } | null);
        if (!e?.Code) continue;
        if (e.Code === 'NoSuchKey' || e.Code === 'NoSuchVersion') continue;
        if (e.Code === 'AccessDenied' && (await this.#isLockEnabled(bucket))) throw lockedError(bucket, e.Key ?? '?', 'an object lock');
        throw new OptinError('STORAGE_UNAVAILABLE', `deleting ${e.Key ?? '?'} in ${bucket} failed: ${e.Code}`, { retryable: true });
      }
    }
  }

  /**
   * Removes every version of `objectKey` but the current one (nothing on an unversioned bucket).
   * An erasure rewrites the manifest; on a versioned store the versions before it still name the
   * erased person, so they go too (R9: every copy).
   */
  async removeOlderVersions(role: BucketRole, objectKey: string): Promise<void> {
    const versions = await collect(this.list(role, objectKey, true));
    await this.removeAll(role, versions.filter((o) => o.name === objectKey && o.versionId !== undefined && o.isLatest !== true));
  }

  /** Removes one object (the version a late PUT created, when the bucket is versioned). */
  async removeOne(bucket: string, objectKey: string, versionId?: string): Promise<void> {
    await this.#client.removeObject(bucket, objectKey, versionId ? { versionId } : undefined);
  }

  /**
   * The media and keys buckets and their lifecycle rules, idempotently. The audit bucket is
   * src/audit's to create (with object lock): creating it here would make it without, so it is
   * left alone.
   */
  async ensureBuckets(retentionSeconds: number, region: string, logger: Logger): Promise<void> {
    for (const bucket of [this.buckets.media, this.buckets.keys]) {
      const exists = await this.timed(this.#client.bucketExists(bucket), `HEAD ${bucket}`);
      if (!exists) {
        try {
          await this.#client.makeBucket(bucket, region);
        } catch (err) {
          const code = s3ErrorCode(err);
          if (code !== 'BucketAlreadyOwnedByYou' && code !== 'BucketAlreadyExists') throw err;
        }
      }
    }
    const days = lifecycleDays(retentionSeconds);
    // Backstop for the sweeper: whole days, rounded up, so never earlier than the exact expiry.
    await this.#ensureLifecycle(this.buckets.media, [{ id: `${LIFECYCLE_RULE_PREFIX}media`, prefix: MEDIA_PREFIX, days }], logger);
    await this.#ensureLifecycle(
      this.buckets.keys,
      [
        { id: `${LIFECYCLE_RULE_PREFIX}keys`, prefix: KEYS_PREFIX, days },
        { id: `${LIFECYCLE_RULE_PREFIX}manifests`, prefix: MANIFESTS_PREFIX, days },
      ],
      logger,
    );
  }

  async #ensureLifecycle(bucket: string, wanted: Array<{ id: string; prefix: string; days: number }>, logger: Logger): Promise<void> {
    type Rule = { ID: string; Status?: string; Filter?: { Prefix?: string }; Expiration?: { Days?: number }; [k: string]: unknown };
    let current: Rule[] = [];
    try {
      const cfg = (await this.#client.getBucketLifecycle(bucket)) as { Rule?: Rule | Rule[] } | null;
      const r = cfg?.Rule;
      current = r === undefined ? [] : Array.isArray(r) ? r : [r];
    } catch (err) {
      if (s3ErrorCode(err) !== 'NoSuchLifecycleConfiguration') throw err;
    }
    const rules: Rule[] = current.filter((r) => !wanted.some((w) => w.id === r.ID));
    let same = true;
    for (const w of wanted) {
      const have = current.find((r) => r.ID === w.id);
      if (!have || have.Status !== 'Enabled' || have.Filter?.Prefix !== w.prefix || Number(have.Expiration?.Days) !== w.days) same = false;
      rules.push({ ID: w.id, Status: 'Enabled', Filter: { Prefix: w.prefix }, Expiration: { Days: w.days } });
    }
    if (same) return;
    await this.#client.setBucketLifecycle(bucket, { Rule: rules as never });
    logger.info({ bucket, rules: wanted.map((w) => `${w.prefix}:${w.days}d`) }, 'lifecycle rules installed');
  }

  async #isLockEnabled(bucket: string): Promise<boolean> {
    const cached = this.#lockEnabled.get(bucket);
    if (cached !== undefined) return cached;
    let enabled = false;
    try {
      const cfg = (await this.#client.getObjectLockConfig(bucket)) as { objectLockEnabled?: string } | undefined;
      enabled = cfg?.objectLockEnabled === 'Enabled';
    } catch (err) {
      const code = s3ErrorCode(err);
      if (code !== 'ObjectLockConfigurationNotFoundError' && code !== 'NoSuchObjectLockConfiguration') throw err;
    }
    this.#lockEnabled.set(bucket, enabled);
    return enabled;
  }
}

function lockedError(bucket: string, objectKey: string, what: string): OptinError {
  return new OptinError(
    'OBJECT_LOCKED',
    `object ${objectKey} in bucket ${bucket} is protected by ${what}; deletion refused and nothing was deleted. ` +
      'Ask the storage administrator to lift the lock (object lock must not be enabled on optin buckets), then retry.',
  );
}
