import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
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
import { isNotFound, s3ErrorCode, storeError } from './s3Errors.ts';
import type { BucketRole } from './Spool.ts';

/**
 * The store's S3 adapter: every request optin's recordings make to the object store, and nothing
 * about recordings beyond where their objects live (src/storage/layout.ts).
 *
 * - `putObjectWithTags`: one PUT with the object's tags (and optional object lock), below;
 * - `S3Objects`: the media and keys buckets as the store sees them: PUT, GET, listings with every
 *   version, version-aware removal, object-lock checks, bucket setup and lifecycle rules, each
 *   with a deadline (a black-holed store must not hang a writer or a deletion).
 */

// ---------------------------------------------------------------------------------------------
// Tagged PUT
// ---------------------------------------------------------------------------------------------

/**
 * One PUT that stores an object together with its tags (and, optionally, its object-lock
 * retention), so there is never a moment when a segment sits in the store without its
 * expiry tags.
 *
 * Why not `client.putObject(bucket, key, body, size, { 'X-Amz-Tagging': ... })`:
 * minio-js 8 passes the metadata through `prependXAMZMeta()`, which keeps only
 * `x-amz-meta-*`, `x-amz-acl`, `x-amz-server-side-encryption*`, `x-amz-storage-class` and a few
 * standard headers (content-type, cache-control, content-encoding, content-disposition,
 * content-language, x-amz-website-redirect-location, if-match, if-none-match) as they are, and
 * renames everything else to `x-amz-meta-<name>`. `X-Amz-Tagging` therefore travels as the user
 * metadata `x-amz-meta-x-amz-tagging`: the PUT succeeds, no error, and the object has no tags.
 * The same happens to `x-amz-object-lock-*`. The follow-up `setObjectTagging()` works but is a
 * second request: a crash in between leaves an untagged object that lifecycle rules never
 * expire.
 *
 * What we do instead: `Client.makeRequestAsync()` (public in minio 8's typings, used by all its
 * own calls) sends the headers we give it verbatim and signs them with SigV4, including
 * `x-amz-tagging`, so the tags are part of the signed PUT itself. We add `Content-MD5` so the
 * store checks the body (S3 also demands it for PUTs carrying object-lock retention).
 */

export interface PutObjectLock {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  retainUntil: Date;
}

export interface PutObjectWithTagsOptions {
  /** Per-object retention (the bucket must have been created with object lock). */
  objectLock?: PutObjectLock;
  /** Legal hold ON (object-lock buckets only). */
  legalHold?: boolean;
  /** Fail with 412 instead of overwriting an existing object (`If-None-Match: *`). */
  ifNoneMatch?: boolean;
}

export interface PutObjectResult {
  etag: string;
  versionId: string | null;
}

// S3's limits for object tags; checked here so a bad tag fails before the upload, with a reason.
const MAX_TAGS = 10;
const MAX_TAG_KEY = 128;
const MAX_TAG_VALUE = 256;
const TAG_CHARS = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

// Headers minio-js would also pass as they are; anything else in `metadata` is user metadata.
const STANDARD_HEADERS = new Set([
  'content-type', 'cache-control', 'content-encoding', 'content-disposition', 'content-language',
]);

/** Tag set as the `x-amz-tagging` header wants it: URL query encoding, `%20` for spaces. */
export function encodeTagging(tags: Record<string, string>): string {
  const entries = Object.entries(tags);
  if (entries.length > MAX_TAGS) {
    throw new OptinError('S3_BAD_TAGS', `at most ${MAX_TAGS} tags per object (got ${entries.length}); merge tags`);
  }
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_TAG_KEY || v.length > MAX_TAG_VALUE || !TAG_CHARS.test(k) || !TAG_CHARS.test(v)) {
      throw new OptinError(
        'S3_BAD_TAGS',
        `invalid object tag ${JSON.stringify(k)}: keys 1-${MAX_TAG_KEY} and values 0-${MAX_TAG_VALUE} characters of letters, digits, spaces and _.:/=+-@`,
      );
    }
  }
  return entries.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

