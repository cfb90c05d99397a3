import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decideCap } from '../../../src/caps/capDecision.ts';
import { listRecordings, upsertEntry, type CatalogueEntry } from '../../../src/catalogue/Catalogue.ts';
import { Maintenance } from '../../../src/controlplane/Maintenance.ts';
import { PgDatabase } from '../../../src/db/PgDatabase.ts';
import { loadMigrations, migrate } from '../../../src/db/migrate.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';

/** Migrations, the catalogue's keyset queries, and retention purges, on real PostgreSQL. */

const logger = createLogger('silent');
const DAY = 86_400_000;
let tdb: TestDatabase;
let db: PgDatabase;

beforeAll(async () => {
  tdb = await createTestDatabase();
  db = new PgDatabase({ url: tdb.url, logger });
});

afterAll(async () => {
  await db?.close();
  await tdb?.drop();
});

describe('migrations', () => {
  it('two replicas migrating at once: applied exactly once, both start', async () => {
    const other = new PgDatabase({ url: tdb.url, logger });
    try {
      const [x, y] = await Promise.all([migrate(db), migrate(other)]);
      expect([...x, ...y].sort()).toEqual(loadMigrations().map((m) => m.version));
      const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations');
      expect(rows[0]!.n).toBe(loadMigrations().length);
      expect(await migrate(db)).toEqual([]);
    } finally {
      await other.close();
    }
  });

  it('refuses to start on an applied migration that was edited', async () => {
    const edited = loadMigrations().map((m, i) => (i === 0 ? { ...m, sha256: '0'.repeat(64) } : m));
    const err = await migrate(db, undefined, edited).catch((e: unknown) => e);
    expect(isOptinError(err, 'DB_MIGRATION_CHANGED')).toBe(true);
  });
});

function entry(i: number, over: Partial<CatalogueEntry> = {}): CatalogueEntry {
  return {
    recordingId: `r-${String(i).padStart(5, '0')}`,
    callId: `c-${i}`,
    participants: [
      { participantId: 'pa', role: 'agent', subjectId: `agent-${i % 5}`, teamLeadId: i % 2 === 0 ? 'lead-even' : 'lead-odd' },
      { participantId: 'pc', role: 'customer', subjectId: `cust-${i}` },
    ],
    // Several recordings share a start time: the keyset must break ties by id.
    startedAt: 1_800_000_000_000 + Math.floor(i / 3) * 60_000,
    tracks: 2,
    segments: 3,
    bytes: 3000,
    expiresAt: 1_800_000_000_000 + 30 * DAY,
    state: 'complete',
    workerId: 'w1',
    ...over,
  };
}

