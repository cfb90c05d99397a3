import path from 'node:path';
import type { Logger } from '../log/logger.ts';
import type { Database, QueryObserver } from './Database.ts';
import { migrate } from './migrate.ts';

export interface OpenDatabaseOptions {
  /** postgres://... : a real server. Absent: the embedded database under `dataDir`. */
  url?: string;
  /** Root of local state (OPTIN_DATA_DIR); the embedded database lives in <dataDir>/control-db. */
  dataDir: string;
  poolSize?: number;
  logger?: Logger;
  onQuery?: QueryObserver;
  /** Apply pending migrations (default true). */
  migrate?: boolean;
}

/** Opens the configured backend and brings its schema up to date. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  let db: Database;
  if (options.url !== undefined && options.url !== '') {
    const { PgDatabase } = await import('./PgDatabase.ts');
    db = new PgDatabase({ url: options.url, max: options.poolSize, logger: options.logger, onQuery: options.onQuery });
  } else {
    // Loaded on demand: the WASM engine costs ~5 s and hundreds of MB, paid only when used.
    const { EmbeddedDatabase } = await import('./EmbeddedDatabase.ts');
    db = await EmbeddedDatabase.open({ dataDir: embeddedDataDir(options.dataDir), onQuery: options.onQuery });
  }
  try {
    if (options.migrate ?? true) await migrate(db, options.logger);
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}

export function embeddedDataDir(dataDir: string): string {
  return dataDir.startsWith('memory://') ? dataDir : path.resolve(dataDir, 'control-db');
}
