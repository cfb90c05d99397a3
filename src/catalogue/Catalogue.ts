import type { RecordingReport } from '../control/protocolV2.ts';
import type { Queryable, Tx } from '../db/Database.ts';
import { OptinError } from '../errors/OptinError.ts';

/**
 * The catalogue of recordings (issue 13 §7): one row per recording, upserted from the workers'
 * `recording.report` frames, so listing a team's recordings is an index scan instead of reading
 * every manifest. The store's manifests stay the source of truth (`optin catalogue rebuild`).
 *
 * Upserts are idempotent and monotonic: counts only grow, `recording` may become `complete` or
 * `interrupted` and nothing else changes a final state; `deleted` and `expired` are never revived
 * by a late report.
 */

export const RECORDING_STATES = ['recording', 'complete', 'interrupted', 'deleted', 'expired'] as const;
export type CatalogueState = (typeof RECORDING_STATES)[number];
export const LIVE_STATES: readonly CatalogueState[] = ['recording', 'complete', 'interrupted'];

export interface CatalogueParticipant {
  participantId: string;
  role: 'agent' | 'customer';
  subjectId?: string;
  teamLeadId?: string;
}

/** What a catalogue row is built from: a worker's report or a manifest in the store. */
export interface CatalogueEntry {
  recordingId: string;
  callId: string;
  participants: CatalogueParticipant[];
  startedAt: number;
  endedAt?: number;
  tracks: number;
  segments: number;
  bytes: number;
  expiresAt: number;
  state: 'recording' | 'complete' | 'interrupted';
  workerId: string;
}

export interface CatalogueRow {
  recordingId: string;
  callId: string;
  agentIds: string[];
  teamLeadIds: string[];
  participants: CatalogueParticipant[];
  startedAt: number;
  endedAt: number | null;
  tracks: number;
  segments: number;
  bytes: number;
  expiresAt: number;
  state: CatalogueState;
  workerId: string | null;
  updatedAt: number;
}

interface DbRow {
  recording_id: string;
  call_id: string;
  agent_ids: string[];
  team_lead_ids: string[];
  participants: CatalogueParticipant[];
  started_at_ms: number;
  ended_at_ms: number | null;
  tracks: number;
  segments: number;
  bytes: number;
  expires_at_ms: number;
  state: CatalogueState;
  worker_id: string | null;
  updated_at_ms: number;
}

const COLUMNS =
  'r.recording_id, r.call_id, r.agent_ids, r.team_lead_ids, r.participants, r.started_at_ms, r.ended_at_ms, r.tracks, r.segments, r.bytes, r.expires_at_ms, r.state, r.worker_id, r.updated_at_ms';

function toRow(r: DbRow): CatalogueRow {
  return {
    recordingId: r.recording_id,
    callId: r.call_id,
    agentIds: r.agent_ids,
    teamLeadIds: r.team_lead_ids,
    participants: r.participants,
    startedAt: r.started_at_ms,
    endedAt: r.ended_at_ms,
    tracks: r.tracks,
    segments: r.segments,
    bytes: r.bytes,
    expiresAt: r.expires_at_ms,
    state: r.state,
    workerId: r.worker_id,
    updatedAt: r.updated_at_ms,
  };
}

export function entryFromReport(report: RecordingReport, workerId: string): CatalogueEntry {
  const state = report.event === 'ended' ? 'complete' : report.event === 'interrupted' ? 'interrupted' : 'recording';
  const entry: CatalogueEntry = {
    recordingId: report.recordingId,
    callId: report.callId,
    participants: report.participants,
    startedAt: report.startedAt,
    tracks: report.tracks,
    segments: report.segments,
    bytes: report.bytes,
    expiresAt: report.expiresAt,
    state,
    workerId,
  };
  if (report.endedAt !== undefined) entry.endedAt = report.endedAt;
  return entry;
}

export type UpsertMode = 'report' | 'rebuild';

