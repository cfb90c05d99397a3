import type { Logger } from '../log/logger.ts';
import { isId } from '../ids/ids.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { CurrentHead, ExpectedStream } from './AuditTrail.ts';

/**
 * The audit trail's registry in the control plane's database (migration 002_audit_streams.sql):
 * which writer streams exist, and the head hashes anchored for them. Both live outside the
 * audit bucket, so someone who can rewrite or delete objects there (even every version of a
 * stream, where the store allows it) cannot make a stream or a cut tail vanish unnoticed:
 * `verify({ expected })` reports a registered-and-anchored stream that is gone, and a chain that
 * no longer reaches, or no longer matches, an anchored position.
 *
 * Streams are registered when a worker connects to the policy stream (its writerId is its
 * workerId), when a control-plane replica starts, through the API (other writers), and by the
 * anchoring pass for any stream it finds. Anchors come from that pass (the control plane reads
 * and checks every head periodically) and from the API.
 *
 * The SQL runs on anything with `query` (the control plane's Database, a transaction): this
 * adapter does not depend on src/db (see docs/architecture.md §9).
 */

export interface AnchorDb {
  query<R = Record<string, unknown>>(sql: string, params?: readonly (string | number | null)[]): Promise<{ rows: R[]; rowCount: number }>;
}

export type RegisteredBy = 'stream-hello' | 'replica' | 'api' | 'anchor-pass';

export interface RegisteredStream {
  streamId: string;
  registeredAtMs: number;
  registeredBy: string;
  anchor: { seq: number; hash: string; headAt: string; anchoredAtMs: number } | null;
}

export type AnchorOutcome = 'anchored' | 'unchanged' | 'behind' | 'forked';

const HEX64 = /^[0-9a-f]{64}$/;

export async function registerAuditStream(db: AnchorDb, streamId: string, by: RegisteredBy | `api:${string}`, nowMs: number): Promise<boolean> {
  if (!isId(streamId)) throw new OptinError('INVALID_ID', 'audit stream id must be a writer id ([A-Za-z0-9_-]{1,64})');
  const res = await db.query(
    'INSERT INTO audit_streams (stream_id, registered_at_ms, registered_by) VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING',
    [streamId, nowMs, by],
  );
  return res.rowCount > 0;
}

/**
 * Records that `stream` reached `seq` with `hash`. A head behind the last anchor ('behind') or a
 * different hash at the anchored seq ('forked') is NOT recorded: it is what tampering looks like,
 * and the anchor keeps saying what was seen first.
 */
export async function recordAnchor(db: AnchorDb, head: { stream: string; seq: number; hash: string; at: string }, nowMs: number, by: RegisteredBy | `api:${string}` = 'anchor-pass'): Promise<AnchorOutcome> {
  if (!isId(head.stream)) throw new OptinError('INVALID_ID', 'audit stream id must be a writer id ([A-Za-z0-9_-]{1,64})');
  if (!Number.isSafeInteger(head.seq) || head.seq < 0 || !HEX64.test(head.hash)) throw new OptinError('INVALID_INPUT', 'an anchor is a seq >= 0 and a 64-hex hash');
  await registerAuditStream(db, head.stream, by, nowMs);
  const { rows } = await db.query<{ anchor_seq: number | null; anchor_hash: string | null }>('SELECT anchor_seq, anchor_hash FROM audit_streams WHERE stream_id = $1', [head.stream]);
  const current = rows[0];
  if (current?.anchor_seq !== null && current?.anchor_seq !== undefined) {
    if (head.seq < current.anchor_seq) return 'behind';
    if (head.seq === current.anchor_seq) return head.hash === current.anchor_hash ? 'unchanged' : 'forked';
  }
  // Only ever forward: the condition makes two replicas anchoring at once harmless.
  const res = await db.query(
    `UPDATE audit_streams SET anchor_seq = $2, anchor_hash = $3, anchor_head_at = $4, anchored_at_ms = $5
      WHERE stream_id = $1 AND (anchor_seq IS NULL OR anchor_seq < $2)`,
    [head.stream, head.seq, head.hash, head.at, nowMs],
  );
  if (res.rowCount === 0) return 'unchanged';
  await db.query('INSERT INTO audit_anchors (stream_id, seq, hash, head_at, anchored_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
    head.stream,
    head.seq,
    head.hash,
    head.at,
    nowMs,
  ]);
  return 'anchored';
}

