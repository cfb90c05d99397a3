import { randomBytes } from 'node:crypto';
import type { Client, ObjectLockInfo } from 'minio';
import { mapLimit } from '../async/promises.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { putObjectWithTags, type PutObjectLock } from '../storage/S3Objects.ts';
import {
  ENTRY_VERSION,
  GENESIS_HASH,
  checkEntry,
  hashEntry,
  isGenuineHead,
  isHeadShape,
  missingStreamReport,
  signHead,
  verifyStream,
  type AuditEntry,
  type AuditRefs,
  type ChainBreak,
  type JsonValue,
  type StoredEntry,
  type StoredHead,
  type StreamAnchor,
  type StreamHead,
  type StreamReport,
} from './chain.ts';
import { ID_PATTERN, isId } from '../ids/ids.ts';
import { isNotFound, s3ErrorCode } from '../storage/s3Errors.ts';

export type { AuditEntry, AuditRefs, ChainBreak, StreamAnchor, StreamReport } from './chain.ts';

/**
 * Append-only, hash-chained, keyed, tamper-evident audit trail in the audit bucket (R11,
 * docs/rules.md "Audit").
 *
 * Layout (one object per entry, so an entry is written once and never rewritten):
 *   streams/<writerId>/audit/<seq, 12 digits>.json   entry `seq` of writer `writerId`'s chain
 *   heads/<writerId>.json                            that chain's last seq and hash, signed,
 *                                                    rewritten after EVERY append
 *
 * Several writers: appends of one process go through a promise queue, so its chain is strictly
 * sequential. Processes do not share a chain: each writes its own stream (writerId, e.g. the
 * node id, unique among live processes), and `verify()` checks every stream separately. Entry
 * objects are created with `If-None-Match: *`; should two processes share a writerId anyway,
 * the loser of a race re-reads the tail and appends after the winner instead of overwriting it.
 *
 * What protects it (each closes a hole the others leave):
 * - the HMAC key (required; the same for every writer and the verifier, never in the store):
 *   someone with the recorders' store credentials cannot recompute a consistent chain or head;
 * - the store: a principal of its own that can put but not delete (docker/minio/
 *   optin-audit-policy.json), object lock in COMPLIANCE mode where the bucket has it (nobody,
 *   root included, can remove a version before its retention ends), versioning: `verify()`
 *   reads every version, so an overwritten or deleted entry, and a head put back to an earlier
 *   state, are reported even though the latest objects look consistent;
 * - the control plane: it registers every writer stream and anchors their head hashes in its
 *   database (src/audit/anchors.ts), so a stream deleted entirely (all versions, where the store
 *   allows it) or a chain cut back below an anchored position is a break too.
 *
 * A crash between a writer's entry and its head leaves entries after the head; the writer's
 * next start rewrites the head, and verify() notes (does not fail) such a tail.
 */

export interface AuditInput {
  /** Dotted lowercase, e.g. 'gate.transition', 'access.play', 'deletion', 'recording.expired'. */
  type: string;
  /** Pseudonymous id of who acted, or 'system'. */
  actor: string;
  /** e.g. 'agent', 'team-lead', 'dpo', 'extract-operator', 'operator', 'system'. */
  role: string;
  /** Why: 'coaching', 'training', 'subject-access', 'retention', 'agent-request', ... (no free text about people). */
  purpose: string;
  refs?: AuditRefs;
  /** Same as `refs`, the shape src/storage/types.ts's AuditSink sends. Merged into refs. */
  subjects?: { callId?: string; recordingId?: string; participantId?: string; subjectId?: string; subjectIds?: string[] };
  /** JSON-serialisable facts: no personal data, no keys, no audio. */
  details?: object;
}

export interface AuditListQuery {
  /** Inclusive lower bound on `at`. */
  from?: Date | string;
  /** Exclusive upper bound on `at`. */
  to?: Date | string;
  type?: string;
  /** Only this writer's stream. */
  stream?: string;
}

export interface AuditVerifyResult {
  ok: boolean;
  /** Entries that verified, all streams together. */
  entries: number;
  /** The first break found (streams in name order). */
  brokenAt?: ChainBreak;
  streams: StreamReport[];
  /** Whether the expected streams and anchors of the control plane were part of the check. */
  registryChecked: boolean;
  /** Whether the store answered version listings (false: rewrites are caught by the chain and anchors only). */
  versionsChecked: boolean;
}

