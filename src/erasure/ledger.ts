import { randomBytes } from 'node:crypto';
import type { DeletionReason, FactV2, PendingDeletion, PendingErasure, StoreReceipt, Tombstone } from '../control/protocolV2.ts';
import type { Queryable, Tx } from '../db/Database.ts';
import { appendFacts } from '../db/factLog.ts';
import type { CatalogueEntry } from '../catalogue/Catalogue.ts';

/**
 * The erasure ledger and the deletion tombstones (DESIGN R9, issue 13 §4-5). A request is durable
 * the moment its transaction commits (the API answers 202 with its id), is announced as a fact,
 * stays in every snapshot until completed, and is completed by the sweeper (ErasureSweeper) once
 * the workers holding the recording confirmed or none is alive to do it.
 */

export function newErasureId(): string {
  return `e_${randomBytes(8).toString('hex')}`;
}

export function newDeletionId(): string {
  return `d_${randomBytes(8).toString('hex')}`;
}

export interface ErasureRow {
  id: string;
  call_id: string;
  participant_id: string;
  recording_ids: string[];
  requested_at_ms: number;
  state: 'pending' | 'done';
  completed_at_ms: number | null;
  receipt: CompletionReceipt | null;
  confirmed_by: string[];
  worker_receipts: WorkerReceipt[];
}

export interface DeletionRow {
  id: string;
  recording_id: string;
  participant_id: string | null;
  actor: string;
  reason: DeletionReason;
  requested_at_ms: number;
  state: 'pending' | 'done';
  completed_at_ms: number | null;
  receipt: CompletionReceipt | null;
  confirmed_by: string[];
  worker_receipts: WorkerReceipt[];
}

export interface WorkerReceipt {
  workerId: string;
  at: number;
  receipts: StoreReceipt[];
}

/** What a completed erasure or deletion records: the store's receipts and who confirmed. */
export interface CompletionReceipt {
  completedAt: number;
  /** The control plane's own deletions through the store (the final sweep included). */
  storeReceipts: StoreReceipt[];
  /** Workers that confirmed (erasure.done / deletion.done), with their receipts. */
  confirmedBy: WorkerReceipt[];
  /** Workers that held a recording but did not confirm before the holder timeout. */
  unconfirmedHolders: string[];
  completedBy: string;
}

/**
 * Records an erasure of one participant of a call, inside the caller's transaction, and appends
 * `erasure.requested`. The recordings the catalogue knows of the call are listed; later reports
 * of other recordings of the call are added to it (Catalogue.upsertReport).
 */
export async function requestErasure(tx: Tx, input: { callId: string; participantId: string; nowMs: number; integration?: string }): Promise<{ erasureId: string; seq: number; recordingIds: string[] }> {
  const { rows } = await tx.query<{ recording_id: string }>('SELECT recording_id FROM recordings WHERE call_id = $1 ORDER BY recording_id', [input.callId]);
  const recordingIds = rows.map((r) => r.recording_id);
  const erasureId = newErasureId();
  await tx.query(
    "INSERT INTO erasures (id, call_id, participant_id, recording_ids, requested_at_ms, state) VALUES ($1, $2, $3, $4, $5, 'pending')",
    [erasureId, input.callId, input.participantId, recordingIds, input.nowMs],
  );
  const fact: FactV2 = { type: 'erasure.requested', erasureId, callId: input.callId, participantId: input.participantId, recordingIds };
  const [seq] = await appendFacts(tx, [fact], input.nowMs, input.integration);
  return { erasureId, seq: seq!, recordingIds };
}

/**
 * Records the deletion of a recording (or one participant's part), inside the caller's
 * transaction, marks the catalogue row, and appends `recording.deleted`. Idempotent per
 * (recording, participant): a pending deletion of the same scope is returned instead of a new one.
 */
export async function requestDeletion(
  tx: Tx,
  input: { recordingId: string; participantId?: string; actor: string; reason: DeletionReason; nowMs: number; integration?: string },
): Promise<{ deletionId: string; seq: number | null; created: boolean }> {
  const existing = await tx.query<{ id: string }>(
    "SELECT id FROM deletions WHERE recording_id = $1 AND participant_id IS NOT DISTINCT FROM $2 AND state = 'pending' LIMIT 1",
    [input.recordingId, input.participantId ?? null],
  );
  if (existing.rows[0] !== undefined) return { deletionId: existing.rows[0].id, seq: null, created: false };
  const deletionId = newDeletionId();
  await tx.query(
    "INSERT INTO deletions (id, recording_id, participant_id, actor, reason, requested_at_ms, state) VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
    [deletionId, input.recordingId, input.participantId ?? null, input.actor, input.reason, input.nowMs],
  );
  if (input.participantId === undefined) {
    await tx.query("UPDATE recordings SET state = 'deleted', updated_at_ms = $2 WHERE recording_id = $1 AND state <> 'expired'", [input.recordingId, input.nowMs]);
  }
  const fact: FactV2 =
    input.participantId === undefined
      ? { type: 'recording.deleted', deletionId, recordingId: input.recordingId, reason: input.reason }
      : { type: 'recording.deleted', deletionId, recordingId: input.recordingId, participantId: input.participantId, reason: input.reason };
  const [seq] = await appendFacts(tx, [fact], input.nowMs, input.integration);
  return { deletionId, seq: seq!, created: true };
}

/**
 * A worker's confirmation of one ledger entry, with its receipts: the same update for erasures and
 * deletions (the table is one of two fixed statements, never text from input).
 */
