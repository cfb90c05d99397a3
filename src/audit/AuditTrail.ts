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
  isHeadShape,
  signHead,
  verifyStream,
  type AuditEntry,
  type AuditRefs,
  type ChainBreak,
  type HashAlg,
  type JsonValue,
  type StoredEntry,
  type StreamHead,
  type StreamReport,
} from './chain.ts';
import { ID_PATTERN } from '../ids/ids.ts';
import { isNotFound, s3ErrorCode } from '../storage/s3Errors.ts';

export type { AuditEntry, AuditRefs, ChainBreak, StreamReport } from './chain.ts';

/**
 * Append-only, hash-chained, tamper-evident audit trail in the audit bucket (R11, docs/rules.md).
 *
 * Layout (one object per entry, so an entry is written once and never rewritten):
 *   streams/<writerId>/audit/<seq, 12 digits>.json   entry `seq` of writer `writerId`'s chain
 *   heads/<writerId>.json                            that chain's last seq and hash (rewritten
 *                                                    after each append, or after the last of a
 *                                                    burst: a lower bound that a deleted tail
 *                                                    cannot hide from)
 *
 * Several writers: appends of one process go through a promise queue, so its chain is strictly
 * sequential. Processes do not share a chain: each writes its own stream (writerId, e.g. the
 * node id), and `verify()` checks every stream separately. That needs no cross-process lock,
 * and a DPO reads the merged trail by time with `list()`. Entry objects are created with
 * `If-None-Match: *`; should two live processes share a writerId anyway, the loser of a race
 * re-reads the tail and appends after the winner instead of overwriting it.
 *
 * Tamper evidence: `verify()` detects an edited, deleted, reordered, moved or inserted entry
 * through the chain, and a deleted tail through the head. Limits, stated plainly:
 * - without `hmacKey`, someone who can write the bucket can recompute the whole chain and head
 *   after an edit; with it, they cannot (they lack the key);
 * - even with the key, restoring an OLDER valid head together with deleting the entries after
 *   it (a rollback) is not detectable from the bucket alone: it takes an anchor kept elsewhere
 *   (e.g. the DPO noting the head hash of each verification);
 * - object lock, when the bucket has it, keeps every version of an entry for the retention
 *   period: an edit or delete then adds a version or delete marker that verify flags, while the
 *   original stays recoverable (GOVERNANCE by default, which an admin may bypass; production
 *   should pass `retention: { mode: 'COMPLIANCE', ... }` or give the bucket a default rule);
 * - a crash between a writer's very first entry and its first head reads as 'head-missing'
 *   until that writer appends again (its first append after open() rewrites the head).
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
}

export interface AuditRetention {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  days: number;
}

export interface AuditTrailOptions {
  client: Client;
  bucket: string;
  /** This process's stream: stable across restarts, unique among live processes (e.g. the node id). */
  writerId: string;
  logger?: Logger;
  /** When given (>= 32 bytes), entries and heads are HMAC-SHA256'd instead of plain SHA-256. */
  hmacKey?: Buffer;
  /**
   * Object-lock retention per entry, used only when the bucket has object lock enabled.
   * Default: the bucket's own default retention if it has one, else GOVERNANCE for 400 days.
   * `false`: never send retention headers.
   */
  retention?: AuditRetention | false;
  /** Create the bucket (with object lock) when missing. For tests and the demo; production provisions it. */
  createBucket?: boolean;
  now?: () => Date;
}

const TYPE_RE = /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$/;
const ROLE_RE = /^[a-z][a-z0-9_-]{0,31}$/;
// Purposes are short codes or a short reason; printable ASCII, no control characters.
const PURPOSE_RE = /^[A-Za-z0-9][\x20-\x7e]{0,127}$/;
const DEFAULT_RETENTION: AuditRetention = { mode: 'GOVERNANCE', days: 400 };
const MAX_DETAILS_BYTES = 256 * 1024;
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

