import { createHash, createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Error } from 'minio';
import { signV4 } from 'minio/dist/esm/signing.mjs';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { LeanPut, amzDate, encodeKeyPath, s3ErrorFromAnswer } from '../../../src/storage/LeanPut.ts';
import { s3ErrorCode } from '../../../src/storage/s3Errors.ts';
import { encodeTagging, taggedPutHeaders } from '../../../src/storage/taggedPut.ts';

// The lean PUT's pure parts, and what it puts on the wire, checked on a loopback HTTP server that
// records the request (not an S3 mock: it checks the signature itself, per AWS SigV4).

const ACCESS = 'AKIDEXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';

/** AWS SigV4 from the spec, independently of minio (AWS General Reference, "Signature Version 4"). */
function expectedAuthorization(req: IncomingMessage, body: Buffer, region: string): string {
  const signedNames = (/SignedHeaders=([^,]+)/.exec(String(req.headers.authorization))?.[1] ?? '').split(';');
  const canonicalHeaders = signedNames.map((n) => `${n}:${String(req.headers[n]).trim()}\n`).join('');
  const payloadHash = createHash('sha256').update(body).digest('hex');
  const canonicalRequest = ['PUT', req.url ?? '', '', canonicalHeaders, signedNames.join(';'), payloadHash].join('\n');
  const date = String(req.headers['x-amz-date']);
  const scope = `${date.slice(0, 8)}/${region}/s3/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', date, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${SECRET}`).update(date.slice(0, 8)).digest();
  for (const part of [region, 's3', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  return `AWS4-HMAC-SHA256 Credential=${ACCESS}/${scope}, SignedHeaders=${signedNames.join(';')}, Signature=${signature}`;
}

describe('lean PUT: pure parts', () => {
  it('x-amz-date is the compact ISO 8601 form', () => {
    expect(amzDate(new Date('2026-12-06T02:56:04.123Z'))).toBe('20261206T025604Z');
  });

  it('object keys are escaped as SigV4 canonical URIs (unreserved kept, / kept, upper-case hex)', () => {
    expect(encodeKeyPath('rec/r_0123456789abcdef/p-1/000003.ogg.sealed')).toBe('rec/r_0123456789abcdef/p-1/000003.ogg.sealed');
    expect(encodeKeyPath("a b+c!*'()~ü/x")).toBe('a%20b%2Bc%21%2A%27%28%29~%C3%BC/x');
  });

  it('tags are URL-encoded with %20 for spaces, and bad tags are refused before any request', () => {
    expect(encodeTagging({ 'expires-at': '2026-12-01T10:00:00Z', 'odd key': 'a b+c/d=e' })).toBe('expires-at=2026-12-01T10%3A00%3A00Z&odd%20key=a%20b%2Bc%2Fd%3De');
    expect(() => encodeTagging({ 'bad\nkey': 'v' })).toThrow(/invalid object tag/);
  });

  it('taggedPutHeaders: metadata as x-amz-meta-*, content-type kept, content-md5 and tags added', () => {
    const body = Buffer.from('sealed');
    const h = taggedPutHeaders('k', body, { recording: 'r_0123456789abcdef' }, { 'Content-Type': 'application/octet-stream', segment: '3', 'x-amz-meta-optin-seg': 'abc' });
    expect(h).toEqual({
      'content-type': 'application/octet-stream',
      'x-amz-meta-segment': '3',
      'x-amz-meta-optin-seg': 'abc',
      'content-md5': createHash('md5').update(body).digest('base64'),
      'x-amz-tagging': 'recording=r_0123456789abcdef',
    });
    expect(isOptinError((() => { try { taggedPutHeaders('k', body, {}, { 'X-Amz-Tagging': 'a=b' }); } catch (e) { return e; } })(), 'S3_BAD_METADATA')).toBe(true);
  });

  it('an S3 error document becomes minio S3Error with its code, message and fields', () => {
    const xml = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code><Message>The &quot;bucket&quot; does not exist</Message><BucketName>b</BucketName><RequestId>tx1</RequestId></Error>';
    const err = s3ErrorFromAnswer(404, { 'x-amz-request-id': 'tx1' }, xml);
    expect(err).toBeInstanceOf(S3Error);
    expect(s3ErrorCode(err)).toBe('NoSuchBucket');
    expect(err.message).toBe('The "bucket" does not exist');
    expect((err as S3Error & { bucketname?: string }).bucketname).toBe('b');
    expect((err as S3Error & { amzRequestid?: string }).amzRequestid).toBe('tx1');
  });

  it('an answer without a document falls back on the status, as minio does', () => {
    expect(s3ErrorCode(s3ErrorFromAnswer(403, {}, ''))).toBe('AccessDenied');
    expect(s3ErrorCode(s3ErrorFromAnswer(503, {}, ''))).toBe('SlowDown');
    expect(s3ErrorCode(s3ErrorFromAnswer(500, {}, ''))).toBe('HTTP500');
    const noMessage = s3ErrorFromAnswer(403, {}, '<Error><Code>SignatureDoesNotMatch</Code></Error>');
    expect(s3ErrorCode(noMessage)).toBe('SignatureDoesNotMatch');
    expect(noMessage.message).toContain('403');
  });
});

describe('lean PUT on the wire', () => {
  const seen: Array<{ req: IncomingMessage; body: Buffer }> = [];
  let answer: { status: number; body: string } = { status: 200, body: '' };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ req, body: Buffer.concat(chunks) });
      res.writeHead(answer.status, { etag: '"0123abcd"', 'x-amz-version-id': 'v1', 'content-type': 'application/xml' });
      res.end(answer.body);
    });
  });
  let endpoint = '';

  beforeAll(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('sends the body, metadata, tags and checksums, signed by SigV4 exactly as minio signs them', async () => {
    const lean = new LeanPut({ endpoint, accessKey: ACCESS, secretKey: SECRET, region: 'eu-central-1' });
    try {
      answer = { status: 200, body: '' };
      const body = Buffer.from('sealed segment bytes');
      const res = await lean.putWithTags('media', 'rec/r_0123456789abcdef/p 1/000003.ogg.sealed', body, { recording: 'r_0123456789abcdef', 'expires-at': '2026-12-01T10:00:00Z' }, {
        'Content-Type': 'application/octet-stream',
        'x-amz-meta-optin-seg': 'eyJzIjozfQ',
      });
      expect(res).toEqual({ etag: '0123abcd', versionId: 'v1' });
      const { req, body: got } = seen.at(-1)!;
      expect(got.equals(body)).toBe(true);
      expect(req.method).toBe('PUT');
      expect(req.url).toBe('/media/rec/r_0123456789abcdef/p%201/000003.ogg.sealed');
      expect(req.headers.host).toBe(new URL(endpoint).host);
      expect(req.headers['content-type']).toBe('application/octet-stream');
      expect(req.headers['content-length']).toBe(String(body.length));
      expect(req.headers['x-amz-meta-optin-seg']).toBe('eyJzIjozfQ');
      expect(req.headers['x-amz-tagging']).toBe('recording=r_0123456789abcdef&expires-at=2026-12-01T10%3A00%3A00Z');
      expect(req.headers['content-md5']).toBe(createHash('md5').update(body).digest('base64'));
      expect(req.headers['x-amz-content-sha256']).toBe(createHash('sha256').update(body).digest('hex'));
      // Signed: everything but content-length, content-type, user-agent and authorization.
      expect(req.headers.authorization).toMatch(/SignedHeaders=content-md5;host;x-amz-content-sha256;x-amz-date;x-amz-meta-optin-seg;x-amz-tagging,/);
      expect(req.headers.authorization).toBe(expectedAuthorization(req, body, 'eu-central-1'));
      // And minio's signer, given the same request, says the same.
      const signedHeaders: Record<string, string> = {};
      for (const n of ['content-md5', 'host', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-meta-optin-seg', 'x-amz-tagging']) signedHeaders[n] = String(req.headers[n]);
      const d = String(req.headers['x-amz-date']);
      const date = new Date(`${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${d.slice(9, 11)}:${d.slice(11, 13)}:${d.slice(13, 15)}Z`);
      expect(signV4({ protocol: 'http:', method: 'PUT', path: req.url ?? '', headers: signedHeaders }, ACCESS, SECRET, 'eu-central-1', date, String(req.headers['x-amz-content-sha256']))).toBe(
        req.headers.authorization,
      );
    } finally {
      lean.close();
    }
  });

  it('a refusal is an S3Error with the document code; the connection stays usable', async () => {
    const lean = new LeanPut({ endpoint, accessKey: ACCESS, secretKey: SECRET }, { maxSockets: 1 });
    try {
      answer = { status: 403, body: '<Error><Code>AccessDenied</Code><Message>no</Message></Error>' };
      const err = await lean.putWithTags('media', 'k', Buffer.from('x'), {}, {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(S3Error);
      expect(s3ErrorCode(err)).toBe('AccessDenied');
      answer = { status: 200, body: '' };
      await lean.putWithTags('media', 'k', Buffer.from('x'), {}, {});
      expect(lean.stats()).toEqual({ requests: 2, connectionsOpened: 1, staleRetries: 0 });
    } finally {
      lean.close();
    }
  });

  it('after close() a PUT fails with a retryable STORAGE_UNAVAILABLE', async () => {
    const lean = new LeanPut({ endpoint, accessKey: ACCESS, secretKey: SECRET });
    lean.close();
    const err = await lean.putWithTags('media', 'k', Buffer.from('x'), {}, {}).catch((e: unknown) => e);
    expect(isOptinError(err, 'STORAGE_UNAVAILABLE')).toBe(true);
  });
});
