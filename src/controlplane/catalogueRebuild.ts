import type { Database } from '../db/Database.ts';
import { coverNewRecordingByErasures, requestDeletion } from '../erasure/ledger.ts';
import { LIVE_STATES, upsertEntry, type CatalogueEntry, type CatalogueState } from '../catalogue/Catalogue.ts';

/**
 * `optin catalogue rebuild`: the store's manifests are the source of truth; the catalogue is
 * brought in line with them and every difference is listed:
 * - `added`: in the store, not in the catalogue (a report was lost);
 * - `changed`: counts, end or state differ (the manifest wins);
 * - `missing-from-store`: a live row with no manifest: marked deleted (or expired, past expiry);
 *    rows still recording and updated within `inProgressGraceMs` are left alone (their manifest
 *    may not be written yet);
 * - `deleted-but-in-store`: the recording was deleted, yet its manifest is back (a late writer):
 *    a new deletion is requested, so the sweeper removes it again.
 */

export type DifferenceKind = 'added' | 'changed' | 'missing-from-store' | 'expired' | 'deleted-but-in-store';

export interface CatalogueDifference {
  recordingId: string;
  kind: DifferenceKind;
  /** For `changed`: which fields differed. */
  fields?: string[];
  /** What the rebuild did (or would do, in a dry run). */
  action: string;
}

export interface RebuildResult {
  scanned: number;
  catalogueRows: number;
  differences: CatalogueDifference[];
  dryRun: boolean;
}

interface Row {
  recording_id: string;
  state: CatalogueState;
  segments: number;
  bytes: number;
  tracks: number;
  ended_at_ms: number | null;
  expires_at_ms: number;
  updated_at_ms: number;
}

export async function rebuildCatalogue(
  db: Database,
  entries: readonly CatalogueEntry[],
  options: { nowMs: number; dryRun?: boolean; inProgressGraceMs?: number },
): Promise<RebuildResult> {
  const dryRun = options.dryRun ?? false;
  const grace = options.inProgressGraceMs ?? 10 * 60_000;
  const { rows } = await db.query<Row>('SELECT recording_id, state, segments, bytes, tracks, ended_at_ms, expires_at_ms, updated_at_ms FROM recordings');
  const byId = new Map(rows.map((r) => [r.recording_id, r]));
  const { rows: tomb } = await db.query<{ recording_id: string }>('SELECT DISTINCT recording_id FROM deletions WHERE participant_id IS NULL');
  const tombstoned = new Set(tomb.map((t) => t.recording_id));
  const differences: CatalogueDifference[] = [];
  const inStore = new Set<string>();

  for (const e of entries) {
    inStore.add(e.recordingId);
    const row = byId.get(e.recordingId);
    if (tombstoned.has(e.recordingId)) {
      differences.push({ recordingId: e.recordingId, kind: 'deleted-but-in-store', action: dryRun ? 'would request its deletion again' : 'deletion requested again' });
      if (!dryRun) {
        await db.transaction((tx) => requestDeletion(tx, { recordingId: e.recordingId, actor: 'catalogue-rebuild', reason: 'operator', nowMs: options.nowMs }));
      }
      continue;
    }
    if (row === undefined) {
      differences.push({ recordingId: e.recordingId, kind: 'added', action: dryRun ? 'would add the row' : 'row added' });
    } else {
      const fields: string[] = [];
      if (row.state !== e.state && !(row.state === 'expired' || row.state === 'deleted')) fields.push('state');
      if (row.segments !== e.segments) fields.push('segments');
      if (row.bytes !== e.bytes) fields.push('bytes');
      if (row.tracks !== e.tracks) fields.push('tracks');
      if ((row.ended_at_ms ?? undefined) !== e.endedAt) fields.push('endedAt');
      if (row.expires_at_ms !== e.expiresAt) fields.push('expiresAt');
      if (fields.length === 0) continue;
      differences.push({ recordingId: e.recordingId, kind: 'changed', fields, action: dryRun ? 'would take the manifest values' : 'manifest values taken' });
    }
    if (!dryRun) {
      await db.transaction(async (tx) => {
        const result = await upsertEntry(tx, e, options.nowMs, 'rebuild');
        if (result.inserted && result.erasures.length > 0) await coverNewRecordingByErasures(tx, e, result.erasures, options.nowMs);
      });
    }
  }

  for (const row of rows) {
    if (inStore.has(row.recording_id) || !LIVE_STATES.includes(row.state)) continue;
    if (row.expires_at_ms <= options.nowMs) {
      differences.push({ recordingId: row.recording_id, kind: 'expired', action: dryRun ? 'would mark it expired' : 'marked expired' });
      if (!dryRun) await db.query("UPDATE recordings SET state = 'expired', participants = '[]'::jsonb, updated_at_ms = $2 WHERE recording_id = $1", [row.recording_id, options.nowMs]);
      continue;
    }
    if (row.state === 'recording' && row.updated_at_ms > options.nowMs - grace) continue;
    differences.push({ recordingId: row.recording_id, kind: 'missing-from-store', action: dryRun ? 'would mark it deleted' : 'marked deleted' });
    if (!dryRun) await db.query("UPDATE recordings SET state = 'deleted', participants = '[]'::jsonb, updated_at_ms = $2 WHERE recording_id = $1", [row.recording_id, options.nowMs]);
  }
  return { scanned: entries.length, catalogueRows: rows.length, differences, dryRun };
}
