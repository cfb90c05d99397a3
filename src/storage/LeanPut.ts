import { createHash } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import { S3Error } from 'minio';
// The minio package's own SigV4 signer (its `exports` map allows dist/esm/*; typed by signing.d.mts).
import { signV4 } from 'minio/dist/esm/signing.mjs';
import { OptinError } from '../errors/OptinError.ts';
import { DEFAULT_REGION, type S3Config } from './s3Endpoint.ts';
import { putResult, taggedPutHeaders, type PutObjectResult, type PutObjectWithTagsOptions } from './taggedPut.ts';

/**
 * The recorder's hot-path PUT (issue 16 item 3): one signed HTTP request per media segment on a
 * keep-alive connection pool, and nothing else. The `minio` client stays the store's client of
 * record (GET, listings, deletes, buckets, manifests, keys); this module sends what
 * `putObjectWithTags` sends through it (the same headers, built by `taggedPutHeaders`), signed by
 * minio's own SigV4 signer, without the client's per-request work: the bucket-region lookup and
 * option objects, lodash header maps, a retry wrapper that also buffers 5xx answers, and the
 * global agent shared with every other request.
 *
 * What goes on the wire (path-style, like `createS3Client`): `PUT /<bucket>/<key>` with
 * `host`, `content-length`, `content-type` and `x-amz-meta-*` from the metadata, `content-md5`,
 * `x-amz-tagging`, `x-amz-date`, `x-amz-content-sha256` (the body's real SHA-256: sealed segments
 * are small, and the store then checks the body twice) and `authorization` (AWS SigV4; minio's
 * signer signs every header but authorization, content-length, content-type and user-agent).
 *
 * Errors are classified as the minio path's are: a non-200 answer is minio's `S3Error` with the
 * S3 error code from the XML body on `code` (`NoSuchBucket`, `AccessDenied`,
 * `InvalidAccessKeyId`, `SignatureDoesNotMatch`, ...; the same status fallbacks as minio when the
 * body has none), socket errors are Node's (`ECONNREFUSED`, ...). Both are what
 * src/storage/s3Errors.ts reads. Unlike minio, a 5xx is not retried here: the caller (the
 * uploader) spools the segment and retries with backoff, and a retry inside a 5 s deadline only
 * delays that.
 */

/** How media segments are PUT: this module, or the minio client (S3Objects' `mediaPut`). */
export type MediaPutPath = 'lean' | 'minio';

export interface LeanPutOptions {
  /** Connections to the store at most (requests beyond wait for a free one). Default 32. */
  maxSockets?: number;
  /**
   * A request whose socket stays silent this long is destroyed (ETIMEDOUT), so a black-holed
   * store cannot hold the bounded pool forever. Callers keep their own, shorter deadline
   * (`S3Objects.timed`); this one only frees the connection. Default 60 000 ms.
   */
  stallMs?: number;
}

export interface LeanPutStats {
  /** PUT requests sent (a stale-connection retry counts twice). */
  requests: number;
  /** TCP (or TLS) connections opened: `requests - connectionsOpened` were reused. */
  connectionsOpened: number;
  /** Requests resent once because a reused keep-alive connection had been closed by the store. */
  staleRetries: number;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const DEFAULT_MAX_SOCKETS = 32;
const DEFAULT_STALL_MS = 60_000;
/** An error body larger than this is not an S3 error document; only its head is kept. */
const MAX_ERROR_BODY = 16 * 1024;
const USER_AGENT = 'optin-lean-put';

/** `YYYYMMDD'T'HHMMSS'Z'`, the x-amz-date form (AWS SigV4, "Handling dates"). */
export function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/**
 * An object key as a SigV4 canonical URI path: every byte but the unreserved characters
 * `A-Z a-z 0-9 - _ . ~` percent-encoded (upper-case hex), `/` kept (AWS SigV4, "canonical
 * request"; S3 does not double-encode). The same as minio's `uriResourceEscape`.
 */
export function encodeKeyPath(key: string): string {
  return encodeURIComponent(key)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%2F/g, '/');
}

const XML_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function xmlField(xml: string, name: string): string | undefined {
  const m = new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml);
  return m?.[1]?.replace(/&(amp|lt|gt|quot|apos);/g, (_, e: string) => XML_ENTITIES[e] ?? '');
}

