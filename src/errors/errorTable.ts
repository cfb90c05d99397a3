/**
 * Every error code optin raises on purpose, in one table. Each code says what kind of failure it
 * is, whether trying again can help, and whose fault it is (after LiveKit egress's split between
 * "the destination's fault" and "ours"): an operator's alert and an API's status both follow from
 * the row, never from a switch on strings somewhere else.
 *
 * kind    -> the HTTP status an API answers with (httpStatusOf)
 * fault   -> caller: bad input or a request we refuse; config: the deployment's settings;
 *            dependency: the object store, the database, ffmpeg, the control plane (retry or
 *            fix the dependency); ours: a bug or an invariant we broke.
 */
export type ErrorKind =
  | 'invalid-input'
  | 'unauthenticated'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'gone'
  | 'too-large'
  | 'unprocessable'
  | 'rate-limited'
  | 'unsupported'
  | 'unavailable'
  | 'timeout'
  | 'corrupt'
  | 'config'
  | 'internal';

export type ErrorFault = 'caller' | 'config' | 'dependency' | 'ours';

export interface ErrorRow {
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly fault: ErrorFault;
}

const row = (kind: ErrorKind, fault: ErrorFault, retryable = false): ErrorRow => ({ kind, retryable, fault });

export const ERROR_TABLE = {
  // -- input and requests -----------------------------------------------------------------------
  INVALID_INPUT: row('invalid-input', 'caller'),
  INVALID_ID: row('invalid-input', 'caller'),
  CASE_REF_REQUIRED: row('invalid-input', 'caller'),
  UNAUTHENTICATED: row('unauthenticated', 'caller'),
  ACCESS_DENIED: row('forbidden', 'caller'),
  JOIN_DENIED: row('forbidden', 'caller'),
  /** A call-control token that is forged, expired, reused, for another audience, call or participant. */
  TOKEN_REFUSED: row('unauthenticated', 'caller'),
  ORIGIN_REFUSED: row('forbidden', 'caller'),
  PEER_LIMIT: row('rate-limited', 'caller'),
  CODEC_UNSUPPORTED: row('unsupported', 'caller'),
  // -- configuration ----------------------------------------------------------------------------
  CONFIG_INVALID: row('config', 'config'),
  S3_CONFIG: row('config', 'config'),
  S3_BAD_ENDPOINT: row('config', 'config'),
  S3_BAD_CREDENTIALS: row('config', 'config'),
  KEK_UNKNOWN: row('config', 'config'),
  KEYRING_INVALID: row('config', 'config'),
  WORKER_BIN_MISSING: row('config', 'config'),
  BUNDLE_MISSING: row('config', 'config'),
  SECRET_FILE_UNREADABLE: row('config', 'config'),
  WORKER_START_FAILED: row('unavailable', 'dependency'),
  WRAP_ALG_UNSUPPORTED: row('unsupported', 'config'),
  RETENTION_INVALID: row('invalid-input', 'caller'),
  FFMPEG_MISSING: row('config', 'config'),
  NO_MEDIA_WORKER: row('unavailable', 'dependency', true),
  // -- object store -----------------------------------------------------------------------------
  STORAGE_UNAVAILABLE: row('unavailable', 'dependency', true),
  STORAGE_TIMEOUT: row('timeout', 'dependency', true),
  S3_UNREACHABLE: row('unavailable', 'dependency', true),
  S3_BAD_KEY: row('invalid-input', 'caller'),
  S3_BAD_METADATA: row('invalid-input', 'caller'),
  S3_BAD_TAGS: row('invalid-input', 'caller'),
  OBJECT_LOCKED: row('conflict', 'dependency'),
  STORE_CLOSED: row('conflict', 'caller'),
  SPOOL_CORRUPT: row('corrupt', 'dependency'),
  // the development S3 server launcher (scripts/, tests and the demo)
  S3_PORT_BUSY: row('unavailable', 'dependency'),
  S3_START_FAILED: row('unavailable', 'dependency'),
  S3_START_TIMEOUT: row('timeout', 'dependency'),
  // -- recordings -------------------------------------------------------------------------------
  RECORDING_NOT_FOUND: row('not-found', 'caller'),
  RECORDING_NOT_ACTIVE: row('conflict', 'caller'),
  RECORDING_DELETED: row('gone', 'caller'),
  RECORDING_EXPIRED: row('gone', 'caller'),
  RECORDING_EMPTY: row('conflict', 'caller'),
  PARTICIPANT_UNKNOWN: row('not-found', 'caller'),
  PARTICIPANT_ERASED: row('gone', 'caller'),
  SEGMENT_MISSING: row('corrupt', 'dependency'),
  SEGMENT_OUT_OF_ORDER: row('invalid-input', 'ours'),
  SEGMENT_TOO_LARGE: row('too-large', 'ours'),
  INVALID_SEGMENT: row('invalid-input', 'ours'),
  MANIFEST_INVALID: row('corrupt', 'dependency'),
  /** A manifest whose MAC does not verify: changed by someone without the keyring (or another keyring). */
  MANIFEST_TAMPERED: row('corrupt', 'dependency'),
  // -- crypto -----------------------------------------------------------------------------------
  DATA_KEY_MISSING: row('gone', 'caller'),
  DATA_KEY_INVALID: row('corrupt', 'dependency'),
  KEY_UNWRAP_FAILED: row('corrupt', 'dependency'),
  SEAL_INPUT_INVALID: row('invalid-input', 'ours'),
  SEAL_AAD_INVALID: row('invalid-input', 'ours'),
  SEGMENT_AUTH_FAILED: row('corrupt', 'dependency'),
  /** Metadata sealed by the keyring (Keyring.seal) that does not open: altered, moved or other key material. */
  SEALED_AUTH_FAILED: row('corrupt', 'dependency'),
  // -- audit ------------------------------------------------------------------------------------
  AUDIT_UNAVAILABLE: row('unavailable', 'dependency', true),
  AUDIT_SPOOL_FULL: row('unavailable', 'dependency', true),
  AUDIT_WRITE_FAILED: row('unavailable', 'dependency', true),
  AUDIT_BUCKET_MISSING: row('config', 'config'),
  AUDIT_INVALID_ENTRY: row('invalid-input', 'ours'),
  AUDIT_ANCHOR_REFUSED: row('conflict', 'caller'),
  // -- access -----------------------------------------------------------------------------------
  RENDER_TOO_LARGE: row('too-large', 'caller'),
  EXTRACT_TOO_LARGE: row('too-large', 'caller'),
  EXTRACT_STORE_FULL: row('unavailable', 'ours', true),
  // -- media ------------------------------------------------------------------------------------
  OGG_MALFORMED: row('corrupt', 'dependency'),
  OGG_JOIN_MISMATCH: row('invalid-input', 'caller'),
  OGG_JOIN_EMPTY: row('invalid-input', 'caller'),
  OGG_INVALID_OPTIONS: row('invalid-input', 'ours'),
  OGG_INVALID_TAG: row('invalid-input', 'ours'),
  OGG_BAD_DURATION: row('invalid-input', 'ours'),
  OGG_WRITER_FINISHED: row('conflict', 'ours'),
  OPUS_SILENCE_INVALID: row('invalid-input', 'ours'),
  OPUS_FRAME_TOO_LONG: row('invalid-input', 'ours'),
  OPUS_ENCODE_FAILED: row('internal', 'ours'),
  OPUS_ENCODER_CLOSED: row('conflict', 'ours'),
  OPUS_CTL_FAILED: row('internal', 'ours'),
  JITTER_INVALID_OPTIONS: row('invalid-input', 'ours'),
  SEGMENTER_INVALID_OPTIONS: row('invalid-input', 'ours'),
  SEGMENTER_CLOSED: row('conflict', 'ours'),
  SEGMENTER_BAD_ITEM: row('invalid-input', 'ours'),
  OPEN_SEGMENT_CORRUPT: row('corrupt', 'dependency'),
  TRANSCODER_INVALID_OPTIONS: row('invalid-input', 'ours'),
  TRANSCODER_CLOSED: row('conflict', 'ours'),
  TRANSCODER_OVERLOADED: row('unavailable', 'ours', true),
  TRANSCODER_BAD_FRAME: row('invalid-input', 'ours'),
  TRANSCODER_BAD_STREAM: row('invalid-input', 'ours'),
  TRANSCODER_FAILED: row('internal', 'ours'),
  TRANSCODER_ENCODE_FAILED: row('internal', 'ours'),
  G711_OUTPUT_TOO_SHORT: row('invalid-input', 'ours'),
  RTP_CAPTURE_INVALID: row('invalid-input', 'caller'),
  RTP_BUILD_INVALID: row('invalid-input', 'caller'),
  FFMPEG_FAILED: row('internal', 'dependency'),
  // -- calls and the recorder -------------------------------------------------------------------
  CALL_EXISTS: row('conflict', 'caller'),
  CALL_CLOSED: row('conflict', 'caller'),
  LEG_EXISTS: row('conflict', 'caller'),
  RECORDER_DRAINING: row('unavailable', 'ours', true),
  // -- control stream and the cap ---------------------------------------------------------------
  CONTROL_BAD_URL: row('config', 'config'),
  CONTROL_NOT_FRESH: row('unavailable', 'dependency', true),
  CONTROL_BAD_REPORT: row('invalid-input', 'ours'),
  CONTROL_BAD_NONCE: row('invalid-input', 'caller'),
  CONTROL_UNREACHABLE: row('unavailable', 'dependency', true),
  CONTROL_CAP_UNKNOWN: row('unavailable', 'dependency', true),
  // -- control plane: database, fact ingest, ledgers (src/db, src/facts, src/erasure, src/caps) --
  DB_UNAVAILABLE: row('unavailable', 'dependency', true),
  DB_MIGRATION_FAILED: row('internal', 'ours'),
  DB_MIGRATION_CHANGED: row('config', 'config'),
  PG_MISSING: row('config', 'config'),
  PG_START_FAILED: row('unavailable', 'dependency'),
  FACT_INVALID: row('invalid-input', 'caller'),
  FACT_UNKNOWN_CALL: row('not-found', 'caller'),
  FACT_UNKNOWN_PARTICIPANT: row('not-found', 'caller'),
  FACT_DUPLICATE_CALL: row('conflict', 'caller'),
  FACT_DUPLICATE_PARTICIPANT: row('conflict', 'caller'),
  FACT_CALL_ENDED: row('conflict', 'caller'),
  FACT_NOT_A_CUSTOMER: row('unprocessable', 'caller'),
  FACT_STALE_EVIDENCE: row('conflict', 'caller'),
  SCHEDULE_REJECTED: row('unprocessable', 'caller'),
  IDEMPOTENCY_KEY_MISSING: row('invalid-input', 'caller'),
  IDEMPOTENCY_KEY_REUSED: row('unprocessable', 'caller'),
  BODY_TOO_LARGE: row('too-large', 'caller'),
  RATE_LIMITED: row('rate-limited', 'caller', true),
  ERASURE_NOT_FOUND: row('not-found', 'caller'),
  DELETION_NOT_FOUND: row('not-found', 'caller'),
  STORE_NOT_CONFIGURED: row('config', 'config'),
  // -- SIP and SIPREC (src/sip, src/siprec) ----------------------------------------------------
  SIP_TRANSPORT_FAILED: row('unavailable', 'config'),
  SIP_SERVER_CLOSED: row('conflict', 'caller'),
  SIPREC_BAD_BODY: row('invalid-input', 'caller'),
  SIPREC_BAD_METADATA: row('invalid-input', 'caller'),
  SIPREC_BAD_SDP: row('invalid-input', 'caller'),
  SIPREC_MAPPING_FAILED: row('invalid-input', 'caller'),
  MEDIA_PORTS_EXHAUSTED: row('unavailable', 'ours', true),
  MEDIA_PLANE_CLOSED: row('conflict', 'caller'),
  SRTP_INVALID_KEY: row('invalid-input', 'caller'),
  // -- the people's side: access API, web app, sign-in (src/access, src/identity, src/api) ----------
  FFMPEG_BUSY: row('unavailable', 'ours', true),
  FFMPEG_TIMEOUT: row('timeout', 'ours', true),
  SIGN_IN_NOT_CONFIGURED: row('unavailable', 'config'),
  SIGN_IN_FAILED: row('unauthenticated', 'caller'),
  IDP_UNAVAILABLE: row('unavailable', 'dependency', true),
  CSRF_REJECTED: row('forbidden', 'caller'),
  EXTRACT_NOT_FOUND: row('not-found', 'caller'),
  EXTRACT_WITHDRAWN: row('gone', 'caller'),
  // -- anything else ----------------------------------------------------------------------------
  INTERNAL: row('internal', 'ours'),
} as const satisfies Record<string, ErrorRow>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_TABLE, code);
}

const STATUS: Readonly<Record<ErrorKind, number>> = {
  'invalid-input': 400,
  unauthenticated: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  gone: 410,
  'too-large': 413,
  unprocessable: 422,
  'rate-limited': 429,
  unsupported: 415,
  unavailable: 503,
  timeout: 503,
  corrupt: 500,
  config: 500,
  internal: 500,
};

/** The HTTP status for an error of this code: the one place APIs take it from. */
export function httpStatusOf(code: ErrorCode): number {
  return STATUS[ERROR_TABLE[code].kind];
}
