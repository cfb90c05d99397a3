import type { Database } from '../db/Database.ts';
import { monthKey } from '../gate/month.ts';

/**
 * The monthly cap (R6), decided by the control plane for every worker: a recording is admitted
 * for all of its agents or for none, in ONE transaction that locks each agent's counter row of
 * the month (`SELECT ... FOR UPDATE`, in agent-id order so two admissions cannot deadlock). Two
 * workers admitting for the same agent at once queue on the row: the count can never pass the
 * cap, whatever the number of workers or replicas.
 *
 * Idempotent per recording: asking again for an admitted recording (a worker retrying after a
 * timeout) answers admitted without counting twice.
 */

export type CapOutcome = { admitted: true; month: string } | { admitted: false; month: string; reason: 'cap-reached' | 'no-schedule' };

export async function decideCap(db: Database, input: { recordingId: string; agentIds: readonly string[]; nowMs: number }): Promise<CapOutcome> {
  const month = monthKey(input.nowMs);
  const agents = [...new Set(input.agentIds)].sort();
  return db.transaction(async (tx) => {
    for (const agent of agents) {
      await tx.query('INSERT INTO cap_counts (agent_id, month, count) VALUES ($1, $2, 0) ON CONFLICT (agent_id, month) DO NOTHING', [agent, month]);
    }
    const { rows: counts } = await tx.query<{ agent_id: string; count: number }>(
      'SELECT agent_id, count FROM cap_counts WHERE month = $1 AND agent_id = ANY($2) ORDER BY agent_id FOR UPDATE',
      [month, agents],
    );
    // Read only under the locks: a concurrent request for the same recording (same agents, same
    // rows) has committed by now, and its admission is visible (read committed: a new snapshot
    // per statement), so the retry answers "admitted" instead of counting twice.
    const { rows: admitted } = await tx.query<{ agent_id: string }>('SELECT agent_id FROM cap_admissions WHERE recording_id = $1', [input.recordingId]);
    const already = new Set(admitted.map((r) => r.agent_id));
    if (already.size > 0 && agents.every((a) => already.has(a))) return { admitted: true, month };
    const { rows: caps } = await tx.query<{ agent_id: string; monthly_cap: number }>('SELECT agent_id, monthly_cap FROM schedules WHERE agent_id = ANY($1)', [agents]);
    const capOf = new Map(caps.map((c) => [c.agent_id, c.monthly_cap]));
    const countOf = new Map(counts.map((c) => [c.agent_id, c.count]));
    for (const agent of agents) {
      if (already.has(agent)) continue;
      const cap = capOf.get(agent);
      if (cap === undefined) return { admitted: false, month, reason: 'no-schedule' };
      if ((countOf.get(agent) ?? 0) >= cap) return { admitted: false, month, reason: 'cap-reached' };
    }
    for (const agent of agents) {
      if (already.has(agent)) continue;
      await tx.query('UPDATE cap_counts SET count = count + 1 WHERE agent_id = $1 AND month = $2', [agent, month]);
      await tx.query('INSERT INTO cap_admissions (recording_id, agent_id, month, at_ms) VALUES ($1, $2, $3, $4)', [input.recordingId, agent, month, input.nowMs]);
    }
    return { admitted: true, month };
  });
}

/** Counters and admissions of one agent and month (tests, operators). */
export async function capCount(db: Database, agentId: string, month: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>('SELECT count FROM cap_counts WHERE agent_id = $1 AND month = $2', [agentId, month]);
  return rows[0]?.count ?? 0;
}

/**
 * Months whose counters may be purged at `nowMs`: those that ended more than `retentionMs` ago
 * (R8: nothing of an agent's recording history outlives the retention period after the month).
 * Month keys compare as strings (YYYY-MM).
 */
export function purgeableBefore(nowMs: number, retentionMs: number): string {
  // The newest month whose end (= start of the next month) is at or before now - retention.
  const limit = new Date(nowMs - retentionMs);
  // monthKey of the month containing `limit` is still within retention; everything before it ended before `limit`.
  return monthKey(Date.UTC(limit.getUTCFullYear(), limit.getUTCMonth(), 1));
}
