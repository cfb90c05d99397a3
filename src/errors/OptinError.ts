import { ERROR_TABLE, type ErrorCode, type ErrorFault, type ErrorKind } from './errorTable.ts';

export type { ErrorCode } from './errorTable.ts';

/**
 * The one error type optin throws on purpose. `code` is a row of the error table
 * (src/errors/errorTable.ts): its kind (and so the HTTP status), whether a retry can help, and
 * whose fault it is come from there. The message names the fix for a person.
 */
export class OptinError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OptinError';
    this.code = code;
    // The table's answer, unless the thrower knows better for this instance (a store's 5xx can
    // heal, its 403 cannot: both are STORAGE_UNAVAILABLE to the caller).
    this.retryable = options.retryable ?? ERROR_TABLE[code].retryable;
  }

  get kind(): ErrorKind {
    return ERROR_TABLE[this.code].kind;
  }

  get fault(): ErrorFault {
    return ERROR_TABLE[this.code].fault;
  }
}

export function isOptinError(err: unknown, code?: ErrorCode): err is OptinError {
  return err instanceof OptinError && (code === undefined || err.code === code);
}