const CONFIRM_SQL = {
  erasures: `UPDATE erasures
        SET confirmed_by = CASE WHEN $2 = ANY(confirmed_by) THEN confirmed_by ELSE array_append(confirmed_by, $2) END,
            worker_receipts = worker_receipts || $3::jsonb
      WHERE id = $1
      RETURNING state`,
  deletions: `UPDATE deletions
        SET confirmed_by = CASE WHEN $2 = ANY(confirmed_by) THEN confirmed_by ELSE array_append(confirmed_by, $2) END,
            worker_receipts = worker_receipts || $3::jsonb
      WHERE id = $1
      RETURNING state`,
} as const;

async function recordConfirmation(
  db: Queryable,
  table: keyof typeof CONFIRM_SQL,
  id: string,
  receipt: WorkerReceipt,
): Promise<'recorded' | 'unknown' | 'done'> {
  const { rows } = await db.query<{ state: string }>(CONFIRM_SQL[table], [id, receipt.workerId, JSON.stringify([receipt])]);
  if (rows[0] === undefined) return 'unknown';
  return rows[0].state === 'done' ? 'done' : 'recorded';
}

/** Records a worker's confirmation (erasure.done). Unknown or already completed ids: false. */
export function confirmErasure(db: Queryable, erasureId: string, workerId: string, receipts: StoreReceipt[], nowMs: number): Promise<'recorded' | 'unknown' | 'done'> {
  return recordConfirmation(db, 'erasures', erasureId, { workerId, at: nowMs, receipts });
}

/** Records a worker's confirmation of a deletion, with the store's receipt. */
export function confirmDeletion(db: Queryable, deletionId: string, workerId: string, receipt: StoreReceipt, nowMs: number): Promise<'recorded' | 'unknown' | 'done'> {
  return recordConfirmation(db, 'deletions', deletionId, { workerId, at: nowMs, receipts: [receipt] });
}

export async function pendingErasures(db: Queryable): Promise<PendingErasure[]> {
  const { rows } = await db.query<{ id: string; call_id: string; participant_id: string; recording_ids: string[] }>(
    "SELECT id, call_id, participant_id, recording_ids FROM erasures WHERE state = 'pending' ORDER BY requested_at_ms, id",
  );
  return rows.map((r) => ({ erasureId: r.id, callId: r.call_id, participantId: r.participant_id, recordingIds: r.recording_ids }));
}

export async function pendingDeletions(db: Queryable): Promise<PendingDeletion[]> {
  const { rows } = await db.query<{ id: string; recording_id: string; participant_id: string | null; reason: DeletionReason }>(
    "SELECT id, recording_id, participant_id, reason FROM deletions WHERE state = 'pending' ORDER BY requested_at_ms, id",
  );
  return rows.map((r) =>
    r.participant_id === null
      ? { deletionId: r.id, recordingId: r.recording_id, reason: r.reason }
      : { deletionId: r.id, recordingId: r.recording_id, participantId: r.participant_id, reason: r.reason },
  );
}

/**
 * Completed deletions and erasures newer than `sinceMs`: a writer that missed the fact (it was
 * disconnected when the request completed) still learns the recording is gone. Older ones
 * cannot matter: no call, and so no recording, outlives the horizon (see docs).
 */
export async function recentTombstones(db: Queryable, sinceMs: number): Promise<Tombstone[]> {
  const { rows } = await db.query<{ recording_id: string; participant_id: string | null }>(
    `SELECT recording_id, participant_id FROM deletions WHERE state = 'done' AND completed_at_ms >= $1
     UNION
     SELECT unnest(recording_ids), participant_id FROM erasures WHERE state = 'done' AND completed_at_ms >= $1
     ORDER BY 1, 2`,
    [sinceMs],
  );
  return rows.map((r) => (r.participant_id === null ? { recordingId: r.recording_id } : { recordingId: r.recording_id, participantId: r.participant_id }));
}

export async function getErasure(db: Queryable, id: string): Promise<ErasureRow | undefined> {
  const { rows } = await db.query<ErasureRow>(
    'SELECT id, call_id, participant_id, recording_ids, requested_at_ms, state, completed_at_ms, receipt, confirmed_by, worker_receipts FROM erasures WHERE id = $1',
    [id],
  );
  return rows[0];
}

export async function getDeletion(db: Queryable, id: string): Promise<DeletionRow | undefined> {
  const { rows } = await db.query<DeletionRow>(
    'SELECT id, recording_id, participant_id, actor, reason, requested_at_ms, state, completed_at_ms, receipt, confirmed_by, worker_receipts FROM deletions WHERE id = $1',
    [id],
  );
  return rows[0];
}

/**
 * A recording of a call with erasures became known after they were requested (the worker's
 * report came late): a pending erasure gets it added; for a completed one a follow-up erasure
 * is requested, so nothing of an erased customer survives.
 */
export async function coverNewRecordingByErasures(tx: Tx, entry: CatalogueEntry, erasures: { participant_id: string; state: string }[], nowMs: number): Promise<void> {
  const participants = [...new Set(erasures.map((e) => e.participant_id))];
  for (const participantId of participants) {
    const pending = await tx.query(
      `UPDATE erasures SET recording_ids = array_append(recording_ids, $3)
        WHERE call_id = $1 AND participant_id = $2 AND state = 'pending' AND NOT ($3 = ANY(recording_ids))
        RETURNING id`,
      [entry.callId, participantId, entry.recordingId],
    );
    const stillPending = await tx.query("SELECT 1 FROM erasures WHERE call_id = $1 AND participant_id = $2 AND state = 'pending'", [entry.callId, participantId]);
    if (pending.rowCount === 0 && stillPending.rowCount === 0) await requestErasure(tx, { callId: entry.callId, participantId, nowMs });
  }
}
