import type { Queryable } from '../db/Database.ts';
import { assertId, ID_PATTERN } from '../ids/ids.ts';

/**
 * Agents' requests for the deletion of their own recordings (R9: the team lead deletes at the
 * agent's request), in the control plane's database (table `deletion_requests`, migration 002):
 * one row per recording, pseudonymous ids only. A request is `pending` until the team lead
 * deletes the recording (`deleted`, with the ledger's deletion id, whose receipt the ledger
 * keeps) or the recording goes another way (`closed`: expired, erased, deleted by an operator).
 * Closed rows are purged with the rest of the recording's traces (Maintenance, R8).
 */

export type DeletionRequestState = 'pending' | 'deleted' | 'closed';

export interface DeletionRequest {
  recordingId: string;
  /** The agent who asked (their subject id). */
  requestedBy: string;
  requestedAt: number;
  /** Team leads of the agent when they asked: whose queue shows it. */
  teamLeadIds: string[];
  state: DeletionRequestState;
  closedAt?: number;
  closedBy?: string;
  deletionId?: string;
}

interface Row {
  recording_id: string;
  requested_by: string;
  requested_at_ms: number;
  team_lead_ids: string[];
  state: DeletionRequestState;
  closed_at_ms: number | null;
  closed_by: string | null;
  deletion_id: string | null;
}

const COLUMNS = 'd.recording_id, d.requested_by, d.requested_at_ms, d.team_lead_ids, d.state, d.closed_at_ms, d.closed_by, d.deletion_id';

function toRequest(r: Row): DeletionRequest {
  return {
    recordingId: r.recording_id,
    requestedBy: r.requested_by,
    requestedAt: r.requested_at_ms,
    teamLeadIds: r.team_lead_ids,
    state: r.state,
    ...(r.closed_at_ms === null ? {} : { closedAt: r.closed_at_ms }),
    ...(r.closed_by === null ? {} : { closedBy: r.closed_by }),
    ...(r.deletion_id === null ? {} : { deletionId: r.deletion_id }),
  };
}

/**
 * Records a pending request; idempotent: an existing request (of any state) is returned with
 * `created: false`.
 */
export async function createDeletionRequest(db: Queryable, input: { recordingId: string; requestedBy: string; teamLeadIds: readonly string[]; nowMs: number }): Promise<{ request: DeletionRequest; created: boolean }> {
  assertId('recordingId', input.recordingId);
  assertId('requestedBy', input.requestedBy);
  const leads = [...new Set(input.teamLeadIds.filter((t) => ID_PATTERN.test(t)))].sort();
  const inserted = await db.query<Row>(
    `INSERT INTO deletion_requests AS d (recording_id, requested_by, requested_at_ms, team_lead_ids, state) VALUES ($1, $2, $3, $4, 'pending')
     ON CONFLICT (recording_id) DO NOTHING RETURNING ${COLUMNS}`,
    [input.recordingId, input.requestedBy, input.nowMs, leads],
  );
  if (inserted.rows[0] !== undefined) return { request: toRequest(inserted.rows[0]), created: true };
  const existing = await getDeletionRequest(db, input.recordingId);
  return { request: existing!, created: false };
}

export async function getDeletionRequest(db: Queryable, recordingId: string): Promise<DeletionRequest | undefined> {
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.recording_id = $1`, [recordingId]);
  return rows[0] === undefined ? undefined : toRequest(rows[0]);
}

/** Requests for several recordings at once (an agent's list page): recordingId -> request. */
export async function deletionRequestsFor(db: Queryable, recordingIds: readonly string[]): Promise<Map<string, DeletionRequest>> {
  if (recordingIds.length === 0) return new Map();
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.recording_id = ANY($1)`, [[...recordingIds]]);
  return new Map(rows.map((r) => [r.recording_id, toRequest(r)]));
}

/**
 * Pending requests whose recording is still live, oldest first: a team lead's queue (`teamLeadId`),
 * an agent's own (`requestedBy`), or all (the DPO). Requests whose recording went another way
 * are closed on the way (expired, erased or deleted by someone else).
 */
export async function pendingDeletionRequests(db: Queryable, filter: { teamLeadId?: string; requestedBy?: string }, nowMs: number): Promise<DeletionRequest[]> {
  await db.query(
    `UPDATE deletion_requests SET state = 'closed', closed_at_ms = $1, closed_by = 'system'
      WHERE state = 'pending' AND NOT EXISTS (
        SELECT 1 FROM recordings r WHERE r.recording_id = deletion_requests.recording_id AND r.state IN ('recording', 'complete', 'interrupted') AND r.expires_at_ms > $1)`,
    [nowMs],
  );
  const { rows } =
    filter.teamLeadId !== undefined
      ? await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.state = 'pending' AND d.team_lead_ids @> ARRAY[$1]::text[] ORDER BY d.requested_at_ms, d.recording_id LIMIT 500`, [filter.teamLeadId])
      : filter.requestedBy !== undefined
        ? await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.state = 'pending' AND d.requested_by = $1 ORDER BY d.requested_at_ms, d.recording_id LIMIT 500`, [filter.requestedBy])
        : await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.state = 'pending' ORDER BY d.requested_at_ms, d.recording_id LIMIT 500`);
  return rows.map(toRequest);
}

/** Marks a recording's request done by a deletion (inside the deletion's transaction). Returns whether one was pending. */
export async function closeDeletionRequest(db: Queryable, input: { recordingId: string; by: string; deletionId: string; nowMs: number }): Promise<boolean> {
  const res = await db.query(
    "UPDATE deletion_requests SET state = 'deleted', closed_at_ms = $2, closed_by = $3, deletion_id = $4 WHERE recording_id = $1 AND state = 'pending' RETURNING recording_id",
    [input.recordingId, input.nowMs, input.by, input.deletionId],
  );
  return res.rowCount > 0;
}

/** Purges closed requests older than the retention period (R8). */
export async function purgeDeletionRequests(db: Queryable, olderThanMs: number): Promise<number> {
  const res = await db.query("DELETE FROM deletion_requests WHERE state <> 'pending' AND closed_at_ms < $1", [olderThanMs]);
  return res.rowCount;
}

/** An agent's own requests in every state, newest first (their status: pending, deleted, closed). */
export async function deletionRequestsBy(db: Queryable, requestedBy: string): Promise<DeletionRequest[]> {
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM deletion_requests d WHERE d.requested_by = $1 ORDER BY d.requested_at_ms DESC, d.recording_id LIMIT 200`, [requestedBy]);
  return rows.map(toRequest);
}
