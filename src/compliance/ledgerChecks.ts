import type { Queryable } from '../db/Database.ts';
import type { ExtraCheck } from './byRule.ts';

/**
 * R9 as the control plane sees it: every accepted erasure and deletion is carried out (none
 * stays pending past the time a live holder gets to confirm plus a margin), and a recording
 * the catalogue knows as deleted has no manifest left in the store. Read from the ledger
 * (`erasures`, `deletions`) and the catalogue; `manifestIds` are the recordings the store holds
 * (the compliance report read them anyway).
 */

export interface LedgerCheckOptions {
  nowMs: number;
  /** Pending longer than this is a violation (default 10 minutes: holder timeout 30 s + sweeps + retries). */
  overdueMs?: number;
  manifestIds: ReadonlySet<string>;
}

export async function ledgerChecks(db: Queryable, o: LedgerCheckOptions): Promise<ExtraCheck[]> {
  const overdue = o.overdueMs ?? 10 * 60_000;
  const since = o.nowMs - overdue;
  const { rows: erasures } = await db.query<{ id: string; call_id: string; participant_id: string; requested_at_ms: number; recording_ids: string[] }>(
    "SELECT id, call_id, participant_id, requested_at_ms, recording_ids FROM erasures WHERE state = 'pending' AND requested_at_ms < $1 ORDER BY requested_at_ms LIMIT 200",
    [since],
  );
  const { rows: deletions } = await db.query<{ id: string; recording_id: string; participant_id: string | null; requested_at_ms: number }>(
    "SELECT id, recording_id, participant_id, requested_at_ms FROM deletions WHERE state = 'pending' AND requested_at_ms < $1 ORDER BY requested_at_ms LIMIT 200",
    [since],
  );
  const { rows: deleted } = await db.query<{ recording_id: string; updated_at_ms: number }>(
    "SELECT r.recording_id, r.updated_at_ms FROM recordings r WHERE r.state = 'deleted' AND NOT EXISTS (SELECT 1 FROM deletions d WHERE d.recording_id = r.recording_id AND d.state = 'pending')",
  );
  const lingering = deleted.filter((d) => o.manifestIds.has(d.recording_id));
  const iso = (ms: number): string => new Date(ms).toISOString();
  return [
    {
      check: 'erasures-and-deletions-carried-out',
      rules: ['R9'],
      description: `R9: no erasure or deletion stays pending longer than ${Math.round(overdue / 60_000)} minutes`,
      violations: [
        ...erasures.map((e) => ({
          message: `erasure ${e.id} of participant ${e.participant_id} has been pending since ${iso(e.requested_at_ms)}`,
          evidence: { erasureId: e.id, callId: e.call_id, participantId: e.participant_id, requestedAt: iso(e.requested_at_ms), recordingIds: e.recording_ids },
        })),
        ...deletions.map((d) => ({
          recordingId: d.recording_id,
          message: `deletion ${d.id} has been pending since ${iso(d.requested_at_ms)}`,
          evidence: { deletionId: d.id, recordingId: d.recording_id, participantId: d.participant_id, requestedAt: iso(d.requested_at_ms) },
        })),
      ],
    },
    {
      check: 'deleted-recordings-gone-from-the-store',
      rules: ['R9'],
      description: 'R9: a recording whose deletion completed has no manifest left in the store',
      violations: lingering.map((d) => ({
        recordingId: d.recording_id,
        message: `recording ${d.recording_id} was deleted (catalogue, ${iso(d.updated_at_ms)}) but its manifest is still in the store`,
        evidence: { recordingId: d.recording_id, deletedAt: iso(d.updated_at_ms), manifest: true },
      })),
    },
  ];
}
