import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, S3Error } from 'minio';
import { LeanPut } from '../../../src/storage/LeanPut.ts';
import { createS3Client } from '../../../src/storage/s3Endpoint.ts';
import { isNotFound, s3ErrorCode, storeError } from '../../../src/storage/s3Errors.ts';
import { S3Objects, putObjectWithTags } from '../../../src/storage/S3Objects.ts';
import { SEGMENT_META_HEADER } from '../../../src/storage/manifest.ts';
import { useBuckets } from '../../support/buckets.ts';
import { listNames, s3Config } from '../../support/s3.ts';

// The lean media PUT (src/storage/LeanPut.ts) against this run's real S3 server: it must store
// exactly what the minio path stores, and fail the way the minio path fails.

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** What a media segment carries: the store's tags and metadata (RecordingStore.#putSegmentNow). */
function segmentTagsAndMeta(): { tags: Record<string, string>; metadata: Record<string, string> } {
  return {
    tags: { 'expires-at': '2026-12-01T10:00:00Z', 'retention-class': 'training-30d', recording: 'r_0123456789abcdef', 'odd key': 'a b+c/d=e' },
    metadata: { 'Content-Type': 'application/octet-stream', [SEGMENT_META_HEADER]: Buffer.from(JSON.stringify({ segment: 3, sha256: 'ab'.repeat(32) })).toString('base64url') },
  };
}

async function objectView(client: Client, bucket: string, key: string): Promise<{ body: Buffer; tags: Record<string, string>; meta: Record<string, unknown> }> {
  const body = await readAll(await client.getObject(bucket, key));
  const tags = Object.fromEntries((await client.getObjectTagging(bucket, key)).map((t) => [t.Key, t.Value]));
  const stat = await client.statObject(bucket, key);
  const meta = { ...stat.metaData } as Record<string, unknown>;
  // Per-request, not per-object: a server may add these (RGW does not; minio adds none either).
  delete meta['last-modified'];
  return { body, tags, meta };
}

