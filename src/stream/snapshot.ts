import type { Window } from '../gate/facts.ts';
import type { StoredParticipant } from '../facts/ingest.ts';
import type { AgentSchedule, CallSnapshot, ConsentEntry } from '../gate/policySnapshot.ts';
import {
  MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION_2,
  encodeV2,
  type PendingDeletion,
  type PendingErasure,
  type SnapshotV2,
  type Tombstone,
} from '../control/protocolV2.ts';
import type { Database } from '../db/Database.ts';
import { pendingDeletions, pendingErasures, recentTombstones } from '../erasure/ledger.ts';

/**
 * The full state a worker needs, read in ONE repeatable-read transaction together with the
 * stream head: every row it contains is exactly the state after fact `seq` and before `seq + 1`,
 * so the worker can apply deltas from `seq + 1` on without missing or repeating one.
 */

export interface SnapshotContent {
  seq: number;
  calls: CallSnapshot[];
  agents: AgentSchedule[];
  erasures: PendingErasure[];
  deletions: PendingDeletion[];
  tombstones: Tombstone[];
}

export async function buildSnapshot(db: Database, options: { nowMs: number; tombstoneHorizonMs: number }): Promise<SnapshotContent> {
  return db.transaction(
    async (tx) => {
      const { rows: head } = await tx.query<{ seq: number }>('SELECT seq FROM stream_head WHERE id = 1');
      const { rows: calls } = await tx.query<{ call_id: string; participants: StoredParticipant[]; paused: boolean }>(
        "SELECT call_id, participants, paused FROM calls WHERE state = 'active' ORDER BY call_id",
      );
      const { rows: consents } = await tx.query<{ call_id: string; participant_id: string; status: ConsentEntry['status']; evidence: ConsentEntry['evidence']; erase: boolean | null }>(
        "SELECT k.call_id, k.participant_id, k.status, k.evidence, k.erase FROM consents k JOIN calls c ON c.call_id = k.call_id WHERE c.state = 'active' ORDER BY k.call_id, k.participant_id",
      );
      const { rows: schedules } = await tx.query<{ agent_id: string; windows: Window[]; monthly_cap: number }>('SELECT agent_id, windows, monthly_cap FROM schedules ORDER BY agent_id');
      const erasures = await pendingErasures(tx);
      const deletions = await pendingDeletions(tx);
      const tombstones = await recentTombstones(tx, options.nowMs - options.tombstoneHorizonMs);

      const consentsByCall = new Map<string, ConsentEntry[]>();
      for (const k of consents) {
        const entry: ConsentEntry = { participantId: k.participant_id, status: k.status, evidence: k.evidence };
        if (k.status === 'withdrawn') entry.erase = k.erase === true;
        const list = consentsByCall.get(k.call_id) ?? [];
        list.push(entry);
        consentsByCall.set(k.call_id, list);
      }
      return {
        seq: head[0]!.seq,
        calls: calls.map((c) => callSnapshot(c.call_id, c.participants, consentsByCall.get(c.call_id) ?? [], c.paused)),
        // Windows already over cannot open a gate: not sent (a subset of a valid schedule is valid).
        agents: schedules.map((s) => ({ agentId: s.agent_id, windows: s.windows.filter((w) => w.end > options.nowMs), monthlyCap: s.monthly_cap })),
        erasures,
        deletions,
        tombstones,
      };
    },
    { isolation: 'repeatable read', readOnly: true },
  );
}

type Lists = Pick<SnapshotV2, 'calls' | 'agents' | 'erasures' | 'deletions' | 'tombstones'>;
const LIST_KEYS = ['calls', 'agents', 'erasures', 'deletions', 'tombstones'] as const;

/**
 * Splits a snapshot into frames whose JSON is at most 64 KiB, packing entries greedily by their
 * encoded size; an empty state is one empty part. All parts share `seq` and `at`.
 */
export function snapshotFrames(content: SnapshotContent, atMs: number): string[] {
  const envelope = JSON.stringify({
    v: 2, type: 'snapshot', seq: Number.MAX_SAFE_INTEGER, at: Number.MAX_SAFE_INTEGER, part: 9999, parts: 9999,
    calls: [], agents: [], erasures: [], deletions: [], tombstones: [],
  }).length;
  const budget = MAX_MESSAGE_BYTES - envelope;
  const empty = (): Lists => ({ calls: [], agents: [], erasures: [], deletions: [], tombstones: [] });
  const groups: Lists[] = [];
  let cur = empty();
  let size = 0;
  let count = 0;
  for (const key of LIST_KEYS) {
    for (const item of content[key] as unknown[]) {
      const bytes = Buffer.byteLength(JSON.stringify(item)) + 1;
      if (size + bytes > budget && count > 0) {
        groups.push(cur);
        cur = empty();
        size = 0;
        count = 0;
      }
      (cur[key] as unknown[]).push(item);
      size += bytes;
      count++;
    }
  }
  groups.push(cur);
  return groups.map((g, part) => encodeV2({ v: PROTOCOL_VERSION_2, type: 'snapshot', seq: content.seq, at: atMs, part, parts: groups.length, ...g }));
}

/** A call as the worker sees it: participants as the fact schema has them, and who left apart. */
function callSnapshot(callId: string, stored: readonly StoredParticipant[], consents: ConsentEntry[], paused: boolean): CallSnapshot {
  const left = stored.filter((p) => p.leftAtMs !== undefined).map((p) => p.participantId);
  const participants = stored.map(({ leftAtMs: _leftAtMs, ...p }) => p);
  return { callId, participants, ...(left.length > 0 ? { left } : {}), consents, paused };
}