// minio-js's fallbacks (xml-parser.mjs parseResponseError) for an answer without an XML body.
const STATUS_CODES: Record<number, [string, string]> = {
  301: ['MovedPermanently', 'Moved Permanently'],
  307: ['TemporaryRedirect', 'Are you using the correct endpoint URL?'],
  403: ['AccessDenied', 'Valid and authorized credentials required'],
  404: ['NotFound', 'Not Found'],
  405: ['MethodNotAllowed', 'Method Not Allowed'],
  501: ['MethodNotAllowed', 'Method Not Allowed'],
  503: ['SlowDown', 'Please reduce your request rate.'],
};

/**
 * A refused request as minio's `S3Error`: `code` and `message` from the S3 error document
 * (`<Error><Code>..</Code><Message>..</Message>..</Error>`), its other fields lower-cased as
 * minio sets them (`bucketname`, `key`, `requestid`, `resource`), and the request-id headers.
 */
export function s3ErrorFromAnswer(status: number, headers: IncomingHttpHeaders, body: string): S3Error {
  const fields: Record<string, string> = {};
  if (body.includes('<Error>')) {
    for (const name of ['Code', 'Message', 'BucketName', 'Key', 'RequestId', 'HostId', 'Resource']) {
      const v = xmlField(body, name);
      if (v !== undefined) fields[name.toLowerCase()] = v;
    }
  }
  let code = fields.code || undefined;
  let message = fields.message || undefined;
  if (code === undefined) {
    const byStatus = STATUS_CODES[status];
    const minioCode = headers['x-minio-error-code'];
    const minioDesc = headers['x-minio-error-desc'];
    if (byStatus) [code, message] = byStatus;
    else if (typeof minioCode === 'string' && typeof minioDesc === 'string') [code, message] = [minioCode, minioDesc];
    else code = `HTTP${status}`;
  }
  // minio leaves the message empty when the document has none (RGW sends none for
  // SignatureDoesNotMatch); say at least what was refused.
  const err = new S3Error(message ?? `the store refused the PUT: ${status} ${code}`);
  Object.assign(err, fields, {
    code,
    message: err.message,
    statusCode: status,
    amzRequestid: headers['x-amz-request-id'],
    amzId2: headers['x-amz-id-2'],
    amzBucketRegion: headers['x-amz-bucket-region'],
  });
  return err;
}