/** What the control plane knows of one writer stream (src/audit/anchors.ts). */
export interface ExpectedStream {
  stream: string;
  anchors: StreamAnchor[];
}

export interface AuditRetention {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  /** Days (fractions allowed, for tests). */
  days: number;
}

export interface AuditTrailOptions {
  /** A client with the AUDIT principal's credentials (put and read, never delete), or the store's. */
  client: Client;
  bucket: string;
  /** This process's stream: stable across restarts, unique among live processes (e.g. the node id). */
  writerId: string;
  logger?: Logger;
  /** HMAC-SHA256 key (>= 32 bytes), the same for every writer and the verifier (src/audit/auditKey.ts). */
  hmacKey: Buffer;
  /**
   * Object-lock retention per entry and head version, used only when the bucket has object lock.
   * Default: the bucket's own default retention if it has one, else COMPLIANCE for 400 days.
   * `false`: never send retention headers.
   */
  retention?: AuditRetention | false;
  /** Create the bucket (with object lock) when missing. For tests and the demo; production provisions it. */
  createBucket?: boolean;
  now?: () => Date;
}

/** One head as the anchoring pass reads it: genuine (signature checked) or not. */
export interface CurrentHead {
  stream: string;
  seq: number;
  hash: string;
  at: string;
  genuine: boolean;
}

const TYPE_RE = /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$/;
const ROLE_RE = /^[a-z][a-z0-9_-]{0,31}$/;
// Purposes are short codes or a short reason; printable ASCII, no control characters.
const PURPOSE_RE = /^[A-Za-z0-9][\x20-\x7e]{0,127}$/;
const DEFAULT_RETENTION: AuditRetention = { mode: 'COMPLIANCE', days: 400 };
/** Largest `details` of one entry; bigger ones (a long recording's deletion receipt) are split across entries. */
export const MAX_DETAILS_BYTES = 256 * 1024;
/** Room left in each part for the part marker and the base fields. */
const PART_OVERHEAD_BYTES = 1024;
/** A bound on one append's parts (64 MiB of details): anything larger is a bug, not a receipt. */
const MAX_PARTS = 256;
/**
 * Field names whose value is redacted wherever they appear in `details`: a second line of
 * defence against key material, credentials, audio or obvious personal data reaching an
 * append-only store where it could never be erased again. Matched case-insensitively.
 */
const FORBIDDEN_FIELDS = new Set([
  'key', 'secret', 'secretkey', 'accesskey', 'token', 'password', 'passphrase', 'authorization', 'datakey', 'kek', 'dek',
  'wrappedkey', 'plaintext', 'audio', 'pcm', 'payload', 'name', 'email', 'phone', 'msisdn', 'address',
]);
const SEQ_DIGITS = 12;
const PUT_RETRIES = 3;

function pad(seq: number): string {
  return String(seq).padStart(SEQ_DIGITS, '0');
}

function streamPrefix(stream: string): string {
  return `streams/${stream}/audit/`;
}

function entryKey(stream: string, seq: number): string {
  return `${streamPrefix(stream)}${pad(seq)}.json`;
}

function headKey(stream: string): string {
  return `heads/${stream}.json`;
}

function badInput(message: string): OptinError {
  return new OptinError('AUDIT_INVALID_ENTRY', message);
}