/**
 * Upserts one recording inside the caller's transaction. `report` is monotonic (above);
 * `rebuild` takes the manifest's values as they are (the store is the truth) but still never
 * revives a deleted or expired row. Returns the row's state after the write.
 */
export async function upsertEntry(tx: Tx, entry: CatalogueEntry, nowMs: number, mode: UpsertMode = 'report'): Promise<{ inserted: boolean; state: CatalogueState; erasures: { participant_id: string; state: string }[] }> {
  // Erased participants stay anonymous whatever a report says (R9): no subject or lead id.
  const { rows: erased } = await tx.query<{ participant_id: string; state: string }>('SELECT participant_id, state FROM erasures WHERE call_id = $1', [entry.callId]);
  const erasedIds = new Set(erased.map((e) => e.participant_id));
  const participants = entry.participants.map((p) =>
    erasedIds.has(p.participantId) ? { participantId: p.participantId, role: p.role } : p,
  );
  const agentIds = [...new Set(participants.filter((p) => p.role === 'agent' && p.subjectId !== undefined).map((p) => p.subjectId!))].sort();
  const leadIds = [...new Set(participants.filter((p) => p.role === 'agent' && p.teamLeadId !== undefined).map((p) => p.teamLeadId!))].sort();
  const { rows: tomb } = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM deletions WHERE recording_id = $1 AND participant_id IS NULL', [entry.recordingId]);
  const tombstoned = (tomb[0]?.n ?? 0) > 0;
  const state = tombstoned ? 'deleted' : entry.state;
  const sql =
    mode === 'report'
      ? `INSERT INTO recordings AS r (recording_id, call_id, agent_ids, team_lead_ids, participants, started_at_ms, ended_at_ms, tracks, segments, bytes, expires_at_ms, state, worker_id, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (recording_id) DO UPDATE SET
           ended_at_ms = COALESCE(EXCLUDED.ended_at_ms, r.ended_at_ms),
           tracks = GREATEST(r.tracks, EXCLUDED.tracks),
           segments = GREATEST(r.segments, EXCLUDED.segments),
           bytes = GREATEST(r.bytes, EXCLUDED.bytes),
           participants = CASE WHEN r.state IN ('deleted', 'expired') THEN r.participants ELSE EXCLUDED.participants END,
           agent_ids = CASE WHEN r.state IN ('deleted', 'expired') THEN r.agent_ids ELSE EXCLUDED.agent_ids END,
           team_lead_ids = CASE WHEN r.state IN ('deleted', 'expired') THEN r.team_lead_ids ELSE EXCLUDED.team_lead_ids END,
           state = CASE WHEN r.state = 'recording' THEN EXCLUDED.state ELSE r.state END,
           worker_id = EXCLUDED.worker_id,
           updated_at_ms = EXCLUDED.updated_at_ms
         RETURNING r.state, (xmax = 0) AS inserted`
      : `INSERT INTO recordings AS r (recording_id, call_id, agent_ids, team_lead_ids, participants, started_at_ms, ended_at_ms, tracks, segments, bytes, expires_at_ms, state, worker_id, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (recording_id) DO UPDATE SET
           call_id = EXCLUDED.call_id,
           agent_ids = EXCLUDED.agent_ids,
           team_lead_ids = EXCLUDED.team_lead_ids,
           participants = EXCLUDED.participants,
           started_at_ms = EXCLUDED.started_at_ms,
           ended_at_ms = EXCLUDED.ended_at_ms,
           tracks = EXCLUDED.tracks,
           segments = EXCLUDED.segments,
           bytes = EXCLUDED.bytes,
           expires_at_ms = EXCLUDED.expires_at_ms,
           state = CASE WHEN r.state IN ('deleted', 'expired') THEN r.state ELSE EXCLUDED.state END,
           worker_id = EXCLUDED.worker_id,
           updated_at_ms = EXCLUDED.updated_at_ms
         RETURNING r.state, (xmax = 0) AS inserted`;
  const { rows } = await tx.query<{ state: CatalogueState; inserted: boolean }>(sql, [
    entry.recordingId,
    entry.callId,
    agentIds,
    leadIds,
    JSON.stringify(participants),
    entry.startedAt,
    entry.endedAt ?? null,
    entry.tracks,
    entry.segments,
    entry.bytes,
    entry.expiresAt,
    state,
    entry.workerId,
    nowMs,
  ]);
  const result = rows[0]!;
  if (mode === 'rebuild') await tx.query('DELETE FROM recording_index WHERE recording_id = $1', [entry.recordingId]);
  for (const agent of agentIds) {
    await tx.query("INSERT INTO recording_index (kind, key, started_at_ms, recording_id) VALUES ('agent', $1, $2, $3) ON CONFLICT DO NOTHING", [agent, entry.startedAt, entry.recordingId]);
  }
  for (const lead of leadIds) {
    await tx.query("INSERT INTO recording_index (kind, key, started_at_ms, recording_id) VALUES ('lead', $1, $2, $3) ON CONFLICT DO NOTHING", [lead, entry.startedAt, entry.recordingId]);
  }
  // A new recording of a call with erasures is the erasure ledger's business (erasure/ledger.ts
  // coverNewRecordingByErasures): the caller passes these on.
  return { inserted: result.inserted, state: result.state, erasures: erased };
}

