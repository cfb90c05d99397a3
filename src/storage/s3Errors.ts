import { OptinError } from '../errors/OptinError.ts';

/**
 * How the S3 client reports an error, read in one place: the S3 error code (`NoSuchKey`, ...) is on
 * `err.code` for answers from the store.
 */
export function s3ErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The object (or the version asked for) is not there: a normal answer, not an outage. */
export function isNotFound(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchVersion';
}

/** For logs: the S3 or socket error code (ECONNREFUSED, SlowDown, ...) or else the message. */
export function describeS3Error(err: unknown): string {
  if (err instanceof Error) return (err as Error & { code?: string }).code ?? err.message;
  return String(err);
}

/** Anything not an OptinError from S3 traffic (network down, timeout, 5xx) as a retryable STORAGE_UNAVAILABLE. */
export function storeError(err: unknown, what: string): OptinError {
  if (err instanceof OptinError) return err;
  return new OptinError('STORAGE_UNAVAILABLE', `object store: ${what} failed (${describeS3Error(err)}); check the S3 endpoint`, { retryable: true, cause: err });
}
