import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/**
 * Structured JSON logs. Callers bind pseudonymous ids only (callId,
 * participantId, segment); the redaction list is a second line of defence for
 * fields that must never be printed even by mistake (keys, tokens, audio).
 */
const REDACT = [
  'key', '*.key', 'dataKey', '*.dataKey', 'kek', '*.kek', 'secret', '*.secret', 'token', '*.token',
  'secretKey', '*.secretKey', 'accessKey', '*.accessKey', 'payload', '*.payload', 'audio', '*.audio',
  'authorization', '*.authorization', 'headers.authorization',
];

export function createLogger(level = 'info', destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'optin' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
