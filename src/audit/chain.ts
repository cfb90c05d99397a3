import { createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from '../crypto/canonicalJson.ts';

/**
 * The hash chain behind the audit trail, as pure functions: canonical JSON, entry and head
 * hashes, and the verification of one stream's entries. No I/O here, so the rules a DPO relies
 * on can be read (and tested) in one place; src/audit/AuditTrail.ts does the S3 side.
 *
 * Chain: entry n carries `prevHash` = hash of entry n-1 (entry 1: 64 zeros) and
 * `hash` = HMAC-SHA256(audit key, canonical JSON of the entry without `hash`). The key is the same
 * for every writer and the verifier and never lives in the store, so someone who can write the
 * bucket (the recorders' credentials) cannot recompute a consistent chain after editing it. The
 * entry also names its stream and seq, so it cannot be moved to another position or stream
 * without breaking its hash. (`alg` stays in the format; 'sha256', an unkeyed chain of earlier
 * versions, is no longer accepted.)
 *
 * What the verifier reads besides the latest entries (docs/rules.md, "Audit"):
 * - every stored VERSION of every entry and head: an entry with a second version was rewritten,
 *   one whose latest version is a delete marker was deleted (the original stays retained by the
 *   bucket's versioning and object lock); a head whose current version is behind an earlier
 *   genuine version was rolled back;
 * - the streams registered in the control plane and the head hashes it anchored: a stream that
 *   vanished entirely, or a chain that no longer reaches (or no longer matches) an anchored
 *   position, is a break even if every remaining object is consistent.
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
  | 'alg-mismatch' // not HMAC-SHA256 (an unkeyed entry)
  | 'rewritten' // the entry object has more than one version: it was overwritten after it was written
  | 'head-missing' // entries exist but no head
  | 'head-invalid' // the head's signature does not match its content
  | 'head-rolled-back' // the current head is behind an earlier genuine version of itself
  | 'truncated' // the head is further than the last entry: the tail was deleted
  | 'head-mismatch' // the entry at the head's seq is not the one the head recorded
  | 'anchor-missing' // the control plane anchored a position the stream no longer reaches
  | 'anchor-mismatch' // the entry at an anchored position differs from the anchored hash
  | 'stream-missing'; // a stream the control plane registered (and anchored) is gone from the bucket

/** What each kind of break means, for the DPO (API) and the operator (CLI) alike. */
export const BREAK_EXPLANATION: Readonly<Record<BreakReason, string>> = {
  missing: 'an entry was deleted',
  unparseable: 'an entry object was replaced by something that is not an entry',
  'seq-mismatch': 'entries were moved or reordered',
  'stream-mismatch': "an entry from another writer's stream was copied in",
  'prev-hash-mismatch': 'an entry was inserted, or entries were reordered',
  'hash-mismatch': 'an entry was edited',
  'alg-mismatch': 'an entry is not HMAC-SHA256 under the audit key (unkeyed, or written by something else)',
  rewritten: 'an entry was overwritten after it was written (the store kept every version)',
  'head-missing': "the stream's head pointer was deleted",
  'head-invalid': "the stream's head pointer was altered",
  'head-rolled-back': "the stream's head pointer was put back to an earlier position (the tail was cut)",
  truncated: 'the newest entries were deleted',
  'head-mismatch': 'the newest entry differs from the one the head recorded',
  'anchor-missing': 'the stream ends before a position the control plane anchored: entries were deleted',
  'anchor-mismatch': 'an entry differs from the hash the control plane anchored: the chain was rewritten',
  'stream-missing': 'a whole writer stream the control plane knows was deleted',
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
  /** The seq the current head names, as read (null: no head); whether it is genuine is part of `ok`. */
  headSeq: number | null;
  /** The latest position the control plane anchored for this stream (null: none known). */
  anchoredSeq: number | null;
  ok: boolean;
  brokenAt?: ChainBreak;
  /** Benign oddities (a head behind the last entry: a writer stopped before updating it). */
  warnings: string[];
}

/**
 * One stored entry object as read back: its seq from the object name and every version of it,
 * oldest first (`body` undefined: unreadable). A store without versioning gives one version.
 */
export interface StoredEntry {
  keySeq: number;
  versions: unknown[];
  /** The latest version is a delete marker. */
  deleted: boolean;
}

/** The head object's versions, oldest first ('unparseable' entries are not heads); latest deleted or absent. */
export interface StoredHead {
  versions: unknown[];
  /** The latest version is a delete marker. */
  deleted: boolean;
}

/** A position of a stream anchored in the control plane's database. */
export interface StreamAnchor {
  seq: number;
  hash: string;
  /** When it was anchored (ISO or ms), for messages. */
  at?: string | number;
}

export { canonicalJson };

function hmac(key: Buffer, text: string): string {
  if (!Buffer.isBuffer(key) || key.length < 32) throw new TypeError('the audit HMAC key must be a Buffer of at least 32 bytes');
  return createHmac('sha256', key).update(text).digest('hex');
}

export function hashEntry(entry: Omit<AuditEntry, 'hash'>, key: Buffer): string {
  const { hash: _drop, ...rest } = entry as AuditEntry;
  return hmac(key, canonicalJson(rest));
}

export function signHead(head: Omit<StreamHead, 'sig'>, key: Buffer): string {
  const { sig: _drop, ...rest } = head as StreamHead;
  // Domain separation: a head's signature can never be passed off as an entry's hash.
  return hmac(key, `optin-audit-head\n${canonicalJson(rest)}`);
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

/** A head that is genuine for `stream` under `key`. */
export function isGenuineHead(v: unknown, stream: string, key: Buffer): boolean {
  return isHeadShape(v) && v.stream === stream && v.alg === 'hmac-sha256' && sameHex(signHead(v, key), v.sig);
}

/** Checks one entry on its own (shape, alg, hash). Returns the reason it fails, or null. */
export function checkEntry(body: unknown, stream: string, keySeq: number, key: Buffer): { reason: BreakReason; detail: string } | null {
  if (!isEntryShape(body)) return { reason: 'unparseable', detail: 'not an audit entry' };
  if (body.stream !== stream) return { reason: 'stream-mismatch', detail: `entry says stream ${JSON.stringify(body.stream)}` };
  if (body.seq !== keySeq) return { reason: 'seq-mismatch', detail: `object ${keySeq} holds entry ${body.seq}` };
  if (body.alg !== 'hmac-sha256') return { reason: 'alg-mismatch', detail: `entry uses ${body.alg}, expected hmac-sha256` };
  if (!sameHex(hashEntry(body, key), body.hash)) return { reason: 'hash-mismatch', detail: 'content does not match its hash (edited, or another audit key)' };
  return null;
}

export interface VerifyStreamOptions {
  /** Anchors of this stream from the control plane (any order). */
  anchors?: readonly StreamAnchor[];
}

/**
 * Verifies one stream: `entries` as listed (any order) with their versions, `head` with its
 * versions. Stops at the first break: everything after it is unproven anyway.
 */
export function verifyStream(stream: string, entries: readonly StoredEntry[], head: StoredHead, key: Buffer, options: VerifyStreamOptions = {}): StreamReport {
  const sorted = [...entries].sort((a, b) => a.keySeq - b.keySeq);
  const anchors = [...(options.anchors ?? [])].sort((a, b) => a.seq - b.seq);
  const latestAnchor = anchors.at(-1);
  const currentHead = head.deleted ? undefined : head.versions.at(-1);
  const report: StreamReport = {
    stream,
    entries: 0,
    lastSeq: sorted.at(-1)?.keySeq ?? 0,
    headSeq: isHeadShape(currentHead) ? currentHead.seq : null,
    anchoredSeq: latestAnchor?.seq ?? null,
    ok: true,
    warnings: [],
  };
  const fail = (seq: number, reason: BreakReason, detail: string): StreamReport => {
    report.ok = false;
    report.brokenAt = { stream, seq, reason, detail };
    return report;
  };

  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  const hashes = new Map<number, string>();
  const ats = new Map<number, string>();
  for (const stored of sorted) {
    if (stored.keySeq !== expectedSeq) return fail(expectedSeq, 'missing', `entry ${expectedSeq} is missing (next is ${stored.keySeq})`);
    const versions = stored.versions;
    const retained = versions.length > 1 ? `; ${versions.length} versions stored, the original is retained` : '';
    if (stored.deleted || versions.length === 0) {
      return fail(stored.keySeq, 'missing', `entry ${stored.keySeq} was deleted (${versions.length} earlier version(s) retained by the store)`);
    }
    // The current version is judged first (an edit shows as what it is), then its history.
    const body = versions.at(-1);
    const bad = checkEntry(body, stream, stored.keySeq, key);
    if (bad) return fail(stored.keySeq, bad.reason, bad.detail + retained);
    const entry = body as AuditEntry;
    if (entry.prevHash !== prevHash) return fail(entry.seq, 'prev-hash-mismatch', `does not link to the previous entry${retained}`);
    if (versions.length > 1) return fail(stored.keySeq, 'rewritten', `the entry object has ${versions.length} versions: it was overwritten after it was written`);
    prevHash = entry.hash;
    hashes.set(entry.seq, entry.hash);
    ats.set(entry.seq, entry.at);
    report.entries += 1;
    expectedSeq += 1;
  }
  const lastSeq = expectedSeq - 1;

  // Anchors: positions the control plane saw, kept outside the bucket's reach.
  for (const a of anchors) {
    const when = a.at === undefined ? '' : ` at ${typeof a.at === 'number' ? new Date(a.at).toISOString() : a.at}`;
    if (a.seq > lastSeq) return fail(lastSeq + 1, 'anchor-missing', `the control plane anchored entry ${a.seq}${when}; the stream now ends at ${lastSeq}`);
    if (a.seq > 0 && hashes.get(a.seq) !== a.hash) return fail(a.seq, 'anchor-mismatch', `entry ${a.seq} differs from the hash anchored${when}`);
  }

  // The head catches what the chain alone cannot: deletion of the newest entries. Its versions
  // catch a head put back to an earlier (genuine) state together with a cut tail.
  const genuine = head.versions.filter((v): v is StreamHead => isHeadShape(v) && isGenuineHead(v, stream, key));
  const highest = genuine.reduce<StreamHead | undefined>((hi, h) => (hi === undefined || h.seq > hi.seq ? h : hi), undefined);
  if (head.versions.length === 0 || (head.deleted && highest === undefined)) {
    if (lastSeq > 0) return fail(lastSeq, 'head-missing', 'entries exist but the head is gone');
    return report;
  }
  if (head.deleted) return fail(highest!.seq, 'head-missing', `the head was deleted (${head.versions.length} version(s) retained)`);
  if (!isHeadShape(currentHead)) return fail(lastSeq + 1, 'head-invalid', 'the head object is not a head');
  if (currentHead.stream !== stream) return fail(lastSeq + 1, 'head-invalid', `the head names stream ${JSON.stringify(currentHead.stream)}`);
  if (currentHead.alg !== 'hmac-sha256') return fail(currentHead.seq, 'alg-mismatch', `the head uses ${currentHead.alg}, expected hmac-sha256`);
  if (!isGenuineHead(currentHead, stream, key)) return fail(currentHead.seq, 'head-invalid', 'the head does not match its signature');
  if (highest !== undefined && highest.seq > currentHead.seq) {
    return fail(currentHead.seq + 1, 'head-rolled-back', `the head reached ${highest.seq} (${highest.at}) and now says ${currentHead.seq}`);
  }
  const reach = highest?.seq ?? currentHead.seq;
  if (reach > lastSeq) return fail(lastSeq + 1, 'truncated', `the head records ${reach} entries, the stream ends at ${lastSeq}`);
  for (const h of genuine) {
    if (h.seq > 0 && hashes.get(h.seq) !== h.hash) return fail(h.seq, 'head-mismatch', `the entry at ${h.seq} differs from the one the head recorded`);
  }
  // The head is rewritten after every append, so entries past it only exist when a writer
  // stopped between the two writes (its next start repairs the head): noted, not a break. The
  // entries past it are proven by the chain itself like all others; the anchors bound the rest.
  if (lastSeq > reach) report.warnings.push(`head at ${reach}, ${lastSeq - reach} entries after it (a writer stopped before updating it; since ${ats.get(reach + 1) ?? '?'})`);
  return report;
}

/** A stream the control plane registered but the bucket does not hold at all. */
export function missingStreamReport(stream: string, anchors: readonly StreamAnchor[]): StreamReport {
  const latest = [...anchors].sort((a, b) => a.seq - b.seq).at(-1);
  const report: StreamReport = { stream, entries: 0, lastSeq: 0, headSeq: null, anchoredSeq: latest?.seq ?? null, ok: true, warnings: [] };
  if (latest !== undefined && latest.seq > 0) {
    report.ok = false;
    report.brokenAt = { stream, seq: 1, reason: 'stream-missing', detail: `registered in the control plane and anchored at entry ${latest.seq}, but no object of it is left` };
  } else {
    report.warnings.push('registered in the control plane, no entries yet (not anchored)');
  }
  return report;
}