function isStaleConnection(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

export class LeanPut {
  readonly #agent: http.Agent;
  readonly #request: typeof http.request;
  /** Host to connect to (IPv6 without brackets) and port. */
  readonly #hostname: string;
  readonly #port: number;
  /** The Host header as minio sends it: host, and `:port` unless the scheme's default. */
  readonly #hostHeader: string;
  readonly #accessKey: string;
  readonly #secretKey: string;
  readonly #region: string;
  readonly #stallMs: number;
  readonly #stats: LeanPutStats = { requests: 0, connectionsOpened: 0, staleRetries: 0 };
  readonly #sockets = new WeakSet<object>();
  #closed = false;

  constructor(cfg: S3Config, options: LeanPutOptions = {}) {
    const url = new URL(cfg.endpoint);
    const tls = url.protocol === 'https:';
    const maxSockets = options.maxSockets ?? DEFAULT_MAX_SOCKETS;
    // Keep-alive with a bounded pool: a segment PUT reuses a warm connection (no TCP or TLS
    // handshake per object), and at most maxSockets are open to the store.
    const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' as const };
    this.#agent = tls ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.#request = tls ? https.request : http.request;
    this.#hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = url.port === '' ? (tls ? 443 : 80) : Number(url.port);
    this.#hostHeader = url.host;
    this.#accessKey = cfg.accessKey;
    this.#secretKey = cfg.secretKey;
    this.#region = cfg.region ?? DEFAULT_REGION;
    this.#stallMs = options.stallMs ?? DEFAULT_STALL_MS;
  }

  stats(): LeanPutStats {
    return { ...this.#stats };
  }

  /** Closes the pooled connections; later PUTs fail. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#agent.destroy();
  }

  /**
   * `putObjectWithTags` on the lean path: the same validation and headers, one request.
   * Resolves with the ETag and version id; rejects with an S3Error or a socket error.
   */
  async putWithTags(
    bucket: string,
    key: string,
    body: Buffer,
    tags: Record<string, string>,
    metadata: Record<string, string> = {},
    options: PutObjectWithTagsOptions = {},
    bodySha256?: string,
  ): Promise<PutObjectResult> {
    return this.put(bucket, key, body, taggedPutHeaders(key, body, tags, metadata, options), bodySha256);
  }

  /**
   * PUT `body` at `bucket/key` with `headers` (lower-case names), signed. `bodySha256`: the body's
   * SHA-256 (hex) where the caller has it already (a sealed segment's, for its manifest), so the
   * body is not hashed twice; the store checks it against what it receives and refuses a mismatch.
   */
  async put(bucket: string, key: string, body: Buffer, headers: Record<string, string>, bodySha256?: string): Promise<PutObjectResult> {
    if (this.#closed) throw new OptinError('STORAGE_UNAVAILABLE', 'the lean PUT path was closed with its store; reopen the store', { retryable: true });
    if (bodySha256 !== undefined && !SHA256_HEX.test(bodySha256)) throw new OptinError('INVALID_INPUT', 'a body digest must be 64 lower-case hex digits (SHA-256)');
    const path = `/${bucket}/${encodeKeyPath(key)}`;
    const sha256 = bodySha256 ?? createHash('sha256').update(body).digest('hex');
    const date = new Date();
    const signed: Record<string, string> = {
      ...headers,
      host: this.#hostHeader,
      'x-amz-date': amzDate(date),
      'x-amz-content-sha256': sha256,
    };
    const authorization = signV4({ protocol: '', method: 'PUT', path, headers: signed }, this.#accessKey, this.#secretKey, this.#region, date, sha256);
    const wire = { ...signed, authorization, 'content-length': String(body.length), 'user-agent': USER_AGENT };
    // A keep-alive connection the store closed while idle fails at once (ECONNRESET/EPIPE on a
    // reused socket): resend once on a fresh one (Node's http docs advise this). Same key, same
    // bytes: idempotent, except for a conditional PUT, which is never resent.
    let answer: Answer;
    try {
      answer = await this.#send(path, wire, body);
    } catch (err) {
      if (!(err instanceof StaleConnection) || headers['if-none-match'] !== undefined) throw err instanceof StaleConnection ? err.cause : err;
      this.#stats.staleRetries++;
      answer = await this.#send(path, wire, body).catch((e: unknown) => {
        throw e instanceof StaleConnection ? e.cause : e;
      });
    }
    if (answer.status !== 200) throw s3ErrorFromAnswer(answer.status, answer.headers, answer.body.toString('utf8'));
    return putResult(answer.headers);
  }

  #send(path: string, headers: Record<string, string>, body: Buffer): Promise<Answer> {
    this.#stats.requests++;
    return new Promise<Answer>((resolve, reject) => {
      const req = this.#request({ agent: this.#agent, host: this.#hostname, port: this.#port, method: 'PUT', path, headers }, (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on('data', (c: Buffer) => {
          // A 200 to a PUT has no body worth keeping; an error's XML document is small.
          if (status !== 200 && kept < MAX_ERROR_BODY) {
            chunks.push(c);
            kept += c.length;
          }
        });
        // Read to the end: only then does the connection go back to the pool.
        res.on('end', () => resolve({ status, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      // Node marks `req.reusedSocket` only when a free socket was waiting, not when a queued
      // request inherits one just freed: the sockets seen before tell reuse exactly.
      let reused = false;
      req.once('socket', (socket) => {
        reused = this.#sockets.has(socket);
        if (!reused) {
          this.#sockets.add(socket);
          this.#stats.connectionsOpened++;
        }
      });
      req.setTimeout(this.#stallMs, () => {
        req.destroy(Object.assign(new Error(`S3 PUT ${path}: no answer within ${this.#stallMs} ms`), { code: 'ETIMEDOUT' }));
      });
      req.on('error', (err) => reject(reused && isStaleConnection(err) ? new StaleConnection(err) : err));
      req.end(body);
    });
  }
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Internal marker: the request failed on a reused keep-alive connection the store had closed. */
class StaleConnection extends Error {
  override readonly cause: Error;
  constructor(cause: Error) {
    super(cause.message);
    this.cause = cause;
  }
}
