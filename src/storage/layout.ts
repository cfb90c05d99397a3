import { OptinError } from '../errors/OptinError.ts';
import { assertId } from '../ids/ids.ts';

export { assertId } from '../ids/ids.ts';

/**
 * Where things live in the object store (DESIGN §5, R2). Object keys and tags carry only
 * pseudonymous ids and timestamps: nothing a person could be recognised from.
 *
 *   media bucket  rec/<recordingId>/<participantId>/<segment:6>.ogg.sealed   sealed Ogg Opus
 *   keys bucket   keys/<recordingId>/<participantId>.json                    wrapped data key
 *                 manifests/<recordingId>.json                               sealed recording metadata
 *   audit bucket  (owned by src/audit)
 *
 * The full table (what each object holds, sealed or not, tags, lifetimes) is docs/storage.md,
 * "Object layout"; keep it in step with this file.
 */

/** Six digits in the object key, so lexical order is segment order. */
export const MAX_SEGMENT = 999_999;

export const MEDIA_PREFIX = 'rec/';
export const KEYS_PREFIX = 'keys/';
export const MANIFESTS_PREFIX = 'manifests/';

export interface BucketNames {
  media: string;
  keys: string;
  audit: string;
}

export const DEFAULT_BUCKETS: Readonly<BucketNames> = Object.freeze({
  media: 'optin-media',
  keys: 'optin-keys',
  audit: 'optin-audit',
});

/** S3 bucket naming rules (lower case, digits, hyphens, 3..63, starts/ends alphanumeric). */
const BUCKET_RE = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;

/**
 * Bucket names from configuration, defaults in one place. `prefix` (e.g. `t-3f9a-`) namespaces all
 * three so test files can share one S3 server without seeing each other's objects.
 */
export function bucketNames(options: Partial<BucketNames> & { prefix?: string } = {}): BucketNames {
  const prefix = options.prefix ?? '';
  const out: BucketNames = {
    media: prefix + (options.media ?? DEFAULT_BUCKETS.media),
    keys: prefix + (options.keys ?? DEFAULT_BUCKETS.keys),
    audit: prefix + (options.audit ?? DEFAULT_BUCKETS.audit),
  };
  for (const [role, name] of Object.entries(out)) {
    if (!BUCKET_RE.test(name) || name.includes('--')) {
      throw new OptinError('CONFIG_INVALID', `storage.buckets.${role}: ${JSON.stringify(name)} is not a valid S3 bucket name (3-63 chars of a-z, 0-9, single hyphens)`);
    }
  }
  if (new Set(Object.values(out)).size !== 3) {
    throw new OptinError('CONFIG_INVALID', 'storage.buckets: media, keys and audit must be three different buckets (R2: keys never sit beside media)');
  }
  return out;
}

export function assertSegment(value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_SEGMENT) {
    throw new OptinError('INVALID_SEGMENT', `segment must be an integer in 0..${MAX_SEGMENT}; got ${String(value)}`);
  }
}

export function mediaPrefix(recordingId: string, participantId?: string): string {
  assertId('recordingId', recordingId);
  if (participantId === undefined) return `${MEDIA_PREFIX}${recordingId}/`;
  assertId('participantId', participantId);
  return `${MEDIA_PREFIX}${recordingId}/${participantId}/`;
}

export function mediaObjectKey(recordingId: string, participantId: string, segment: number): string {
  assertSegment(segment);
  return `${mediaPrefix(recordingId, participantId)}${String(segment).padStart(6, '0')}.ogg.sealed`;
}

const MEDIA_KEY_RE = /^rec\/([A-Za-z0-9_-]{1,64})\/([A-Za-z0-9_-]{1,64})\/(\d{6})\.ogg\.sealed$/;

export function parseMediaObjectKey(key: string): { recordingId: string; participantId: string; segment: number } | null {
  const m = MEDIA_KEY_RE.exec(key);
  if (m === null) return null;
  return { recordingId: m[1]!, participantId: m[2]!, segment: Number(m[3]) };
}

export function dataKeyPrefix(recordingId: string): string {
  assertId('recordingId', recordingId);
  return `${KEYS_PREFIX}${recordingId}/`;
}

export function dataKeyObjectKey(recordingId: string, participantId: string): string {
  assertId('participantId', participantId);
  return `${dataKeyPrefix(recordingId)}${participantId}.json`;
}

const DATA_KEY_KEY_RE = /^keys\/([A-Za-z0-9_-]{1,64})\/([A-Za-z0-9_-]{1,64})\.json$/;

export function parseDataKeyObjectKey(key: string): { recordingId: string; participantId: string } | null {
  const m = DATA_KEY_KEY_RE.exec(key);
  return m === null ? null : { recordingId: m[1]!, participantId: m[2]! };
}

export function manifestObjectKey(recordingId: string): string {
  assertId('recordingId', recordingId);
  return `${MANIFESTS_PREFIX}${recordingId}.json`;
}

const MANIFEST_KEY_RE = /^manifests\/([A-Za-z0-9_-]{1,64})\.json$/;

export function parseManifestObjectKey(key: string): string | null {
  const m = MANIFEST_KEY_RE.exec(key);
  return m === null ? null : m[1]!;
}

/** Seconds in a day, for S3 lifecycle rules (which count whole days). */
export const DAY_SECONDS = 86_400;
/** R8: retention is at most 30 days, configurable lower, never higher. */
export const MAX_RETENTION_SECONDS = 30 * DAY_SECONDS;

/** `training-30d` for whole days, else `training-<n>s` (short retentions in tests). */
export function retentionClass(retentionSeconds: number): string {
  return retentionSeconds % DAY_SECONDS === 0
    ? `training-${retentionSeconds / DAY_SECONDS}d`
    : `training-${retentionSeconds}s`;
}

/** S3 lifecycle expiry is in whole days: round up (never expire early), at least 1. */
export function lifecycleDays(retentionSeconds: number): number {
  return Math.max(1, Math.ceil(retentionSeconds / DAY_SECONDS));
}

export const TAG_EXPIRES_AT = 'expires-at';
export const TAG_RETENTION_CLASS = 'retention-class';
export const TAG_RECORDING = 'recording';

/**
 * Tags on every media object: when it must be gone (ISO 8601 UTC, whole seconds: the characters
 * S3 allows in tag values), the retention class, and the pseudonymous recording id.
 */
export function mediaTags(input: { recordingId: string; expiresAtMs: number; retentionSeconds: number }): Record<string, string> {
  assertId('recordingId', input.recordingId);
  return {
    [TAG_EXPIRES_AT]: isoSeconds(input.expiresAtMs),
    [TAG_RETENTION_CLASS]: retentionClass(input.retentionSeconds),
    [TAG_RECORDING]: input.recordingId,
  };
}

/** ISO 8601 without milliseconds; rounds UP so a tag never claims an earlier expiry than the truth. */
export function isoSeconds(ms: number): string {
  return new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}