describe('lean media PUT', () => {
  const buckets = useBuckets();
  const client = buckets.client;
  const bucket = buckets.name('lean');
  const lean = new LeanPut(s3Config());

  beforeAll(async () => {
    await client.makeBucket(bucket);
  });
  afterAll(() => lean.close());

  it('stores the same bytes, tags and user metadata as the minio path', async () => {
    const body = randomBytes(23_000);
    const { tags, metadata } = segmentTagsAndMeta();
    const viaMinio = await putObjectWithTags(client, bucket, 'rec/r_0123456789abcdef/p1/000000.ogg.sealed', body, tags, metadata);
    const viaLean = await lean.putWithTags(bucket, 'rec/r_0123456789abcdef/p1/000001.ogg.sealed', body, tags, metadata);
    expect(viaLean.etag).toBe(viaMinio.etag); // the MD5 of the same bytes
    const a = await objectView(client, bucket, 'rec/r_0123456789abcdef/p1/000000.ogg.sealed');
    const b = await objectView(client, bucket, 'rec/r_0123456789abcdef/p1/000001.ogg.sealed');
    expect(b.body.equals(body)).toBe(true);
    expect(b.tags).toEqual(tags);
    expect(b.meta).toEqual(a.meta);
    expect(b.meta['content-type']).toBe('application/octet-stream');
    expect(b.meta['optin-seg']).toBe(metadata[SEGMENT_META_HEADER]);
  });

  it("sends a body digest the caller already has; the store refuses a wrong one and nothing changes", async () => {
    const { tags, metadata } = segmentTagsAndMeta();
    const body = randomBytes(20_000);
    const sha = createHash('sha256').update(body).digest('hex');
    await lean.putWithTags(bucket, 'known-digest', body, tags, metadata, {}, sha);
    expect((await objectView(client, bucket, 'known-digest')).body.equals(body)).toBe(true);
    // The digest of other bytes: the store checks what it received against it.
    const err = await caught(lean.putWithTags(bucket, 'known-digest', randomBytes(20_000), tags, metadata, {}, sha));
    expect(err).toBeInstanceOf(S3Error);
    expect(['XAmzContentSHA256Mismatch', 'BadDigest']).toContain(s3ErrorCode(err));
    // Not a SHA-256 at all: refused before anything is sent.
    const bad = await caught(lean.putWithTags(bucket, 'known-digest', randomBytes(10), tags, metadata, {}, 'not-a-digest'));
    expect((bad as { code?: string }).code).toBe('INVALID_INPUT');
    expect((await objectView(client, bucket, 'known-digest')).body.equals(body)).toBe(true);
  });

  it('reuses its keep-alive connections', async () => {
    const own = new LeanPut(s3Config(), { maxSockets: 2 });
    try {
      const { tags, metadata } = segmentTagsAndMeta();
      await Promise.all(Array.from({ length: 20 }, (_, i) => own.putWithTags(bucket, `reuse/${i}`, randomBytes(1000), tags, metadata)));
      const s = own.stats();
      expect(s.requests).toBe(20);
      expect(s.connectionsOpened).toBeLessThanOrEqual(2);
      expect(await listNames(client, bucket, 'reuse/')).toHaveLength(20);
    } finally {
      own.close();
    }
  });

  it('keys that need escaping land under the same name', async () => {
    const key = "rec/odd name+(1)!*'~ü.ogg";
    await lean.putWithTags(bucket, key, Buffer.from('x'), {}, {});
    expect((await readAll(await client.getObject(bucket, key))).toString()).toBe('x');
  });

  it('a missing bucket fails like minio: S3Error NoSuchBucket, retryable once wrapped, nothing stored', async () => {
    const missing = `${bucket}-missing`;
    const { tags, metadata } = segmentTagsAndMeta();
    const leanErr = await caught(lean.putWithTags(missing, 'k', Buffer.from('x'), tags, metadata));
    const minioErr = await caught(putObjectWithTags(client, missing, 'k', Buffer.from('x'), tags, metadata));
    expect(leanErr).toBeInstanceOf(S3Error);
    expect(s3ErrorCode(leanErr)).toBe('NoSuchBucket');
    expect(s3ErrorCode(leanErr)).toBe(s3ErrorCode(minioErr));
    expect(isNotFound(leanErr)).toBe(isNotFound(minioErr));
    const wrapped = storeError(leanErr, 'PUT k');
    expect(wrapped.code).toBe('STORAGE_UNAVAILABLE');
    expect(wrapped.retryable).toBe(true);
    expect(wrapped.message).toContain('NoSuchBucket');
    expect(await client.bucketExists(missing)).toBe(false);
  });

  it('wrong keys fail like minio (the same S3 error code) and change nothing', async () => {
    const wrongSecret = new LeanPut({ ...s3Config(), secretKey: 'not-the-secret' });
    const wrongKey = new LeanPut({ ...s3Config(), accessKey: 'no-such-access-key' });
    const minioWrongSecret = createS3Client({ ...s3Config(), secretKey: 'not-the-secret' });
    const minioWrongKey = createS3Client({ ...s3Config(), accessKey: 'no-such-access-key' });
    try {
      const { tags, metadata } = segmentTagsAndMeta();
      await lean.putWithTags(bucket, 'guarded', Buffer.from('original'), tags, metadata);
      for (const [leanPut, minio] of [[wrongSecret, minioWrongSecret], [wrongKey, minioWrongKey]] as const) {
        const leanErr = await caught(leanPut.putWithTags(bucket, 'guarded', Buffer.from('overwritten'), {}, {}));
        const minioErr = await caught(putObjectWithTags(minio, bucket, 'guarded', Buffer.from('overwritten'), {}, {}));
        expect(leanErr).toBeInstanceOf(S3Error);
        expect(['SignatureDoesNotMatch', 'InvalidAccessKeyId', 'AccessDenied']).toContain(s3ErrorCode(leanErr));
        expect(s3ErrorCode(leanErr)).toBe(s3ErrorCode(minioErr));
        expect((leanErr as Error).message.length).toBeGreaterThan(0);
      }
      const after = await objectView(client, bucket, 'guarded');
      expect(after.body.toString()).toBe('original');
      expect(after.tags).toEqual(tags);
    } finally {
      wrongSecret.close();
      wrongKey.close();
    }
  });

  it('a store that is not there fails with the socket error, as minio does', async () => {
    const dead = new LeanPut({ ...s3Config(), endpoint: 'http://127.0.0.1:1' });
    try {
      const err = await caught(dead.putWithTags(bucket, 'k', Buffer.from('x'), {}, {}));
      expect(s3ErrorCode(err)).toBe('ECONNREFUSED');
      expect(storeError(err, 'PUT k').retryable).toBe(true);
    } finally {
      dead.close();
    }
  });

  it('S3Objects sends media through the lean path, and through minio when asked, to the same effect', async () => {
    const layout = { media: bucket, keys: bucket, audit: bucket };
    const viaLean = new S3Objects(createS3Client(s3Config()), layout, 5000);
    const viaMinio = new S3Objects(createS3Client(s3Config()), layout, 5000, { mediaPut: 'minio' });
    // A client made elsewhere: its endpoint and keys are not known to the store, so minio it is.
    const url = new URL(s3Config().endpoint);
    const foreign = new Client({ endPoint: url.hostname, port: Number(url.port), useSSL: false, accessKey: s3Config().accessKey, secretKey: s3Config().secretKey, pathStyle: true });
    const viaForeign = new S3Objects(foreign, layout, 5000);
    try {
      expect(viaLean.mediaPutPath).toBe('lean');
      expect(viaMinio.mediaPutPath).toBe('minio');
      expect(viaForeign.mediaPutPath).toBe('minio');
      const body = randomBytes(5000);
      const { tags, metadata } = segmentTagsAndMeta();
      const res = (await viaLean.timed(viaLean.startPut('media', 'objects/lean', body, tags, metadata), 'PUT')) as { etag: string; versionId: string | null };
      await viaMinio.timed(viaMinio.startPut('media', 'objects/minio', body, tags, metadata), 'PUT');
      expect(res.etag).toMatch(/^[0-9a-f]{32}$/);
      expect(viaLean.leanPutStats()?.requests).toBe(1);
      expect(viaMinio.leanPutStats()).toBeUndefined();
      const a = await objectView(client, bucket, 'objects/minio');
      const b = await objectView(client, bucket, 'objects/lean');
      expect(b).toEqual(a);
    } finally {
      viaLean.close();
      viaMinio.close();
    }
  });
});
