import type { DeletionReason, FactV2, StoreReceipt } from '../control/protocolV2.ts';
import type { Database, Tx } from '../db/Database.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import { appendFacts } from '../db/factLog.ts';
import type { CatalogueParticipant } from '../catalogue/Catalogue.ts';
import type { CompletionReceipt, WorkerReceipt } from './ledger.ts';
import type { ControlPlaneStore } from './storeAdapter.ts';

/**
 * Completes erasures and deletions (issue 13 §4-5). For each pending request, oldest first:
 *
 * 1. The recordings in scope: those the request names plus, for an erasure, every recording the
 *    catalogue has of the call (a report may have arrived after the request).
 * 2. The holders: the worker each recording's catalogue row names, if that worker has a live
 *    stream session (stream_sessions.last_seen_ms recent) on any replica. A live holder is given
 *    up to `holderTimeoutMs` to stop, delete, forget the key and confirm (`erasure.done` /
 *    `deletion.done`): it alone can clean its spool and memory.
 * 3. Then the control plane deletes from the store itself, through the storage layer's deletion
 *    protocol, for every recording in scope: for a recording no live worker holds (call ended,
 *    worker gone) this IS the deletion; after confirmations it is the final sweep, so nothing a
 *    late writer put survives. Idempotent: a second pass finds nothing left.
 * 4. One transaction marks the request done with a receipt (the store's receipts, which workers
 *    confirmed, which holders did not), updates the catalogue, and appends
 *    `erasure.completed` / `deletion.completed`.
 *
 * Several replicas may sweep: a request is claimed (claimed_by/claimed_until, FOR UPDATE SKIP
 * LOCKED) so two replicas do not work on it at once; a claim that is not finished expires.
 * Nothing here holds a transaction open across a store call.
 */

export interface LedgerSweeperOptions {
  db: Database;
  store: ControlPlaneStore | undefined;
  replicaId: string;
  logger: Logger;
  metrics?: ControlPlaneMetrics;
  /** Wait this long after a request before acting (a worker's report or confirmation may be on its way). Default 2000 ms. */
  graceMs?: number;
  /** How long live holders get to confirm before the control plane deletes anyway. Default 30 000 ms. */
  holderTimeoutMs?: number;
  /** A stream session seen within this window counts as live. Default 10 000 ms. */
  liveWindowMs?: number;
  /** Pass interval. Default 1000 ms. */
  intervalMs?: number;
  now?: () => number;
}

interface Claimed {
  kind: 'erasure' | 'deletion';
  id: string;
  callId: string | null;
  recordingIds: string[];
  participantId: string | null;
  reason: DeletionReason;
  requestedAt: number;
  confirmedBy: string[];
  workerReceipts: WorkerReceipt[];
}

const ACTOR = 'control-plane';
const MAX_PER_PASS = 32;

export class LedgerSweeper {
  readonly #o: Required<Omit<LedgerSweeperOptions, 'store' | 'metrics'>> & Pick<LedgerSweeperOptions, 'store' | 'metrics'>;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #warnedNoStore = false;
  #failing = false;

