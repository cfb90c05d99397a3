import { createHash } from 'node:crypto';
import type { Database, Tx } from '../db/Database.ts';
import { FactRefused } from './FactRefused.ts';
import type { Answer } from './ingest.ts';

/**
 * Every POST/PUT carries an `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): a
 * webhook retried after a timeout must not apply twice. The key row is inserted in the same
 * transaction as the write, so:
 * - a retry after the commit finds the row and gets the stored answer (`Idempotent-Replayed: true`);
 * - a retry racing the first attempt waits on the row's unique index until that one commits
 *   (then replays) or rolls back (then runs itself);
 * - a refused write stores nothing (it changed nothing), so its retry is judged afresh: a
 *   consent that arrived before its call.started succeeds once the call exists;
 * - the same key with a different request is refused (`idempotency-key-reused`, 422).
 * Keys are scoped to the integration and purged after 24 h (Maintenance).
 */

export const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9_.:-]{8,128}$/;
export const IDEMPOTENCY_TTL_MS = 24 * 3600_000;

/** Canonical JSON (sorted keys) so the same body with another key order hashes the same. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function requestHash(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n${canonical(body ?? null)}`).digest('hex');
}

export interface IdempotentResult extends Answer {
  replayed: boolean;
}

export async function idempotentWrite(
  db: Database,
  scope: { integrationId: string; key: string; requestHash: string; nowMs: number },
  write: (tx: Tx) => Promise<Answer>,
): Promise<IdempotentResult> {
  return db.transaction(async (tx) => {
    const inserted = await tx.query(
      'INSERT INTO idempotency (integration_id, key, request_hash, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (integration_id, key) DO NOTHING RETURNING key',
      [scope.integrationId, scope.key, scope.requestHash, scope.nowMs],
    );
    if (inserted.rowCount === 0) {
      const { rows } = await tx.query<{ request_hash: string; status: number; response: Record<string, unknown> }>(
        'SELECT request_hash, status, response FROM idempotency WHERE integration_id = $1 AND key = $2',
        [scope.integrationId, scope.key],
      );
      const stored = rows[0];
      if (stored === undefined || stored.request_hash !== scope.requestHash) {
        throw new FactRefused(
          'IDEMPOTENCY_KEY_REUSED',
          'idempotency-key-reused',
          'this Idempotency-Key was already used for a different request; use a fresh key for every distinct write',
          { field: 'Idempotency-Key' },
        );
      }
      return { status: stored.status, body: stored.response, replayed: true };
    }
    const answer = await write(tx);
    await tx.query('UPDATE idempotency SET status = $3, response = $4::jsonb WHERE integration_id = $1 AND key = $2', [
      scope.integrationId,
      scope.key,
      answer.status,
      JSON.stringify(answer.body),
    ]);
    return { ...answer, replayed: false };
  });
}