function metadataHeaders(metadata: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata)) {
    const lower = name.toLowerCase();
    if (lower === 'x-amz-tagging' || lower.startsWith('x-amz-object-lock-')) {
      // The very mistake this module exists to avoid: say where it belongs instead.
      throw new OptinError('S3_BAD_METADATA', `${name} is not metadata: pass tags as the tags argument and retention as options.objectLock`);
    }
    if (STANDARD_HEADERS.has(lower) || lower.startsWith('x-amz-meta-')) {
      headers[lower] = value;
    } else {
      headers[`x-amz-meta-${lower}`] = value;
    }
  }
  return headers;
}

async function drain(res: IncomingMessage): Promise<void> {
  // The connection goes back to the keep-alive pool only once the body has been read.
  for await (const _chunk of res) {
    // discard
  }
}

/**
 * PUT `body` at `bucket/key` with `tags` (and `metadata`, and optional object lock) in one
 * signed request. Returns the ETag and the version id (null on unversioned buckets).
 * S3 errors are the minio client's `S3Error` (e.g. code `PreconditionFailed` for
 * `ifNoneMatch` on an existing key), network errors are Node's.
 */
export async function putObjectWithTags(
  client: Client,
  bucket: string,
  key: string,
  body: Buffer,
  tags: Record<string, string>,
  metadata: Record<string, string> = {},
  options: PutObjectWithTagsOptions = {},
): Promise<PutObjectResult> {
  if (key.length === 0 || Buffer.byteLength(key) > 1024) {
    throw new OptinError('S3_BAD_KEY', `object key must be 1-1024 bytes (got ${Buffer.byteLength(key)})`);
  }
  const headers: Record<string, string> = {
    ...metadataHeaders(metadata),
    'content-md5': createHash('md5').update(body).digest('base64'),
  };
  const tagging = encodeTagging(tags);
  if (tagging.length > 0) headers['x-amz-tagging'] = tagging;
  if (options.objectLock) {
    headers['x-amz-object-lock-mode'] = options.objectLock.mode;
    headers['x-amz-object-lock-retain-until-date'] = options.objectLock.retainUntil.toISOString();
  }
  if (options.legalHold) headers['x-amz-object-lock-legal-hold'] = 'ON';
  if (options.ifNoneMatch) headers['if-none-match'] = '*';

  // makeRequestAsync adds content-length, x-amz-date, x-amz-content-sha256 and the signature;
  // a status other than 200 is thrown as an S3Error parsed from the XML body.
  const res = await client.makeRequestAsync({ method: 'PUT', bucketName: bucket, objectName: key, headers }, body, [200]);
  await drain(res);
  const etag = String(res.headers.etag ?? '').replace(/^"|"$/g, '');
  const versionId = res.headers['x-amz-version-id'];
  return { etag, versionId: typeof versionId === 'string' && versionId !== 'null' ? versionId : null };
}

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

export class S3Objects {
  readonly buckets: Readonly<BucketNames>;
  readonly #client: Client;
  readonly #timeoutMs: number;
  readonly #lockEnabled = new Map<string, boolean>();

  /** `timeoutMs`: a PUT's deadline; GETs get twice that, listings and batch deletes four times. */
  constructor(client: Client, buckets: Readonly<BucketNames>, timeoutMs: number) {
    this.#client = client;
    this.buckets = buckets;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Starts one PUT and returns the raw request, without a deadline: the caller keeps it (a
   * deletion waits for it, or removes the object if it lands late) and times it with `timed`.
   * Media carries its tags on the PUT itself; keys and manifests are JSON.
   */
  startPut(role: BucketRole, objectKey: string, body: Buffer, tags?: Record<string, string>, metadata?: Record<string, string>): Promise<unknown> {
    const bucket = this.buckets[role];
    return role === 'media' && tags !== undefined
      ? putObjectWithTags(this.#client, bucket, objectKey, body, tags, metadata)
      : this.#client.putObject(bucket, objectKey, body, body.length, { 'Content-Type': 'application/json', ...metadata });
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
