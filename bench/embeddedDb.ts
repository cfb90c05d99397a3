/**
 * The embedded database (PGlite) the control plane uses when OPTIN_DATABASE_URL is unset: what
 * it costs on this machine. Each figure is measured in a fresh child process so module caches and
 * the WASM heap of one measurement do not flatter the next.
 *
 *     npx tsx bench/embeddedDb.ts [--inserts 1000] [--rounds 3]
 *
 * Prints: first open of a new data directory (WASM start + initdb + our migrations), a later open
 * of the same directory, 1,000 single-row inserts (one autocommit statement each), 1,000 facts
 * appended the control plane's way (one transaction each: stream_head + facts + NOTIFY), and RSS.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { inserts: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '3' }, child: { type: 'string' } } });
const INSERTS = Number(values.inserts);

if (values.child !== undefined) {
  const [mode, dir] = values.child.split('|') as [string, string];
  const { openDatabase } = await import('../src/db/openDatabase.ts');
  const { appendFacts } = await import('../src/db/factLog.ts');
  const t0 = performance.now();
  const db = await openDatabase({ dataDir: dir });
  const openMs = performance.now() - t0;
  const out: Record<string, number> = { openMs };
  if (mode === 'write') {
    await db.exec('CREATE TABLE IF NOT EXISTS bench_rows (id int PRIMARY KEY, body jsonb NOT NULL)');
    let t = performance.now();
    for (let i = 0; i < INSERTS; i++) await db.query('INSERT INTO bench_rows (id, body) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO NOTHING', [i + Math.floor(Math.random() * 1e9), JSON.stringify({ i })]);
    out.insertsMs = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < INSERTS; i++) await db.transaction((tx) => appendFacts(tx, [{ type: 'call.paused', callId: `c${i}` }], Date.now()));
    out.factsMs = performance.now() - t;
  }
  out.rssMb = process.memoryUsage().rss / 1e6;
  await db.close();
  console.log(JSON.stringify(out));
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
interface Figures {
  openMs: number;
  insertsMs?: number;
  factsMs?: number;
  rssMb: number;
}

function child(mode: 'open' | 'write', dir: string): Figures {
  const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--inserts', String(INSERTS), '--child', `${mode}|${dir}`], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!) as Figures;
}

const pgliteVersion = (JSON.parse(readFileSync(new URL('../node_modules/@electric-sql/pglite/package.json', import.meta.url), 'utf8')) as { version: string }).version;
console.log(`embedded database (PGlite ${pgliteVersion}, Node ${process.version}), ${os.cpus().length} CPUs`);
for (let round = 1; round <= Number(values.rounds); round++) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'optin-pglite-'));
  try {
    const first = child('open', dir);
    const later = child('write', dir);
    const again = child('open', dir);
    console.log(
      `round ${round}: first open ${(first.openMs / 1000).toFixed(2)} s (RSS ${first.rssMb.toFixed(0)} MB); later open ${(later.openMs / 1000).toFixed(2)} s / ${(again.openMs / 1000).toFixed(2)} s; ` +
        `${INSERTS} single-row inserts ${(later.insertsMs! / 1000).toFixed(2)} s; ${INSERTS} facts (one transaction each) ${(later.factsMs! / 1000).toFixed(2)} s; RSS after writing ${later.rssMb.toFixed(0)} MB`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
