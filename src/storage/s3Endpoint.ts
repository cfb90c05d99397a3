import { Client, S3Error } from 'minio';
import { OptinError } from '../errors/OptinError.ts';

/**
 * The production S3 client: the endpoint configuration, a minio client for it, and a fail-fast
 * check that the endpoint answers and accepts the keys, with a message naming the fix.
 *
 * The development server launcher (a throwaway Ceph RGW or minio for tests, the demo and the
 * benchmarks) is scripts/s3/devServer.ts, outside src/: production never starts a server.
 */

export interface S3Config {
  /** e.g. `http://127.0.0.1:7480` */
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region?: string;
}

export const DEFAULT_REGION = 'us-east-1';
/** How to point optin at a server; the development launcher's errors say the same. */
export const S3_FIX_HINT = 'set OPTIN_S3_ENDPOINT (with OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY) or run `npm run s3:start`';

/**
 * The settings each client of `createS3Client` was made from, so the store's lean media PUT
 * (LeanPut.ts) reaches the same endpoint with the same keys and region as the client it is given.
 */
const clientConfigs = new WeakMap<Client, Readonly<S3Config>>();

/** The settings `client` was made from, when `createS3Client` made it. */
export function s3ConfigOf(client: Client): Readonly<S3Config> | undefined {
  return clientConfigs.get(client);
}

/** A minio client for `cfg` (path-style: RGW and MinIO on loopback have no virtual hosts). */
export function createS3Client(cfg: S3Config): Client {
  const url = parseEndpoint(cfg.endpoint);
  const useSSL = url.protocol === 'https:';
  const client = new Client({
    endPoint: url.hostname,
    port: url.port === '' ? (useSSL ? 443 : 80) : Number(url.port),
    useSSL,
    accessKey: cfg.accessKey,
    secretKey: cfg.secretKey,
    region: cfg.region ?? DEFAULT_REGION,
    pathStyle: true,
  });
  clientConfigs.set(client, Object.freeze({ ...cfg, region: cfg.region ?? DEFAULT_REGION }));
  return client;
}

function parseEndpoint(endpoint: string): URL {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new OptinError('S3_BAD_ENDPOINT', `S3 endpoint ${JSON.stringify(endpoint)} is not a URL: use e.g. http://127.0.0.1:7480`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || (url.pathname !== '/' && url.pathname !== '')) {
    throw new OptinError('S3_BAD_ENDPOINT', `S3 endpoint ${endpoint} must be http(s)://host[:port] without a path`);
  }
  return url;
}

function errCode(err: unknown): string {
  // fetch() wraps socket errors: the useful code (ECONNREFUSED, ...) is on the cause.
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: unknown };
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  if (typeof e?.code === 'string') return e.code;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'ETIMEDOUT';
  return 'unknown error';
}

/** Any HTTP answer at all, within `timeoutMs`; throws the socket error otherwise. */
export async function httpProbe(url: string, timeoutMs: number): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  await res.arrayBuffer();
  return res.status;
}

const CREDENTIAL_ERRORS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken']);

/**
 * Fails fast, with an OptinError whose message names the fix, when `cfg` does not lead to a
 * working S3 server: `S3_UNREACHABLE` (retryable: nothing answers in `timeoutMs`) or
 * `S3_BAD_CREDENTIALS` (it answers but refuses the keys).
 */
export async function assertS3Reachable(cfg: S3Config, opts: { timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  parseEndpoint(cfg.endpoint);
  try {
    // A bare HTTP probe first: the minio client retries and has no timeout of its own, so a
    // dead endpoint would otherwise cost many seconds before saying anything useful.
    await httpProbe(cfg.endpoint, timeoutMs);
  } catch (err) {
    throw new OptinError('S3_UNREACHABLE', `S3 endpoint ${cfg.endpoint} is unreachable (${errCode(err)}): ${S3_FIX_HINT}`, {
      retryable: true,
      cause: err,
    });
  }
  const client = createS3Client(cfg);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.listBuckets(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
      }),
    ]);
  } catch (err) {
    if (err instanceof S3Error && CREDENTIAL_ERRORS.has(String(err.code))) {
      throw new OptinError(
        'S3_BAD_CREDENTIALS',
        `S3 at ${cfg.endpoint} rejected the credentials (${String(err.code)}): check OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY ` +
          '(for the local test server: eval "$(bash scripts/s3/rgw.sh env)")',
        { cause: err },
      );
    }
    const what = err instanceof S3Error ? String(err.code) : errCode(err);
    throw new OptinError('S3_UNREACHABLE', `S3 endpoint ${cfg.endpoint} does not work as an S3 server (${what}): ${S3_FIX_HINT}`, {
      retryable: true,
      cause: err,
    });
  } finally {
    clearTimeout(timer);
  }
}