async function readBody(client: Client, bucket: string, key: string, versionId?: string): Promise<Buffer | null> {
  try {
    const stream = await client.getObject(bucket, key, versionId !== undefined && versionId !== 'null' ? { versionId } : {});
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
    return Buffer.concat(chunks);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

async function listKeys(client: Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const item of client.listObjectsV2(bucket, prefix, true) as AsyncIterable<{ name?: string }>) {
    if (item.name) keys.push(item.name);
  }
  return keys;
}

/** Plain JSON copy of `details`, with forbidden fields and binary values redacted. */
function sanitizeDetails(details: object | undefined, redacted: string[]): { [key: string]: JsonValue } {
  if (details === undefined) return {};
  if (typeof details !== 'object' || details === null || Array.isArray(details)) throw badInput('details must be a JSON object');
  const text = JSON.stringify(details, function replacer(this: unknown, field: string, value: unknown) {
    if (field !== '' && FORBIDDEN_FIELDS.has(field.toLowerCase())) {
      redacted.push(field);
      return '[redacted]';
    }
    // Buffers arrive here already converted by their toJSON (to {type:'Buffer',data}).
    const raw = (this as Record<string, unknown>)[field];
    if (Buffer.isBuffer(raw) || ArrayBuffer.isView(raw)) {
      redacted.push(field);
      return '[redacted binary]';
    }
    if (typeof value === 'bigint') return value.toString();
    return value;
  });
  return JSON.parse(text) as { [key: string]: JsonValue };
}

type JsonObject = { [key: string]: JsonValue };

function jsonBytes(v: JsonValue): number {
  return Buffer.byteLength(JSON.stringify(v));
}

/** The path of the largest array in `value` (by its JSON size), or undefined. */
function largestArray(value: JsonValue, path: string[] = []): { path: string[]; bytes: number } | undefined {
  let best: { path: string[]; bytes: number } | undefined;
  if (Array.isArray(value)) best = { path, bytes: jsonBytes(value) };
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const found = largestArray(v, [...path, k]);
      if (found !== undefined && (best === undefined || found.bytes > best.bytes)) best = found;
    }
  }
  return best;
}

function withArrayAt(value: JsonObject, path: string[], items: JsonValue[]): JsonObject {
  const copy = structuredClone(value);
  let node: JsonObject = copy;
  for (const k of path.slice(0, -1)) node = node[k] as JsonObject;
  node[path.at(-1)!] = items;
  return copy;
}

/**
 * Splits `details` that exceed one entry into parts, never dropping any of it (a seven-hour
 * two-party deletion receipt lists some 5,000 objects, about 300 KiB). The largest array is shared
 * out over the parts, each part keeping every other field, so each is readable on its own; each
 * carries `split: {group, index, of, path}`. Without such an array, the JSON text itself is cut
 * (`split.encoding: 'json-text'`, the parts' `text` joined in index order is the details).
 */
export function splitDetails(details: JsonObject, maxBytes = MAX_DETAILS_BYTES, group = randomBytes(8).toString('hex')): JsonObject[] {
  if (jsonBytes(details) <= maxBytes) return [details];
  const budget = maxBytes - PART_OVERHEAD_BYTES;
  const arr = largestArray(details);
  const base = arr === undefined || arr.path.length === 0 ? undefined : withArrayAt(details, arr.path, []);
  let parts: JsonObject[] | undefined;
  if (arr !== undefined && base !== undefined && jsonBytes(base) < budget / 2) {
    let node: JsonValue = details;
    for (const k of arr.path) node = (node as JsonObject)[k]!;
    const items = node as JsonValue[];
    const baseBytes = jsonBytes(base);
    const chunks: JsonValue[][] = [[]];
    let size = baseBytes;
    for (const item of items) {
      const b = jsonBytes(item) + 1;
      if (baseBytes + b > budget) {
        parts = undefined;
        chunks.length = 0;
        break;
      }
      if (size + b > budget && chunks.at(-1)!.length > 0) {
        chunks.push([]);
        size = baseBytes;
      }
      chunks.at(-1)!.push(item);
      size += b;
    }
    if (chunks.length > 0) {
      let from = 0;
      parts = chunks.map((chunk, i) => {
        const part = withArrayAt(details, arr.path, chunk);
        part.split = { group, index: i + 1, of: chunks.length, path: arr.path.join('.'), items: [from, from + chunk.length], total: items.length };
        from += chunk.length;
        return part;
      });
    }
  }
  if (parts === undefined) {
    const text = JSON.stringify(details);
    // A UTF-16 unit is at most 3 bytes of UTF-8 (a surrogate pair 4 for 2 units): budget/3 units fit.
    const step = Math.floor(budget / 3);
    const pieces: string[] = [];
    for (let at = 0; at < text.length; ) {
      let end = Math.min(text.length, at + step);
      const last = text.charCodeAt(end - 1);
      if (end < text.length && last >= 0xd800 && last <= 0xdbff) end -= 1; // never cut a surrogate pair
      pieces.push(text.slice(at, end));
      at = end;
    }
    parts = pieces.map((text, i) => ({ split: { group, index: i + 1, of: pieces.length, encoding: 'json-text' }, text }));
  }
  if (parts.length > MAX_PARTS) throw badInput(`details of ${jsonBytes(details)} bytes would take ${parts.length} entries (more than ${MAX_PARTS}): store bulky facts elsewhere and reference them`);
  return parts;
}

