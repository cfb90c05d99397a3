import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Client } from 'minio';
import { OptinError } from '../errors/OptinError.ts';

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
 * The headers of a tagged PUT (what `putObjectWithTags` sends, and the lean media PUT of
 * LeanPut.ts, so both paths send the same object): user metadata, `content-md5`, the tags, and
 * the optional object lock and `if-none-match`. Validates the key, tags and metadata first, so a
 * bad one fails before any request, with a reason. Lower-case names (SigV4 signs them so).
 */
export function taggedPutHeaders(
  key: string,
  body: Buffer,
  tags: Record<string, string>,
  metadata: Record<string, string> = {},
  options: PutObjectWithTagsOptions = {},
): Record<string, string> {
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
  return headers;
}

/** ETag (unquoted) and version id (null on unversioned buckets) of a PUT's answer. */
export function putResult(headers: IncomingHttpHeaders): PutObjectResult {
  const etag = String(headers.etag ?? '').replace(/^"|"$/g, '');
  const versionId = headers['x-amz-version-id'];
  return { etag, versionId: typeof versionId === 'string' && versionId !== 'null' ? versionId : null };
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
  const headers = taggedPutHeaders(key, body, tags, metadata, options);
  // makeRequestAsync adds content-length, x-amz-date, x-amz-content-sha256 and the signature;
  // a status other than 200 is thrown as an S3Error parsed from the XML body.
  const res = await client.makeRequestAsync({ method: 'PUT', bucketName: bucket, objectName: key, headers }, body, [200]);
  await drain(res);
  return putResult(res.headers);
}
