import { purgeableBefore } from '../caps/capDecision.ts';
import { markExpired } from '../catalogue/Catalogue.ts';
import type { Database } from '../db/Database.ts';
import { IDEMPOTENCY_TTL_MS } from '../facts/idempotency.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';

/**
 * Retention (R8) for the control plane's own tables, run periodically by every replica (each
 * statement is an idempotent DELETE/UPDATE, so two replicas doing it at once is harmless):
 * - cap counters and admissions: after their month ended plus the retention period;
 * - ended calls and their consents, completed erasures and deletions, R7 states: after retention;
 * - catalogue rows: marked expired at their expiry, removed a day after they expired or were deleted;
 * - the stream log: after factsRetentionHours; idempotency keys after 24 h;
 * - `extra` passes: the people's side (ended sessions, abandoned sign-ins, closed deletion
 *   requests, finished extract jobs).
 */
export class Maintenance {
  readonly #db: Database;
  readonly #retentionMs: number;
  readonly #factsRetentionMs: number;
  readonly #logger: Logger;
  readonly #metrics: ControlPlaneMetrics | undefined;
  readonly #now: () => number;
  readonly #extra: ReadonlyArray<() => Promise<void>>;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(options: { db: Database; retentionSeconds: number; factsRetentionHours: number; logger: Logger; metrics?: ControlPlaneMetrics; now?: () => number; extra?: ReadonlyArray<() => Promise<void>> }) {
    this.#extra = options.extra ?? [];
    this.#db = options.db;
    this.#retentionMs = options.retentionSeconds * 1000;
    this.#factsRetentionMs = options.factsRetentionHours * 3600_000;
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#now = options.now ?? Date.now;
  }

  start(intervalMs = 60_000): void {
    this.#timer = setInterval(() => {
      if (this.#running) return;
      this.#running = true;
      this.runOnce()
        .catch((err: unknown) => this.#logger.warn({ err: (err as Error).message }, 'maintenance: pass failed'))
        .finally(() => {
          this.#running = false;
        });
    }, intervalMs);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }

  async runOnce(): Promise<Record<string, number>> {
    const now = this.#now();
    const keepUntil = now - this.#retentionMs;
    const month = purgeableBefore(now, this.#retentionMs);
    const day = 24 * 3600_000;
    const counts: Record<string, number> = {};
    const run = async (table: string, sql: string, params: (number | string)[]): Promise<void> => {
      const res = await this.#db.query(sql, params);
      counts[table] = (counts[table] ?? 0) + res.rowCount;
      if (res.rowCount > 0) this.#metrics?.purgedRows.inc({ table }, res.rowCount);
    };
    await run('idempotency', 'DELETE FROM idempotency WHERE created_at_ms < $1', [now - IDEMPOTENCY_TTL_MS]);
    await run('cap_counts', 'DELETE FROM cap_counts WHERE month < $1', [month]);
    await run('cap_admissions', 'DELETE FROM cap_admissions WHERE month < $1', [month]);
    await run('facts', 'DELETE FROM facts WHERE at_ms < $1', [now - this.#factsRetentionMs]);
    await run('calls', "DELETE FROM calls WHERE state = 'ended' AND ended_at_ms < $1", [keepUntil]);
    await run('erasures', "DELETE FROM erasures WHERE state = 'done' AND completed_at_ms < $1", [keepUntil]);
    await run('deletions', "DELETE FROM deletions WHERE state = 'done' AND completed_at_ms < $1", [keepUntil]);
    await run('call_recording_states', 'DELETE FROM call_recording_states WHERE at_ms < $1', [keepUntil]);
    counts.expired = await markExpired(this.#db, now);
    await run('recordings', "DELETE FROM recordings WHERE state IN ('deleted', 'expired') AND updated_at_ms < $1", [now - day]);
    await run('stream_sessions', 'DELETE FROM stream_sessions WHERE last_seen_ms < $1', [now - 3600_000]);
    for (const pass of this.#extra) await pass();
    return counts;
  }
}
