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
