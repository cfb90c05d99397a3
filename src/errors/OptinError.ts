/**
 * The one error type optin throws on purpose. `code` is stable and machine
 * readable; `retryable` says whether trying again can help (a store outage can
 * heal, a wrong key cannot); the message names the fix for a person.
 */
export class OptinError extends Error {
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OptinError';
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

export function isOptinError(err: unknown, code?: string): err is OptinError {
  return err instanceof OptinError && (code === undefined || err.code === code);
}
