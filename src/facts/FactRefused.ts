import { OptinError, type ErrorCode } from '../errors/OptinError.ts';

/**
 * A write the control plane refuses: nothing was changed, and the answer says why. `error` is the
 * machine-readable code of the API body (`{error, message, field?, rule?}`), `field` names the
 * offending input (`participants.1.role`, `callId`, `Idempotency-Key`), `rule` the R6 rule when a
 * schedule is refused. The HTTP status follows from `code`'s row in the error table.
 */
export class FactRefused extends OptinError {
  readonly error: string;
  readonly field: string | undefined;
  readonly rule: string | undefined;

  constructor(code: ErrorCode, error: string, message: string, details: { field?: string; rule?: string } = {}) {
    super(code, message);
    this.name = 'FactRefused';
    this.error = error;
    this.field = details.field;
    this.rule = details.rule;
  }
}