describe('catalogue', () => {
  beforeAll(async () => {
    for (let i = 0; i < 250; i++) await db.transaction((tx) => upsertEntry(tx, entry(i), 1_800_000_000_000));
  });

  it("pages through a team's recordings newest first, each once, by keyset", async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await listRecordings(db, { by: 'lead', key: 'lead-even', limit: 40, ...(cursor ? { cursor } : {}) });
      seen.push(...page.recordings.map((r) => r.recordingId));
      for (let k = 1; k < page.recordings.length; k++) {
        const [p, q] = [page.recordings[k - 1]!, page.recordings[k]!];
        expect(p.startedAt > q.startedAt || (p.startedAt === q.startedAt && p.recordingId > q.recordingId)).toBe(true);
      }
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== undefined);
    expect(pages).toBe(4);
    expect(new Set(seen).size).toBe(125);
    expect(seen.every((id) => Number(id.slice(2)) % 2 === 0)).toBe(true);
  });

  it('filters by agent and by date window', async () => {
    const byAgent = await listRecordings(db, { by: 'agent', key: 'agent-3', limit: 500 });
    expect(byAgent.recordings).toHaveLength(50);
    const from = 1_800_000_000_000 + 10 * 60_000;
    const to = 1_800_000_000_000 + 20 * 60_000;
    const windowed = await listRecordings(db, { by: 'lead', key: 'lead-odd', from, to, limit: 500 });
    expect(windowed.recordings.every((r) => r.startedAt >= from && r.startedAt < to)).toBe(true);
    expect(windowed.recordings).toHaveLength(15);
  });

  it('an unknown cursor is refused', async () => {
    const err = await listRecordings(db, { by: 'lead', key: 'lead-odd', limit: 5, cursor: 'not-ours' }).catch((e: unknown) => e);
    expect(isOptinError(err, 'INVALID_INPUT')).toBe(true);
  });

  it('the listing joins by index: keyset range on recording_index, primary-key lookups in recordings', async () => {
    // With sequential scans priced out, a plan that still scans means no index can serve the
    // query (e.g. ids compared in two collations, which once cost 55 ms per page at 100,000 rows).
    const plan = await db.transaction(async (tx) => {
      await tx.query('SET LOCAL enable_seqscan = off');
      const { rows } = await tx.query<{ 'QUERY PLAN': string }>(
        `EXPLAIN SELECT r.recording_id FROM recording_index i JOIN recordings r ON r.recording_id = i.recording_id
          WHERE i.kind = $1 AND i.key = $2 AND i.started_at_ms >= $3 AND i.started_at_ms < $4 AND r.state = ANY($5)
            AND (i.started_at_ms, i.recording_id) < ($6, $7::text COLLATE "C")
          ORDER BY i.started_at_ms DESC, i.recording_id DESC LIMIT 51`,
        ['lead', 'lead-even', 0, 9e15, ['complete'], 9e15, 'r-99999'],
      );
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    expect(plan).toMatch(/Index (Only )?Scan Backward using recording_index_pkey/);
    expect(plan).toMatch(/Index Scan using recordings_pkey/);
    expect(plan).not.toMatch(/Seq Scan|Sort/);
  });
});

describe('retention (R8)', () => {
  it('purges cap counters after the month plus retention, marks expired recordings, drops old idempotency keys', async () => {
    const jan = Date.UTC(2027, 0, 15);
    await db.query("INSERT INTO schedules (agent_id, windows, monthly_cap, updated_at_ms) VALUES ('agent-p', '[]', 5, 0)");
    expect((await decideCap(db, { recordingId: 'r-jan', agentIds: ['agent-p'], nowMs: jan })).admitted).toBe(true);
    expect((await decideCap(db, { recordingId: 'r-feb', agentIds: ['agent-p'], nowMs: Date.UTC(2027, 1, 10) })).admitted).toBe(true);
    await db.query("INSERT INTO idempotency (integration_id, key, request_hash, created_at_ms) VALUES ('ivr', 'old-key-123', 'h', $1)", [Date.UTC(2027, 1, 1) + 28.9 * DAY]);
    const retention = 30 * 86_400;
    const counts = async () => (await db.query<{ month: string }>("SELECT month FROM cap_counts WHERE agent_id = 'agent-p' ORDER BY month")).rows.map((r) => r.month);
    // 29 days after January ended: kept.
    const first = await new Maintenance({ db, retentionSeconds: retention, factsRetentionHours: 24, logger, now: () => Date.UTC(2027, 1, 1) + 29 * DAY }).runOnce();
    expect(await counts()).toEqual(['2027-01', '2027-02']);
    expect(first.idempotency).toBe(0);
    // Every catalogue row of the fixture has expired by then (30 days after 2027-01-15).
    expect(first.expired).toBe(250);
    expect((await db.query("SELECT 1 FROM recordings WHERE state = 'expired'")).rowCount).toBe(250);
    // 30 days after: January's counter and admissions are gone, February's stay.
    const run = await new Maintenance({ db, retentionSeconds: retention, factsRetentionHours: 24, logger, now: () => Date.UTC(2027, 1, 1) + 30 * DAY + 1 }).runOnce();
    expect(await counts()).toEqual(['2027-02']);
    expect((await db.query("SELECT 1 FROM cap_admissions WHERE recording_id = 'r-jan'")).rowCount).toBe(0);
    expect(run.idempotency).toBe(1);
    // Expired rows are removed a day later, with their index entries.
    expect(run.recordings).toBe(250);
    expect((await db.query('SELECT 1 FROM recordings')).rowCount).toBe(0);
    expect((await db.query('SELECT 1 FROM recording_index')).rowCount).toBe(0);
  });
});