export async function listAuditStreams(db: AnchorDb): Promise<RegisteredStream[]> {
  const { rows } = await db.query<{
    stream_id: string;
    registered_at_ms: number;
    registered_by: string;
    anchor_seq: number | null;
    anchor_hash: string | null;
    anchor_head_at: string | null;
    anchored_at_ms: number | null;
  }>('SELECT stream_id, registered_at_ms, registered_by, anchor_seq, anchor_hash, anchor_head_at, anchored_at_ms FROM audit_streams ORDER BY stream_id');
  return rows.map((r) => ({
    streamId: r.stream_id,
    registeredAtMs: Number(r.registered_at_ms),
    registeredBy: r.registered_by,
    anchor:
      r.anchor_seq === null || r.anchor_hash === null
        ? null
        : { seq: Number(r.anchor_seq), hash: r.anchor_hash, headAt: r.anchor_head_at ?? '', anchoredAtMs: Number(r.anchored_at_ms ?? 0) },
  }));
}

/** What `AuditTrail.verify({ expected })` takes, from the registry. */
export function expectedFrom(streams: readonly RegisteredStream[]): ExpectedStream[] {
  return streams.map((s) => ({ stream: s.streamId, anchors: s.anchor === null ? [] : [{ seq: s.anchor.seq, hash: s.anchor.hash, at: s.anchor.anchoredAtMs }] }));
}

/** What the anchoring pass needs of the trail. */
export interface HeadSource {
  heads(): Promise<CurrentHead[]>;
}

export interface AnchorPassResult {
  anchored: number;
  unchanged: number;
  /** Streams whose head is not genuine, went backwards, or forked: tamper evidence (logged as errors). */
  suspicious: Array<{ stream: string; problem: 'not-genuine' | 'behind' | 'forked' }>;
}

/**
 * Reads every stream's head from the audit bucket and anchors the genuine ones in the database,
 * periodically (every replica may run it: anchors only move forward, so racing passes agree).
 */
export class AuditAnchoring {
  readonly #db: AnchorDb;
  readonly #heads: HeadSource;
  readonly #logger: Logger;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<AnchorPassResult> | undefined;

  constructor(options: { db: AnchorDb; heads: HeadSource; logger: Logger; now?: () => number }) {
    this.#db = options.db;
    this.#heads = options.heads;
    this.#logger = options.logger.child({ component: 'audit-anchoring' });
    this.#now = options.now ?? Date.now;
  }

  start(intervalMs: number): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      if (this.#running === undefined) void this.runOnce().catch((err: unknown) => this.#logger.warn({ err: (err as Error).message }, 'audit anchoring pass failed; retried next interval'));
    }, intervalMs);
    this.#timer.unref();
  }

  /** One pass; concurrent callers share the pass in progress. */
  runOnce(): Promise<AnchorPassResult> {
    this.#running ??= this.#pass().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => undefined);
  }

  async #pass(): Promise<AnchorPassResult> {
    const result: AnchorPassResult = { anchored: 0, unchanged: 0, suspicious: [] };
    for (const head of await this.#heads.heads()) {
      if (!head.genuine) {
        result.suspicious.push({ stream: head.stream, problem: 'not-genuine' });
        this.#logger.error({ stream: head.stream }, 'audit head fails its signature: not anchored (optin audit verify reports the break)');
        continue;
      }
      const outcome = await recordAnchor(this.#db, head, this.#now());
      if (outcome === 'anchored') result.anchored++;
      else if (outcome === 'unchanged') result.unchanged++;
      else {
        result.suspicious.push({ stream: head.stream, problem: outcome });
        this.#logger.error({ stream: head.stream, seq: head.seq, outcome }, 'audit head went back or changed below an anchored position: the trail was tampered with');
      }
    }
    return result;
  }
}
