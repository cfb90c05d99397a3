import type { FactV2 } from '../control/protocolV2.ts';
import type { Queryable, Tx } from './Database.ts';

/**
 * The stream log: appending a fact gives it the next sequence number, inside the caller's
 * transaction. `UPDATE stream_head ... RETURNING seq` takes the one row lock every writer needs,
 * so writers queue there and commit in seq order: a reader of `facts` never sees seq n+1 before
 * n. The NOTIFY is delivered at commit (and dropped on rollback), so replicas hear only of facts
 * that exist.
 */

export const FACTS_CHANNEL = 'optin_facts';

export interface StoredFact {
  seq: number;
  at: number;
  fact: FactV2;
}

export async function appendFacts(tx: Tx, facts: readonly FactV2[], nowMs: number, integration?: string): Promise<number[]> {
  const seqs: number[] = [];
  for (const fact of facts) {
    // One round trip: take the next seq (the row lock), store the fact, and queue the NOTIFY
    // (sent at commit). Writers hold the stream_head lock from here to their commit, so callers
    // append last, after their own checks and state changes.
    const { rows } = await tx.query<{ seq: number }>(
      `WITH head AS (UPDATE stream_head SET seq = seq + 1 WHERE id = 1 RETURNING seq),
            stored AS (INSERT INTO facts (seq, at_ms, type, body, integration) SELECT seq, $1, $2, $3::jsonb, $4 FROM head RETURNING seq)
       SELECT seq, pg_notify($5, seq::text) FROM stored`,
      [nowMs, fact.type, JSON.stringify(fact), integration ?? null, FACTS_CHANNEL],
    );
    seqs.push(rows[0]!.seq);
  }
  return seqs;
}

/** Facts after `afterSeq`, in order, at most `limit`. */
export async function readFactsAfter(db: Queryable, afterSeq: number, limit: number): Promise<StoredFact[]> {
  const { rows } = await db.query<{ seq: number; at_ms: number; body: FactV2 }>(
    'SELECT seq, at_ms, body FROM facts WHERE seq > $1 ORDER BY seq LIMIT $2',
    [afterSeq, limit],
  );
  return rows.map((r) => ({ seq: r.seq, at: r.at_ms, fact: r.body }));
}

export async function streamHead(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ seq: number }>('SELECT seq FROM stream_head WHERE id = 1');
  return rows[0]?.seq ?? 0;
}