async function readBody(client: Client, bucket: string, key: string): Promise<Buffer | null> {
  try {
    const stream = await client.getObject(bucket, key);
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
  if (Buffer.byteLength(text) > MAX_DETAILS_BYTES) throw badInput(`details exceed ${MAX_DETAILS_BYTES} bytes: store bulky facts elsewhere and reference them`);
  return JSON.parse(text) as { [key: string]: JsonValue };
}

function validateRefs(input: AuditInput): AuditRefs {
  const merged = { ...input.subjects, ...input.refs };
  const refs: AuditRefs = {};
  for (const name of ['callId', 'recordingId', 'participantId', 'subjectId'] as const) {
    const v = merged[name];
    if (v === undefined) continue;
    if (typeof v !== 'string' || !ID_PATTERN.test(v)) throw badInput(`refs.${name} must be a pseudonymous id (1-64 of A-Z a-z 0-9 _ -)`);
    refs[name] = v;
  }
  if (merged.subjectIds !== undefined) {
    if (!Array.isArray(merged.subjectIds) || !merged.subjectIds.every((s) => typeof s === 'string' && ID_PATTERN.test(s))) {
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

export class AuditTrail {
  readonly bucket: string;
  readonly writerId: string;
  readonly #client: Client;
  readonly #logger: Logger | undefined;
  readonly #key: Buffer | undefined;
  readonly #alg: HashAlg;
  readonly #now: () => Date;
  /** Retention sent with each entry; null when the bucket has no lock or applies its default. */
  readonly #retention: AuditRetention | null;
  /** Where this writer's chain ends; null until loaded (lazily, on the first append). */
  #tail: Tail | null = null;
  /** The in-process queue: each append starts after the previous one settled. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Appends queued or running; the head is written only by the last of a burst. */
  #waiting = 0;

  private constructor(opts: AuditTrailOptions, retention: AuditRetention | null) {
    this.bucket = opts.bucket;
    this.writerId = opts.writerId;
    this.#client = opts.client;
    this.#logger = opts.logger?.child({ component: 'audit', writerId: opts.writerId });
    this.#key = opts.hmacKey;
    this.#alg = opts.hmacKey ? 'hmac-sha256' : 'sha256';
    this.#now = opts.now ?? (() => new Date());
    this.#retention = retention;
  }

  /** Checks the bucket (creating it when asked) and finds out whether it has object lock. */
  static async open(opts: AuditTrailOptions): Promise<AuditTrail> {
    if (!ID_PATTERN.test(opts.writerId)) throw new OptinError('CONFIG_INVALID', 'AuditTrail: writerId must be 1-64 of A-Z a-z 0-9 _ -');
    if (opts.hmacKey !== undefined && opts.hmacKey.length < 32) {
      throw new OptinError('CONFIG_INVALID', 'AuditTrail: hmacKey must be at least 32 bytes (e.g. `openssl rand -hex 32`)');
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
    if (opts.retention !== false) {
      try {
        // (cast: minio 8 declares a void-returning overload ahead of the Promise one)
        const lock = await (client.getObjectLockConfig(bucket) as unknown as Promise<ObjectLockInfo>);
        const enabled = 'objectLockEnabled' in lock && lock.objectLockEnabled === 'Enabled';
        const bucketDefault = 'mode' in lock && Boolean(lock.mode);
        if (enabled) retention = opts.retention ?? (bucketDefault ? null : DEFAULT_RETENTION);
      } catch {
        // No lock configuration (or a store without object lock): entries rely on the chain alone.
      }
    }
    return new AuditTrail(opts, retention);
  }

  /** Appends one entry to this writer's chain; resolves once the entry (and head) are stored. */
  append(input: AuditInput): Promise<AuditEntry> {
    // Validation happens before queueing: a bad entry fails its caller alone.
    let prepared: Omit<AuditEntry, 'seq' | 'at' | 'prevHash' | 'hash'>;
    try {
      prepared = this.#prepare(input);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#waiting += 1;
    const run = this.#queue.then(() => this.#appendNow(prepared)).finally(() => (this.#waiting -= 1));
    this.#queue = run.catch(() => {});
    return run;
  }

  #prepare(input: AuditInput): Omit<AuditEntry, 'seq' | 'at' | 'prevHash' | 'hash'> {
    if (typeof input.type !== 'string' || input.type.length > 64 || !TYPE_RE.test(input.type)) {
      throw badInput('type must be dotted lowercase, e.g. "access.play"');
    }
    if (typeof input.actor !== 'string' || !ID_PATTERN.test(input.actor)) throw badInput('actor must be a pseudonymous id or "system"');
    if (typeof input.role !== 'string' || !ROLE_RE.test(input.role)) throw badInput('role must be a lowercase role name, e.g. "team-lead"');
    if (typeof input.purpose !== 'string' || !PURPOSE_RE.test(input.purpose)) throw badInput('purpose must be 1-128 printable ASCII characters');
    const redacted: string[] = [];
    const details = sanitizeDetails(input.details, redacted);
    if (redacted.length > 0) {
      // Redact rather than refuse: losing the audit entry would be worse than losing the field.
      this.#logger?.warn({ type: input.type, fields: [...new Set(redacted)] }, 'audit details: forbidden fields redacted');
    }
    return {
      v: ENTRY_VERSION,
      stream: this.writerId,
      type: input.type,
      actor: input.actor,
      role: input.role,
      purpose: input.purpose,
      refs: validateRefs(input),
      details,
      alg: this.#alg,
    };
  }

  async #appendNow(prepared: Omit<AuditEntry, 'seq' | 'at' | 'prevHash' | 'hash'>): Promise<AuditEntry> {
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
      // Under a burst only the last append writes the head: half the PUTs, and a head that is
      // momentarily behind is fine (it only has to prove a lower bound of the chain's length).
      // The first entry always writes it: a stream without a head reads as a deleted head.
      if (this.#waiting <= 1 || entry.seq === 1) await this.#writeHead(this.#tail);
      return entry;
    }
  }

  async #writeHead(tail: Tail): Promise<void> {
    const base = { v: ENTRY_VERSION, stream: this.writerId, seq: tail.seq, hash: tail.hash, at: this.#now().toISOString(), alg: this.#alg } as const;
    const head: StreamHead = { ...base, sig: signHead(base, this.#key) };
    try {
      await this.#put(headKey(this.writerId), head, false);
    } catch (err) {
      // The entry is stored: do not fail the append (a retry would duplicate it). The head lags,
      // which verify() tolerates, and the next append rewrites it.
      this.#logger?.warn({ seq: tail.seq, code: s3ErrorCode(err) }, 'audit head update failed; the next append repairs it');
    }
  }

  async #put(key: string, value: object, createOnly: boolean): Promise<void> {
    const body = Buffer.from(JSON.stringify(value));
    let objectLock: PutObjectLock | undefined;
    if (this.#retention && createOnly) {
      objectLock = { mode: this.#retention.mode, retainUntil: new Date(this.#now().getTime() + this.#retention.days * 86_400_000) };
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
    if (isHeadShape(head) && head.stream === this.writerId && head.alg === this.#alg && signHead(head, this.#key) === head.sig) {
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

  /** Stream ids present in the bucket (from entries and heads). */
  async #streams(): Promise<string[]> {
    const ids = new Set<string>();
    for (const k of await listKeys(this.#client, this.bucket, 'streams/')) {
      const id = k.split('/')[1];
      if (id && ID_PATTERN.test(id)) ids.add(id);
    }
    for (const k of await listKeys(this.#client, this.bucket, 'heads/')) {
      const m = /^heads\/([A-Za-z0-9_-]{1,64})\.json$/.exec(k);
      if (m?.[1]) ids.add(m[1]);
    }
    return [...ids].sort();
  }

  async #readStream(stream: string): Promise<StoredEntry[]> {
    const prefix = streamPrefix(stream);
    const keys = await listKeys(this.#client, this.bucket, prefix);
    const stored = await mapLimit(keys, 8, async (key): Promise<StoredEntry | null> => {
      const name = key.slice(prefix.length);
      const m = /^(\d{12})\.json$/.exec(name);
      // Any other object under the prefix is foreign: an entry named out of pattern cannot be
      // part of the chain, and its seq position is judged by the numbered ones.
      if (!m?.[1]) return null;
      const body = await readBody(this.#client, this.bucket, key);
      return { keySeq: Number(m[1]), body: body ? parseJson(body) : undefined };
    });
    return stored.filter((s): s is StoredEntry => s !== null);
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
        if (checkEntry(s.body, stream, s.keySeq, this.#key) !== null) {
          this.#logger?.warn({ stream, seq: s.keySeq }, 'audit list: entry does not verify, left out');
          continue;
        }
        const e = s.body as AuditEntry;
        const at = Date.parse(e.at);
        if (at < from || at >= to) continue;
        if (query.type !== undefined && e.type !== query.type) continue;
        out.push(e);
      }
    }
    return out.sort((a, b) => a.at.localeCompare(b.at) || a.stream.localeCompare(b.stream) || a.seq - b.seq);
  }

  /** Proves every stream unbroken (or one stream: `{ stream }`), including its head. */
  async verify(opts: { stream?: string } = {}): Promise<AuditVerifyResult> {
    if (opts.stream !== undefined && !ID_PATTERN.test(opts.stream)) throw badInput('verify: stream must be a writer id');
    const streams = opts.stream === undefined ? await this.#streams() : [opts.stream];
    const reports: StreamReport[] = [];
    for (const stream of streams) {
      const entries = await this.#readStream(stream);
      const headBody = await readBody(this.#client, this.bucket, headKey(stream));
      const parsed = headBody ? parseJson(headBody) : null;
      const head = parsed === null ? null : isHeadShape(parsed) ? parsed : 'unparseable';
      reports.push(verifyStream(stream, entries, head, this.#key));
    }
    const broken = reports.find((r) => !r.ok);
    return {
      ok: broken === undefined,
      entries: reports.reduce((n, r) => n + r.entries, 0),
      ...(broken?.brokenAt ? { brokenAt: broken.brokenAt } : {}),
      streams: reports,
    };
  }
}
