import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The hash chain behind the audit trail, as pure functions: canonical JSON, entry and head
 * hashes, and the verification of one stream's entries. No I/O here, so the rules a DPO relies
 * on can be read (and tested) in one place; src/audit/AuditTrail.ts does the S3 side.
 *
 * Chain: entry n carries `prevHash` = hash of entry n-1 (entry 1: 64 zeros) and
 * `hash` = H(canonical JSON of the entry without `hash`), where H is SHA-256, or HMAC-SHA256 with
 * the audit key when one is configured (then someone who can write the bucket but lacks the key
 * cannot recompute a consistent chain after editing it). The entry also names its stream and
 * seq, so it cannot be moved to another position or stream without breaking its hash.
 */

export const GENESIS_HASH = '0'.repeat(64);
export const ENTRY_VERSION = 1;

export type HashAlg = 'sha256' | 'hmac-sha256';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface AuditRefs {
  callId?: string;
  recordingId?: string;
  participantId?: string;
  subjectId?: string;
  /** When one event concerns several people (a deletion of a two-party recording). */
  subjectIds?: string[];
}

export interface AuditEntry {
  v: typeof ENTRY_VERSION;
  /** The writer's stream (writerId): each stream is its own chain. */
  stream: string;
  /** 1-based position in the stream. */
  seq: number;
  /** ISO 8601 instant of the append. */
  at: string;
  type: string;
  /** Pseudonymous id of who acted, or 'system'. */
  actor: string;
  role: string;
  purpose: string;
  refs: AuditRefs;
  /** JSON, no personal data, no key material. */
  details: { [key: string]: JsonValue };
  prevHash: string;
  alg: HashAlg;
  hash: string;
}

/** The last link of a stream, stored apart from the entries (detects a truncated tail). */
export interface StreamHead {
  v: typeof ENTRY_VERSION;
  stream: string;
  seq: number;
  hash: string;
  at: string;
  alg: HashAlg;
  sig: string;
}

export type BreakReason =
  | 'missing' // an entry in the middle (or the one the head names) is gone
  | 'unparseable' // not JSON or not an entry
  | 'seq-mismatch' // the entry's own seq differs from its object name: moved or reordered
  | 'stream-mismatch' // the entry belongs to another stream: copied over
  | 'prev-hash-mismatch' // does not link to its predecessor: inserted, reordered or predecessor edited
  | 'hash-mismatch' // content differs from what was hashed: edited
  | 'alg-mismatch' // plain SHA-256 where the HMAC is expected (or the reverse)
  | 'hmac-key-required' // the stream is HMAC'd and the verifier has no key
  | 'head-missing' // entries exist but no head
  | 'head-invalid' // the head's signature does not match its content
  | 'truncated' // the head is further than the last entry: the tail was deleted
  | 'head-mismatch'; // the entry at the head's seq is not the one the head recorded

/** What each kind of break means, for the DPO (API) and the operator (CLI) alike. */
export const BREAK_EXPLANATION: Readonly<Record<BreakReason, string>> = {
  missing: 'an entry was deleted',
  unparseable: 'an entry object was replaced by something that is not an entry',
  'seq-mismatch': 'entries were moved or reordered',
  'stream-mismatch': "an entry from another writer's stream was copied in",
  'prev-hash-mismatch': 'an entry was inserted, or entries were reordered',
  'hash-mismatch': 'an entry was edited',
  'alg-mismatch': 'the hash algorithm differs from the configured one (HMAC key missing or added?)',
  'hmac-key-required': 'the trail is HMAC-protected and the verifier has no key (OPTIN_AUDIT_HMAC_KEY)',
  'head-missing': "the stream's head pointer was deleted",
  'head-invalid': "the stream's head pointer was altered",
  truncated: 'the newest entries were deleted',
  'head-mismatch': 'the newest entry differs from the one the head recorded',
};

export interface ChainBreak {
  stream: string;
  seq: number;
  reason: BreakReason;
  detail: string;
}

export interface StreamReport {
  stream: string;
  /** Entries that verified, from seq 1 up to the first break. */
  entries: number;
  lastSeq: number;
  /** The seq the head names, as read (null: no head); whether it is genuine is part of `ok`. */
  headSeq: number | null;
  ok: boolean;
  brokenAt?: ChainBreak;
  /** Benign oddities (a head behind the last entry: a writer stopped before updating it). */
  warnings: string[];
}

/** One stored entry object as read back: its seq from the object name, its body parsed or not. */
export interface StoredEntry {
  keySeq: number;
  body: unknown;
}