function validateRefs(input: AuditInput): AuditRefs {
  const merged = { ...input.subjects, ...input.refs };
  const refs: AuditRefs = {};
  for (const name of ['callId', 'recordingId', 'participantId', 'subjectId'] as const) {
    const v = merged[name];
    if (v === undefined) continue;
    if (!isId(v)) throw badInput(`refs.${name} must be a pseudonymous id (1-64 of A-Z a-z 0-9 _ -, not a phone number or e-mail address)`);
    refs[name] = v;
  }
  if (merged.subjectIds !== undefined) {
    if (!Array.isArray(merged.subjectIds) || !merged.subjectIds.every((s) => isId(s))) {
      throw badInput('refs.subjectIds must be pseudonymous ids');
    }
    if (merged.subjectIds.length > 0) refs.subjectIds = [...new Set(merged.subjectIds)].sort();
  }
  return refs;
}

interface Tail {
  seq: number;
  hash: string;
}

type Prepared = Omit<AuditEntry, 'seq' | 'at' | 'prevHash' | 'hash'>;

/** One stored version of an object, as a version listing gives it. */
interface ObjectVersion {
  key: string;
  versionId: string | undefined;
  deleteMarker: boolean;
  latest: boolean;
  lastModified: number;
  /** Position in the listing (S3 lists a key's versions newest first). */
  order: number;
}

export class AuditTrail {
  readonly bucket: string;
  readonly writerId: string;
  readonly #client: Client;
  readonly #logger: Logger | undefined;
  readonly #key: Buffer;
  readonly #now: () => Date;
  /** Retention sent with each entry and head; null when the bucket has no lock or applies its default. */
  readonly #retention: AuditRetention | null;
  /** Where this writer's chain ends; null until loaded (lazily, on the first append). */
  #tail: Tail | null = null;
  /** The in-process queue: each append starts after the previous one settled. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: AuditTrailOptions, retention: AuditRetention | null) {
    this.bucket = opts.bucket;
    this.writerId = opts.writerId;
    this.#client = opts.client;
    this.#logger = opts.logger?.child({ component: 'audit', writerId: opts.writerId });
    this.#key = opts.hmacKey;
    this.#now = opts.now ?? (() => new Date());
    this.#retention = retention;
  }

  /** Checks the bucket (creating it when asked) and finds out whether it has object lock. */
  static async open(opts: AuditTrailOptions): Promise<AuditTrail> {
    if (!ID_PATTERN.test(opts.writerId)) throw new OptinError('CONFIG_INVALID', 'AuditTrail: writerId must be 1-64 of A-Z a-z 0-9 _ -');
    if (!Buffer.isBuffer(opts.hmacKey) || opts.hmacKey.length < 32) {
      throw new OptinError('CONFIG_INVALID', 'AuditTrail: the audit HMAC key is required, at least 32 bytes (OPTIN_AUDIT_HMAC_KEY, e.g. `openssl rand -hex 32`)');
    }
    const { client, bucket } = opts;
    if (!(await client.bucketExists(bucket))) {
      if (!opts.createBucket) {
        throw new OptinError('AUDIT_BUCKET_MISSING', `audit bucket ${bucket} does not exist: create it (with object lock) or set the audit bucket name in the configuration`);
      }
      await client.makeBucket(bucket, 'us-east-1', { ObjectLocking: true }).catch(async (err: unknown) => {
        // A store without object lock still gets a working (if less protected) audit bucket.
        if (s3ErrorCode(err) === 'BucketAlreadyOwnedByYou') return;
        opts.logger?.warn({ bucket, code: s3ErrorCode(err) }, 'audit bucket without object lock');
        await client.makeBucket(bucket);
      });
    }
    let retention: AuditRetention | null = null;
    let locked = false;
    try {
      // (cast: minio 8 declares a void-returning overload ahead of the Promise one)
      const lock = await (client.getObjectLockConfig(bucket) as unknown as Promise<ObjectLockInfo>);
      locked = 'objectLockEnabled' in lock && lock.objectLockEnabled === 'Enabled';
      const bucketDefault = 'mode' in lock && Boolean(lock.mode);
      if (locked && opts.retention !== false) retention = opts.retention ?? (bucketDefault ? null : DEFAULT_RETENTION);
    } catch {
      // No lock configuration (or a store without object lock): entries rely on the chain, versions and anchors.
    }
    if (!locked) opts.logger?.warn({ bucket }, 'audit bucket has no object lock: entries can be deleted by whoever may delete in it (use a lock-enabled bucket and the audit principal)');
    return new AuditTrail(opts, retention);
  }