// -- queries ------------------------------------------------------------------------------------

export interface ListQuery {
  by: 'agent' | 'lead';
  key: string;
  /** started_at window, ms: from inclusive, to exclusive. */
  from?: number;
  to?: number;
  limit: number;
  cursor?: string;
  /** Default: the live states (recording, complete, interrupted). */
  states?: readonly CatalogueState[];
}

export interface ListPage {
  recordings: CatalogueRow[];
  /** Opaque; absent on the last page. */
  nextCursor?: string;
}

export function encodeCursor(startedAt: number, recordingId: string): string {
  return Buffer.from(JSON.stringify([startedAt, recordingId]), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): { startedAt: number; recordingId: string } {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && typeof v[1] === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(v[1])) {
      return { startedAt: v[0] as number, recordingId: v[1] };
    }
  } catch {
    // fall through
  }
  throw new OptinError('INVALID_INPUT', 'cursor is not one this API returned; start again without it');
}

const MAX_TIME = 8_640_000_000_000_000;

/**
 * A team's (by: 'lead') or an agent's recordings, newest first, keyset-paginated over the
 * recording_index primary key (kind, key, started_at_ms, recording_id): each page is one index
 * range scan however deep it is, unlike OFFSET.
 */
export async function listRecordings(db: Queryable, q: ListQuery): Promise<ListPage> {
  const limit = Math.min(Math.max(1, q.limit), 500);
  const states = [...(q.states ?? LIVE_STATES)];
  const from = q.from ?? 0;
  const to = q.to ?? MAX_TIME;
  const fetch = limit + 1;
  const { rows } =
    q.cursor === undefined
      ? await db.query<DbRow>(
          `SELECT ${COLUMNS} FROM recording_index i JOIN recordings r ON r.recording_id = i.recording_id
            WHERE i.kind = $1 AND i.key = $2 AND i.started_at_ms >= $3 AND i.started_at_ms < $4 AND r.state = ANY($5)
            ORDER BY i.started_at_ms DESC, i.recording_id DESC LIMIT $6`,
          [q.by, q.key, from, to, states, fetch],
        )
      : await (() => {
          const c = decodeCursor(q.cursor);
          return db.query<DbRow>(
            `SELECT ${COLUMNS} FROM recording_index i JOIN recordings r ON r.recording_id = i.recording_id
              WHERE i.kind = $1 AND i.key = $2 AND i.started_at_ms >= $3 AND i.started_at_ms < $4 AND r.state = ANY($5)
                AND (i.started_at_ms, i.recording_id) < ($6, $7::text COLLATE "C")
              ORDER BY i.started_at_ms DESC, i.recording_id DESC LIMIT $8`,
            [q.by, q.key, from, to, states, c.startedAt, c.recordingId, fetch],
          );
        })();
  const page = rows.slice(0, limit).map(toRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined ? { recordings: page, nextCursor: encodeCursor(last.startedAt, last.recordingId) } : { recordings: page };
}

export async function getRecording(db: Queryable, recordingId: string): Promise<CatalogueRow | undefined> {
  const { rows } = await db.query<DbRow>(`SELECT ${COLUMNS} FROM recordings r WHERE r.recording_id = $1`, [recordingId]);
  return rows[0] === undefined ? undefined : toRow(rows[0]);
}

/** Marks rows whose expiry passed (the store's sweeper deletes the objects at that instant). */
export async function markExpired(db: Queryable, nowMs: number): Promise<number> {
  const res = await db.query(
    "UPDATE recordings SET state = 'expired', participants = '[]'::jsonb, updated_at_ms = $1 WHERE state IN ('recording', 'complete', 'interrupted') AND expires_at_ms <= $1",
    [nowMs],
  );
  return res.rowCount;
}

// -- reads for people (issue 14: the access API and the web app) ------------------------------

/** Every recording, newest first, keyset-paginated (the DPO's list: metadata only). */
export async function listAllRecordings(db: Queryable, q: { limit: number; cursor?: string; states?: readonly CatalogueState[] }): Promise<ListPage> {
  const limit = Math.min(Math.max(1, q.limit), 500);
  const states = [...(q.states ?? LIVE_STATES)];
  const c = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
  const { rows } =
    c === undefined
      ? await db.query<DbRow>(`SELECT ${COLUMNS} FROM recordings r WHERE r.state = ANY($1) ORDER BY r.started_at_ms DESC, r.recording_id DESC LIMIT $2`, [states, limit + 1])
      : await db.query<DbRow>(
          `SELECT ${COLUMNS} FROM recordings r WHERE r.state = ANY($1) AND (r.started_at_ms, r.recording_id) < ($2, $3::text COLLATE "C")
            ORDER BY r.started_at_ms DESC, r.recording_id DESC LIMIT $4`,
          [states, c.startedAt, c.recordingId, limit + 1],
        );
  const page = rows.slice(0, limit).map(toRow);
  const last = page.at(-1);
  return rows.length > limit && last !== undefined ? { recordings: page, nextCursor: encodeCursor(last.startedAt, last.recordingId) } : { recordings: page };
}

/** Live recordings in which `subjectId` is a (not erased) participant, oldest first: what an extract covers. */
export async function recordingsOfSubject(db: Queryable, subjectId: string): Promise<CatalogueRow[]> {
  const { rows } = await db.query<DbRow>(
    `SELECT ${COLUMNS} FROM recordings r WHERE r.participants @> $1::jsonb AND r.state = ANY($2) ORDER BY r.started_at_ms, r.recording_id`,
    [JSON.stringify([{ subjectId }]), [...LIVE_STATES]],
  );
  return rows.map(toRow);
}

/** A uniform random sample of live recordings (the DPO's spot check). */
export async function sampleRecordings(db: Queryable, n: number): Promise<CatalogueRow[]> {
  const { rows } = await db.query<DbRow>(`SELECT ${COLUMNS} FROM recordings r WHERE r.state = ANY($1) ORDER BY random() LIMIT $2`, [[...LIVE_STATES], Math.min(Math.max(1, n), 200)]);
  return rows.map(toRow);
}

/** How many recordings of an agent started in [fromMs, toMs) (any state: the cap counts admissions, not survivors). */
export async function countAgentRecordings(db: Queryable, agentId: string, fromMs: number, toMs: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM recording_index WHERE kind = 'agent' AND key = $1 AND started_at_ms >= $2 AND started_at_ms < $3",
    [agentId, fromMs, toMs],
  );
  return rows[0]?.n ?? 0;
}