/** JSON with object keys sorted at every level and no whitespace: one byte string per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  throw new TypeError(`canonicalJson: cannot encode ${typeof value}`);
}

function digest(alg: HashAlg, key: Buffer | undefined, text: string): string {
  if (alg === 'hmac-sha256') {
    if (!key) throw new TypeError('hmac-sha256 needs a key');
    return createHmac('sha256', key).update(text).digest('hex');
  }
  return createHash('sha256').update(text).digest('hex');
}

export function hashEntry(entry: Omit<AuditEntry, 'hash'>, key?: Buffer): string {
  const { hash: _drop, ...rest } = entry as AuditEntry;
  return digest(entry.alg, key, canonicalJson(rest));
}

export function signHead(head: Omit<StreamHead, 'sig'>, key?: Buffer): string {
  const { sig: _drop, ...rest } = head as StreamHead;
  // Domain separation: a head's signature can never be passed off as an entry's hash.
  return digest(head.alg, key, `optin-audit-head\n${canonicalJson(rest)}`);
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

const HEX64 = /^[0-9a-f]{64}$/;

function isEntryShape(v: unknown): v is AuditEntry {
  const e = v as Partial<AuditEntry> | null;
  return (
    typeof e === 'object' && e !== null && e.v === ENTRY_VERSION && typeof e.stream === 'string' && Number.isSafeInteger(e.seq) &&
    typeof e.at === 'string' && typeof e.type === 'string' && typeof e.actor === 'string' && typeof e.role === 'string' &&
    typeof e.purpose === 'string' && typeof e.refs === 'object' && e.refs !== null && typeof e.details === 'object' &&
    e.details !== null && typeof e.prevHash === 'string' && HEX64.test(e.prevHash) && (e.alg === 'sha256' || e.alg === 'hmac-sha256') &&
    typeof e.hash === 'string' && HEX64.test(e.hash)
  );
}

export function isHeadShape(v: unknown): v is StreamHead {
  const h = v as Partial<StreamHead> | null;
  return (
    typeof h === 'object' && h !== null && h.v === ENTRY_VERSION && typeof h.stream === 'string' && Number.isSafeInteger(h.seq) &&
    (h.seq as number) >= 0 && typeof h.hash === 'string' && HEX64.test(h.hash) && typeof h.at === 'string' &&
    (h.alg === 'sha256' || h.alg === 'hmac-sha256') && typeof h.sig === 'string' && HEX64.test(h.sig)
  );
}

/** Checks one entry on its own (shape, alg, hash). Returns the reason it fails, or null. */
export function checkEntry(body: unknown, stream: string, keySeq: number, key?: Buffer): { reason: BreakReason; detail: string } | null {
  if (!isEntryShape(body)) return { reason: 'unparseable', detail: 'not an audit entry' };
  if (body.stream !== stream) return { reason: 'stream-mismatch', detail: `entry says stream ${JSON.stringify(body.stream)}` };
  if (body.seq !== keySeq) return { reason: 'seq-mismatch', detail: `object ${keySeq} holds entry ${body.seq}` };
  const expected: HashAlg = key ? 'hmac-sha256' : 'sha256';
  if (body.alg === 'hmac-sha256' && !key) return { reason: 'hmac-key-required', detail: 'entries are HMAC-SHA256: verify with the audit HMAC key' };
  if (body.alg !== expected) return { reason: 'alg-mismatch', detail: `entry uses ${body.alg}, expected ${expected}` };
  if (!sameHex(hashEntry(body, key), body.hash)) return { reason: 'hash-mismatch', detail: 'content does not match its hash (edited)' };
  return null;
}

/**
 * Verifies one stream: `entries` as listed (any order), `head` as read (null when absent,
 * `'unparseable'` when present but not a head). Stops at the first break: everything after it
 * is unproven anyway.
 */
export function verifyStream(stream: string, entries: StoredEntry[], head: StreamHead | null | 'unparseable', key?: Buffer): StreamReport {
  const sorted = [...entries].sort((a, b) => a.keySeq - b.keySeq);
  const headSeq = head !== null && head !== 'unparseable' ? head.seq : null;
  const report: StreamReport = { stream, entries: 0, lastSeq: sorted.at(-1)?.keySeq ?? 0, headSeq, ok: true, warnings: [] };
  const fail = (seq: number, reason: BreakReason, detail: string): StreamReport => {
    report.ok = false;
    report.brokenAt = { stream, seq, reason, detail };
    return report;
  };

  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  const hashes = new Map<number, string>();
  for (const stored of sorted) {
    if (stored.keySeq !== expectedSeq) return fail(expectedSeq, 'missing', `entry ${expectedSeq} is missing (next is ${stored.keySeq})`);
    const bad = checkEntry(stored.body, stream, stored.keySeq, key);
    if (bad) return fail(stored.keySeq, bad.reason, bad.detail);
    const entry = stored.body as AuditEntry;
    if (entry.prevHash !== prevHash) return fail(entry.seq, 'prev-hash-mismatch', 'does not link to the previous entry');
    prevHash = entry.hash;
    hashes.set(entry.seq, entry.hash);
    report.entries += 1;
    expectedSeq += 1;
  }
  const lastSeq = expectedSeq - 1;

  // The head catches what the chain alone cannot: deletion of the newest entries.
  if (head === 'unparseable') return fail(lastSeq + 1, 'head-invalid', 'the head object is not a head');
  if (head === null) {
    if (lastSeq > 0) return fail(lastSeq, 'head-missing', 'entries exist but the head is gone');
    return report;
  }
  if (head.stream !== stream) return fail(lastSeq + 1, 'head-invalid', `the head names stream ${JSON.stringify(head.stream)}`);
  const expected: HashAlg = key ? 'hmac-sha256' : 'sha256';
  if (head.alg === 'hmac-sha256' && !key) return fail(head.seq, 'hmac-key-required', 'the head is HMAC-SHA256: verify with the audit HMAC key');
  if (head.alg !== expected) return fail(head.seq, 'alg-mismatch', `the head uses ${head.alg}, expected ${expected}`);
  if (!sameHex(signHead(head, key), head.sig)) return fail(head.seq, 'head-invalid', 'the head does not match its signature');
  if (head.seq > lastSeq) return fail(lastSeq + 1, 'truncated', `the head records ${head.seq} entries, the stream ends at ${lastSeq}`);
  if (head.seq > 0 && hashes.get(head.seq) !== head.hash) return fail(head.seq, 'head-mismatch', 'the entry at the head differs from the one recorded');
  // A head behind the chain is not a break: the head only proves how far the chain reached at
  // least (it is written after the entries, and skipped while more appends are queued). The
  // entries past it are proven by the chain itself, like all others.
  if (lastSeq > head.seq) report.warnings.push(`head at ${head.seq}, ${lastSeq - head.seq} entries behind (a writer stopped before updating it)`);
  return report;
}