  constructor(options: LedgerSweeperOptions) {
    this.#o = {
      graceMs: 2_000,
      holderTimeoutMs: 30_000,
      liveWindowMs: 10_000,
      intervalMs: 1_000,
      now: Date.now,
      ...options,
    };
  }

  start(): void {
    if (this.#closed || this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.kick(), this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Runs a pass soon (after a confirmation arrived); passes never overlap. */
  kick(): void {
    if (this.#closed) return;
    if (this.#running !== undefined) {
      this.#again = true;
      return;
    }
    this.#running = this.sweepOnce()
      .then(() => {
        if (this.#failing) this.#o.logger.info('sweeper: passes succeed again');
        this.#failing = false;
      })
      .catch((err: unknown) => {
        // Once per outage, not once per pass.
        if (!this.#failing) this.#o.logger.warn({ err: (err as Error).message }, 'sweeper: pass failed; retrying every interval');
        this.#failing = true;
      })
      .finally(() => {
        this.#running = undefined;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** One pass; returns how many requests it completed. */
  async sweepOnce(): Promise<number> {
    let completed = 0;
    for (const kind of ['erasure', 'deletion'] as const) {
      for (let i = 0; i < MAX_PER_PASS && !this.#closed; i++) {
        const claimed = await this.#claim(kind);
        if (claimed === undefined) break;
        if (await this.#work(claimed)) completed++;
      }
    }
    await this.#updateGauges();
    return completed;
  }

  async #claim(kind: 'erasure' | 'deletion'): Promise<Claimed | undefined> {
    const now = this.#o.now();
    const args = [this.#o.replicaId, now + 60_000, now - this.#o.graceMs, now];
    if (kind === 'erasure') {
      const { rows } = await this.#o.db.query<{ id: string; call_id: string; participant_id: string; recording_ids: string[]; requested_at_ms: number; confirmed_by: string[]; worker_receipts: WorkerReceipt[] }>(
        `UPDATE erasures SET claimed_by = $1, claimed_until_ms = $2
          WHERE id = (SELECT id FROM erasures
                       WHERE state = 'pending' AND requested_at_ms <= $3 AND (claimed_until_ms IS NULL OR claimed_until_ms < $4)
                       ORDER BY requested_at_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING id, call_id, participant_id, recording_ids, requested_at_ms, confirmed_by, worker_receipts`,
        args,
      );
      const r = rows[0];
      if (r === undefined) return undefined;
      const { rows: more } = await this.#o.db.query<{ recording_id: string }>('SELECT recording_id FROM recordings WHERE call_id = $1', [r.call_id]);
      return {
        kind,
        id: r.id,
        callId: r.call_id,
        recordingIds: [...new Set([...r.recording_ids, ...more.map((m) => m.recording_id)])].sort(),
        participantId: r.participant_id,
        reason: 'erasure',
        requestedAt: r.requested_at_ms,
        confirmedBy: r.confirmed_by,
        workerReceipts: r.worker_receipts,
      };
    }
    const { rows } = await this.#o.db.query<{ id: string; recording_id: string; participant_id: string | null; reason: DeletionReason; requested_at_ms: number; confirmed_by: string[]; worker_receipts: WorkerReceipt[] }>(
      `UPDATE deletions SET claimed_by = $1, claimed_until_ms = $2
        WHERE id = (SELECT id FROM deletions
                     WHERE state = 'pending' AND requested_at_ms <= $3 AND (claimed_until_ms IS NULL OR claimed_until_ms < $4)
                     ORDER BY requested_at_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id, recording_id, participant_id, reason, requested_at_ms, confirmed_by, worker_receipts`,
      args,
    );
    const r = rows[0];
    if (r === undefined) return undefined;
    return {
      kind,
      id: r.id,
      callId: null,
      recordingIds: [r.recording_id],
      participantId: r.participant_id,
      reason: r.reason,
      requestedAt: r.requested_at_ms,
      confirmedBy: r.confirmed_by,
      workerReceipts: r.worker_receipts,
    };
  }

  /** Later: leave it for a following pass (claim expires soon, not in 60 s). */
  async #defer(c: Claimed, delayMs: number): Promise<void> {
    const args = [c.id, this.#o.now() + delayMs, this.#o.replicaId];
    if (c.kind === 'erasure') await this.#o.db.query('UPDATE erasures SET claimed_until_ms = $2 WHERE id = $1 AND claimed_by = $3', args);
    else await this.#o.db.query('UPDATE deletions SET claimed_until_ms = $2 WHERE id = $1 AND claimed_by = $3', args);
  }

  async #work(c: Claimed): Promise<boolean> {
    const now = this.#o.now();
    const { rows: holders } = await this.#o.db.query<{ recording_id: string; worker_id: string }>(
      `SELECT r.recording_id, r.worker_id FROM recordings r
        WHERE r.recording_id = ANY($1) AND r.worker_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM stream_sessions s WHERE s.worker_id = r.worker_id AND s.last_seen_ms >= $2)`,
      [c.recordingIds, now - this.#o.liveWindowMs],
    );
    const waitingFor = [...new Set(holders.map((h) => h.worker_id).filter((w) => !c.confirmedBy.includes(w)))].sort();
    if (waitingFor.length > 0 && now - c.requestedAt < this.#o.holderTimeoutMs) {
      await this.#defer(c, this.#o.intervalMs);
      return false;
    }
    const storeReceipts: StoreReceipt[] = [];
    if (this.#o.store === undefined) {
      // Without store credentials only the workers can carry it out: done when every recording's worker confirmed.
      const { rows: owners } = await this.#o.db.query<{ recording_id: string; worker_id: string | null }>('SELECT recording_id, worker_id FROM recordings WHERE recording_id = ANY($1)', [c.recordingIds]);
      const covered = owners.length === c.recordingIds.length && owners.every((o) => o.worker_id !== null && c.confirmedBy.includes(o.worker_id));
      if (!covered) {
        if (!this.#warnedNoStore) this.#o.logger.warn({ kind: c.kind }, 'sweeper: no store configured (OPTIN_S3_*, OPTIN_KEYRING): requests wait for worker confirmations');
        this.#warnedNoStore = true;
        await this.#defer(c, 10 * this.#o.intervalMs);
        return false;
      }
    } else {
      try {
        for (const recordingId of c.recordingIds) {
          const receipt = await this.#o.store.deleteRecording(recordingId, {
            ...(c.participantId === null ? {} : { participantId: c.participantId }),
            reason: c.kind === 'erasure' ? 'erasure' : `deletion-${c.reason}`,
            actor: ACTOR,
          });
          if (!receipt.complete) throw new Error(`store deletion of ${recordingId} incomplete (store unreachable); retrying`);
          storeReceipts.push(receipt);
        }
      } catch (err) {
        this.#o.logger.warn({ kind: c.kind, id: c.id, err: (err as Error).message }, 'sweeper: store deletion failed; will retry');
        await this.#defer(c, 5 * this.#o.intervalMs);
        return false;
      }
    }
    const receipt: CompletionReceipt = {
      completedAt: this.#o.now(),
      storeReceipts,
      confirmedBy: c.workerReceipts,
      unconfirmedHolders: waitingFor,
      completedBy: this.#o.replicaId,
    };
    const done = await this.#o.db.transaction((tx) => this.#complete(tx, c, receipt));
    if (done) {
      this.#o.metrics?.ledgerCompletions.inc({ kind: c.kind });
      this.#o.logger.info({ kind: c.kind, id: c.id, recordings: c.recordingIds.length, confirmedBy: c.confirmedBy.length }, 'sweeper: completed');
    }
    return done;
  }

  async #complete(tx: Tx, c: Claimed, receipt: CompletionReceipt): Promise<boolean> {
    const now = receipt.completedAt;
    const res =
      c.kind === 'erasure'
        ? await tx.query(
            `UPDATE erasures SET state = 'done', completed_at_ms = $2, receipt = $3::jsonb, recording_ids = $4, claimed_by = NULL, claimed_until_ms = NULL
              WHERE id = $1 AND state = 'pending' RETURNING id`,
            [c.id, now, JSON.stringify(receipt), c.recordingIds],
          )
        : await tx.query(
            `UPDATE deletions SET state = 'done', completed_at_ms = $2, receipt = $3::jsonb, claimed_by = NULL, claimed_until_ms = NULL
              WHERE id = $1 AND state = 'pending' RETURNING id`,
            [c.id, now, JSON.stringify(receipt)],
          );
    if (res.rowCount === 0) return false; // another replica finished it meanwhile
    if (c.participantId === null) {
      await tx.query("UPDATE recordings SET state = 'deleted', participants = '[]'::jsonb, updated_at_ms = $2 WHERE recording_id = ANY($1) AND state <> 'expired'", [c.recordingIds, now]);
    } else {
      const { rows } = await tx.query<{ recording_id: string; participants: CatalogueParticipant[] }>(
        'SELECT recording_id, participants FROM recordings WHERE recording_id = ANY($1) FOR UPDATE',
        [c.recordingIds],
      );
      for (const row of rows) {
        const participants = row.participants.map((p) => (p.participantId === c.participantId ? { participantId: p.participantId, role: p.role } : p));
        await tx.query('UPDATE recordings SET participants = $2::jsonb, updated_at_ms = $3 WHERE recording_id = $1', [row.recording_id, JSON.stringify(participants), now]);
      }
    }
    const fact: FactV2 = c.kind === 'erasure' ? { type: 'erasure.completed', erasureId: c.id } : { type: 'deletion.completed', deletionId: c.id };
    await appendFacts(tx, [fact], now);
    return true;
  }

  async #updateGauges(): Promise<void> {
    if (this.#o.metrics === undefined) return;
    const { rows } = await this.#o.db.query<{ e: number; d: number }>(
      "SELECT (SELECT count(*)::int FROM erasures WHERE state = 'pending') AS e, (SELECT count(*)::int FROM deletions WHERE state = 'pending') AS d",
    );
    this.#o.metrics.pendingErasures.set(rows[0]?.e ?? 0);
    this.#o.metrics.pendingDeletions.set(rows[0]?.d ?? 0);
  }
}