  /**
   * Appends one entry to this writer's chain; resolves once the entry (and head) are stored.
   * Details larger than one entry are split over consecutive entries (see splitDetails); the
   * first is returned.
   */
  append(input: AuditInput): Promise<AuditEntry> {
    // Validation happens before queueing: a bad entry fails its caller alone.
    let prepared: Prepared[];
    try {
      prepared = this.#prepare(input);
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.#queue.then(async () => {
      let first: AuditEntry | undefined;
      for (const p of prepared) {
        const entry = await this.#appendNow(p);
        first ??= entry;
      }
      return first!;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  #prepare(input: AuditInput): Prepared[] {
    if (typeof input.type !== 'string' || input.type.length > 64 || !TYPE_RE.test(input.type)) {
      throw badInput('type must be dotted lowercase, e.g. "access.play"');
    }
    if (!isId(input.actor)) throw badInput('actor must be a pseudonymous id or "system"');
    if (typeof input.role !== 'string' || !ROLE_RE.test(input.role)) throw badInput('role must be a lowercase role name, e.g. "team-lead"');
    if (typeof input.purpose !== 'string' || !PURPOSE_RE.test(input.purpose)) throw badInput('purpose must be 1-128 printable ASCII characters');
    const redacted: string[] = [];
    const details = sanitizeDetails(input.details, redacted);
    if (redacted.length > 0) {
      // Redact rather than refuse: losing the audit entry would be worse than losing the field.
      this.#logger?.warn({ type: input.type, fields: [...new Set(redacted)] }, 'audit details: forbidden fields redacted');
    }
    const refs = validateRefs(input);
    const parts = splitDetails(details);
    if (parts.length > 1) this.#logger?.info({ type: input.type, parts: parts.length }, 'audit details split over several entries');
    return parts.map((d) => ({
      v: ENTRY_VERSION,
      stream: this.writerId,
      type: input.type,
      actor: input.actor,
      role: input.role,
      purpose: input.purpose,
      refs,
      details: d,
      alg: 'hmac-sha256',
    }));
  }

  async #appendNow(prepared: Prepared): Promise<AuditEntry> {
    for (let attempt = 1; ; attempt++) {
      this.#tail ??= await this.#loadTail();
      const base = { ...prepared, seq: this.#tail.seq + 1, at: this.#now().toISOString(), prevHash: this.#tail.hash };
      const entry: AuditEntry = { ...base, hash: hashEntry(base, this.#key) };
      try {
        await this.#put(entryKey(this.writerId, entry.seq), entry, true);
      } catch (err) {
        // Whatever happened, the store may now hold more than we know: re-read before the next try.
        this.#tail = null;
        if (s3ErrorCode(err) === 'PreconditionFailed' && attempt < PUT_RETRIES) {
          this.#logger?.warn({ seq: entry.seq }, 'audit seq taken by another process with the same writerId; re-reading the tail');
          continue;
        }
        throw new OptinError('AUDIT_WRITE_FAILED', `audit append to ${this.bucket} failed (${s3ErrorCode(err) ?? (err as Error).message}): check the S3 store`, {
          retryable: true,
          cause: err,
        });
      }
      this.#tail = { seq: entry.seq, hash: entry.hash };
      // The head follows every append: a cut tail then always leaves the head ahead of the chain.
      await this.#writeHead(this.#tail);
      return entry;
    }
  }

  async #writeHead(tail: Tail): Promise<void> {
    const base = { v: ENTRY_VERSION, stream: this.writerId, seq: tail.seq, hash: tail.hash, at: this.#now().toISOString(), alg: 'hmac-sha256' } as const;
    const head: StreamHead = { ...base, sig: signHead(base, this.#key) };
    try {
      await this.#put(headKey(this.writerId), head, false);
    } catch (err) {
      // The entry is stored: do not fail the append (a retry would duplicate it). The head lags,
      // which verify() notes, and the next append rewrites it.
      this.#logger?.warn({ seq: tail.seq, code: s3ErrorCode(err) }, 'audit head update failed; the next append repairs it');
    }
  }

  async #put(key: string, value: object, createOnly: boolean): Promise<void> {
    const body = Buffer.from(JSON.stringify(value));
    let objectLock: PutObjectLock | undefined;
    // Heads are locked too: every version of a head is evidence of how far the chain reached.
    if (this.#retention) {
      objectLock = { mode: this.#retention.mode, retainUntil: new Date(this.#now().getTime() + Math.ceil(this.#retention.days * 86_400_000)) };
    }
    await putObjectWithTags(this.#client, this.bucket, key, body, {}, { 'content-type': 'application/json' }, {
      ifNoneMatch: createOnly,
      ...(objectLock ? { objectLock } : {}),
    });
  }

  /**
   * Where this writer's chain ends, from its head (O(1)), then forward over entries written
   * after it (a crash between entry and head, or a same-writerId process). Without a head, from
   * a listing. A chain broken by tampering is NOT repaired here: appends continue after what
   * is there and verify() keeps reporting the break.
   */
  async #loadTail(): Promise<Tail> {
    let tail: Tail = { seq: 0, hash: GENESIS_HASH };
    const headBody = await readBody(this.#client, this.bucket, headKey(this.writerId));
    const head = headBody ? parseJson(headBody) : undefined;
    if (isHeadShape(head) && isGenuineHead(head, this.writerId, this.#key)) {
      tail = { seq: head.seq, hash: head.hash };
    } else {
      if (headBody) this.#logger?.error({ stream: this.writerId }, 'audit head is invalid; continuing from the listing (verify will report it)');
      const seqs = (await listKeys(this.#client, this.bucket, streamPrefix(this.writerId)))
        .map((k) => Number(k.slice(streamPrefix(this.writerId).length).replace(/\.json$/, '')))
        .filter((n) => Number.isSafeInteger(n) && n > 0);
      const last = Math.max(0, ...seqs);
      if (last > 0) {
        const body = await readBody(this.#client, this.bucket, entryKey(this.writerId, last));
        const entry = body ? parseJson(body) : undefined;
        tail = { seq: last, hash: (entry as Partial<AuditEntry> | undefined)?.hash ?? GENESIS_HASH };
      }
    }
    for (;;) {
      const body = await readBody(this.#client, this.bucket, entryKey(this.writerId, tail.seq + 1));
      if (!body) break;
      const entry = parseJson(body);
      const bad = checkEntry(entry, this.writerId, tail.seq + 1, this.#key);
      if (bad || (entry as AuditEntry).prevHash !== tail.hash) {
        this.#logger?.error({ seq: tail.seq + 1, reason: bad?.reason ?? 'prev-hash-mismatch' }, 'audit entry after the head does not chain; continuing after it');
      }
      tail = { seq: tail.seq + 1, hash: (entry as Partial<AuditEntry> | undefined)?.hash ?? GENESIS_HASH };
    }
    if (tail.seq > 0 && tail.seq !== (isHeadShape(head) ? head.seq : -1)) await this.#writeHead(tail);
    return tail;
  }

  /** Stream ids present in the bucket (from entries and heads), from `keys` of a listing. */
  #streamsOf(keys: Iterable<string>): string[] {
    const ids = new Set<string>();
    for (const k of keys) {
      const s = /^streams\/([A-Za-z0-9_-]{1,64})\//.exec(k)?.[1] ?? /^heads\/([A-Za-z0-9_-]{1,64})\.json$/.exec(k)?.[1];
      if (s !== undefined) ids.add(s);
    }
    return [...ids].sort();
  }

  /** Stream ids present in the bucket (latest objects). */
  async #streams(): Promise<string[]> {
    return this.#streamsOf([...(await listKeys(this.#client, this.bucket, 'streams/')), ...(await listKeys(this.#client, this.bucket, 'heads/'))]);
  }

  async #readStream(stream: string): Promise<StoredEntry[]> {
    const prefix = streamPrefix(stream);
    const keys = await listKeys(this.#client, this.bucket, prefix);
    const stored = await mapLimit(keys, 8, async (key): Promise<StoredEntry | null> => {
      const m = /^(\d{12})\.json$/.exec(key.slice(prefix.length));
      // Any other object under the prefix is foreign: an entry named out of pattern cannot be
      // part of the chain, and its seq position is judged by the numbered ones.
      if (!m?.[1]) return null;
      const body = await readBody(this.#client, this.bucket, key);
      return { keySeq: Number(m[1]), versions: [body ? parseJson(body) : undefined], deleted: false };
    });
    return stored.filter((s): s is StoredEntry => s !== null);
  }

  /**
   * Every version of every object under `prefix`, grouped by key, oldest first; null when the
   * store cannot list versions (then verify falls back to the latest objects).
   */
  async #listVersions(prefix: string): Promise<Map<string, ObjectVersion[]> | null> {
    const byKey = new Map<string, ObjectVersion[]>();
    let order = 0;
    try {
      const items = this.#client.listObjects(this.bucket, prefix, true, { IncludeVersion: true }) as AsyncIterable<{
        name?: string;
        versionId?: string | null;
        isDeleteMarker?: boolean;
        isLatest?: boolean | string;
        lastModified?: Date;
      }>;
      for await (const it of items) {
        if (!it.name) continue;
        const v: ObjectVersion = {
          key: it.name,
          versionId: it.versionId ?? undefined,
          deleteMarker: it.isDeleteMarker === true,
          latest: it.isLatest === true || it.isLatest === 'true',
          lastModified: it.lastModified?.getTime() ?? 0,
          order: order++,
        };
        const list = byKey.get(it.name) ?? [];
        list.push(v);
        byKey.set(it.name, list);
      }
    } catch (err) {
      this.#logger?.warn({ code: s3ErrorCode(err) }, 'audit verify: the store does not list object versions; checking the latest objects only');
      return null;
    }
    for (const list of byKey.values()) {
      // Oldest first: by time, then the latest last, then (same instant) S3's newest-first order reversed.
      list.sort((a, b) => a.lastModified - b.lastModified || Number(a.latest) - Number(b.latest) || b.order - a.order);
      if (!list.some((v) => v.latest)) list.at(-1)!.latest = true; // a store that does not flag it: one version
    }
    return byKey;
  }

  async #readVersion(v: ObjectVersion): Promise<unknown> {
    const body = await readBody(this.#client, this.bucket, v.key, v.versionId);
    return body ? parseJson(body) : undefined;
  }

  async #readVersions(list: ObjectVersion[]): Promise<{ versions: unknown[]; deleted: boolean }> {
    const bodies = await mapLimit(
      list.filter((v) => !v.deleteMarker),
      4,
      (v) => this.#readVersion(v),
    );
    return { versions: bodies, deleted: list.at(-1)?.deleteMarker === true };
  }

  /**
   * Entries of all streams (or one), oldest first, optionally filtered by time and type. Reads
   * every entry object: meant for the DPO's spot checks, not for hot paths. Entries that do not
   * verify on their own (edited) are left out and logged; verify() says where the chain breaks.
   */
  async list(query: AuditListQuery = {}): Promise<AuditEntry[]> {
    const from = query.from === undefined ? -Infinity : new Date(query.from).getTime();
    const to = query.to === undefined ? Infinity : new Date(query.to).getTime();
    if (Number.isNaN(from) || Number.isNaN(to)) throw badInput('list: from/to must be dates');
    if (query.stream !== undefined && !ID_PATTERN.test(query.stream)) throw badInput('list: stream must be a writer id');
    const streams = query.stream === undefined ? await this.#streams() : [query.stream];
    const out: AuditEntry[] = [];
    for (const stream of streams) {
      for (const s of await this.#readStream(stream)) {
        const body = s.versions[0];
        if (checkEntry(body, stream, s.keySeq, this.#key) !== null) {
          this.#logger?.warn({ stream, seq: s.keySeq }, 'audit list: entry does not verify, left out');
          continue;
        }
        const e = body as AuditEntry;
        const at = Date.parse(e.at);
        if (at < from || at >= to) continue;
        if (query.type !== undefined && e.type !== query.type) continue;
        out.push(e);
      }
    }
    return out.sort((a, b) => a.at.localeCompare(b.at) || a.stream.localeCompare(b.stream) || a.seq - b.seq);
  }

  /** The current head of every stream (or one), signature checked: what the control plane anchors. */
  async heads(): Promise<CurrentHead[]> {
    const out: CurrentHead[] = [];
    for (const key of await listKeys(this.#client, this.bucket, 'heads/')) {
      const stream = /^heads\/([A-Za-z0-9_-]{1,64})\.json$/.exec(key)?.[1];
      if (stream === undefined) continue;
      const body = await readBody(this.#client, this.bucket, key);
      const head = body ? parseJson(body) : undefined;
      if (!isHeadShape(head)) continue;
      out.push({ stream, seq: head.seq, hash: head.hash, at: head.at, genuine: isGenuineHead(head, stream, this.#key) });
    }
    return out;
  }

  /**
   * Proves every stream unbroken (or one stream: `{ stream }`): every version of every entry and
   * head, and, given `expected` (the control plane's registered streams and anchors), that no
   * registered stream vanished and every anchored position is still there, unchanged.
   */
  async verify(opts: { stream?: string; expected?: readonly ExpectedStream[] } = {}): Promise<AuditVerifyResult> {
    if (opts.stream !== undefined && !ID_PATTERN.test(opts.stream)) throw badInput('verify: stream must be a writer id');
    const prefix = opts.stream === undefined ? undefined : opts.stream;
    const entryVersions = await this.#listVersions(prefix === undefined ? 'streams/' : streamPrefix(prefix));
    const headVersions = entryVersions === null ? null : await this.#listVersions(prefix === undefined ? 'heads/' : headKey(prefix));
    const expected = new Map((opts.expected ?? []).map((e) => [e.stream, e.anchors]));
    let streams: string[];
    if (entryVersions !== null && headVersions !== null) streams = this.#streamsOf([...entryVersions.keys(), ...headVersions.keys()]);
    else streams = await this.#streams();
    if (opts.stream !== undefined) streams = streams.filter((s) => s === opts.stream);
    const reports: StreamReport[] = [];
    const names = new Set([...streams, ...(opts.stream === undefined ? expected.keys() : expected.has(opts.stream) ? [opts.stream] : [])]);
    for (const stream of [...names].sort()) {
      const anchors = expected.get(stream) ?? [];
      if (!streams.includes(stream)) {
        reports.push(missingStreamReport(stream, anchors));
        continue;
      }
      let entries: StoredEntry[];
      let head: StoredHead;
      if (entryVersions !== null && headVersions !== null) {
        const sp = streamPrefix(stream);
        entries = await mapLimit(
          [...entryVersions.entries()].filter(([k]) => k.startsWith(sp) && /^\d{12}\.json$/.test(k.slice(sp.length))),
          8,
          async ([k, list]) => ({ keySeq: Number(k.slice(sp.length, sp.length + 12)), ...(await this.#readVersions(list)) }),
        );
        head = await this.#readVersions(headVersions.get(headKey(stream)) ?? []);
      } else {
        entries = await this.#readStream(stream);
        const body = await readBody(this.#client, this.bucket, headKey(stream));
        head = { versions: body ? [parseJson(body)] : [], deleted: false };
      }
      reports.push(verifyStream(stream, entries, head, this.#key, { anchors }));
    }
    const broken = reports.find((r) => !r.ok);
    return {
      ok: broken === undefined,
      entries: reports.reduce((n, r) => n + r.entries, 0),
      ...(broken?.brokenAt ? { brokenAt: broken.brokenAt } : {}),
      streams: reports,
      registryChecked: opts.expected !== undefined,
      versionsChecked: entryVersions !== null && headVersions !== null,
    };
  }
}
