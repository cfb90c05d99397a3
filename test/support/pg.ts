import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

/**
 * PostgreSQL for test files. test/support/globalSetup.ts starts ONE throwaway cluster per run
 * (scripts/pg/cluster.ts) when a selected file imports this module, and provides its admin URL;
 * each test file creates its own database so files never see each other's rows.
 */

export interface ProvidedPg {
  adminUrl: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: ProvidedPg;
  }
}

export function pgAdminUrl(): string {
  const cfg = inject('pg');
  if (!cfg) throw new Error('no PostgreSQL cluster was provided: test/support/globalSetup.ts starts one when a selected test file imports test/support/pg.ts');
  return cfg.adminUrl;
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** A fresh, empty database `t_<12 hex>` on the run's cluster. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const admin = pgAdminUrl();
  const name = `t_${randomBytes(6).toString('hex')}`;
  // CREATE DATABASE takes no parameters; the name is ours and matches /^t_[0-9a-f]{12}$/.
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
