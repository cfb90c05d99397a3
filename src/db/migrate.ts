import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import type { Database } from './Database.ts';

/**
 * Versioned migrations: src/db/migrations/NNN_name.sql, applied in order, each recorded in
 * `schema_migrations` with a digest of its text. All pending migrations run in ONE transaction
 * that first takes a transaction-level advisory lock, so two replicas starting together do not
 * both migrate: the second waits, then finds nothing left to do. DDL is transactional in
 * PostgreSQL, so a failing migration leaves the schema as it was.
 *
 * An applied migration whose file changed is refused at start: fix forward with a new file.
 */

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/** Arbitrary constant for pg_advisory_xact_lock ("optin" in ASCII, plus 1). */
const MIGRATION_LOCK = 0x6f7074696e01;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  sha256: string;
}

export function loadMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    const m = /^(\d{3})_([a-z0-9_]+)\.sql$/.exec(file);
    if (m === null) continue;
    const sql = readFileSync(`${dir}/${file}`, 'utf8');
    out.push({ version: Number(m[1]), name: m[2]!, sql, sha256: createHash('sha256').update(sql).digest('hex') });
  }
  out.forEach((mig, i) => {
    if (mig.version !== i + 1) throw new OptinError('DB_MIGRATION_FAILED', `migrations must be numbered 001, 002, ... without gaps; found ${mig.version} at position ${i + 1}`);
  });
  return out;
}

/** Applies pending migrations; returns the versions applied by this call. */
export async function migrate(db: Database, logger?: Logger, migrations: Migration[] = loadMigrations()): Promise<number[]> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await tx.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL, applied_at_ms bigint NOT NULL)',
    );
    const { rows } = await tx.query<{ version: number; sha256: string }>('SELECT version, sha256 FROM schema_migrations ORDER BY version');
    const applied = new Map(rows.map((r) => [r.version, r.sha256]));
    for (const [version, sha] of applied) {
      const mig = migrations.find((m) => m.version === version);
      if (mig === undefined) {
        throw new OptinError('DB_MIGRATION_CHANGED', `the database has migration ${version}, which this build does not know: run a newer optin, or restore the database`);
      }
      if (mig.sha256 !== sha) {
        throw new OptinError('DB_MIGRATION_CHANGED', `migration ${version}_${mig.name} was edited after it was applied; never edit an applied migration, add a new one`);
      }
    }
    const done: number[] = [];
    for (const mig of migrations) {
      if (applied.has(mig.version)) continue;
      try {
        await tx.exec(mig.sql);
      } catch (err) {
        throw new OptinError('DB_MIGRATION_FAILED', `migration ${mig.version}_${mig.name} failed: ${(err as Error).message}`, { cause: err });
      }
      await tx.query('INSERT INTO schema_migrations (version, name, sha256, applied_at_ms) VALUES ($1, $2, $3, $4)', [mig.version, mig.name, mig.sha256, Date.now()]);
      done.push(mig.version);
      logger?.info({ migration: `${String(mig.version).padStart(3, '0')}_${mig.name}` }, 'db: migration applied');
    }
    return done;
  });
}
