import { parseArgs } from 'node:util';
import { rebuildCatalogue } from '../controlplane/catalogueRebuild.ts';
import { auditStoreSettings, loadControlPlaneConfig, storeConfigured } from '../controlplane/config.ts';
import { openDatabase } from '../db/openDatabase.ts';
import { openControlPlaneStore } from '../erasure/storeAdapter.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { createLogger } from '../log/logger.ts';
import path from 'node:path';
import type { CliIo } from './io.ts';

/**
 * `optin catalogue rebuild`: reads every manifest in the store (the source of truth), brings the
 * control plane's catalogue in line, and lists the differences (src/catalogue/rebuild.ts).
 * With the embedded database, stop the control plane first (one process per data directory).
 *
 * Exit status: 0 done (differences are not errors), 1 failed, 2 usage or configuration.
 */

const USAGE = `usage: optin catalogue rebuild [--dry-run] [--json]

Rebuilds the catalogue of recordings from the store's manifests and lists the differences.

  --dry-run   list the differences, change nothing
  --json      one JSON object on stdout instead of text

Environment: as the control plane (OPTIN_DATABASE_URL or OPTIN_DATA_DIR, OPTIN_S3_*, OPTIN_KEYRING).`;

export async function runCatalogue(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'rebuild') {
    io.err(`optin catalogue: unknown subcommand ${JSON.stringify(sub ?? '')}\n${USAGE}\n`);
    return sub === '--help' || sub === '-h' ? 0 : 2;
  }
  let values: { 'dry-run'?: boolean; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, options: { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.out(`${USAGE}\n`);
    return 0;
  }
  const logger = createLogger(env.OPTIN_LOG_LEVEL ?? 'warn');
  let config;
  let audit;
  try {
    config = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: 'not-used-by-this-command-0000000000', ...env });
    if (!storeConfigured(config)) throw new OptinError('CONFIG_INVALID', 'the rebuild reads the store: set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY and OPTIN_KEYRING');
    audit = auditStoreSettings(config);
  } catch (err) {
    io.err(`optin catalogue rebuild: ${isOptinError(err) ? err.message : String(err)}\n`);
    return 2;
  }
  const db = await openDatabase({ url: config.database.url, dataDir: config.dataDir, logger });
  const store = await openControlPlaneStore({
    s3: { endpoint: config.s3.endpoint!, accessKey: config.s3.accessKey!, secretKey: config.s3.secretKey!, region: config.s3.region },
    bucketPrefix: config.s3.bucketPrefix,
    mediaBucket: config.s3.mediaBucket,
    keysBucket: config.s3.keysBucket,
    auditBucket: config.s3.auditBucket,
    keyring: config.keyring,
    retentionSeconds: config.retentionSeconds,
    spoolDir: path.resolve(config.dataDir, 'control-spool', 'catalogue-rebuild'),
    nodeId: 'catalogue-rebuild',
    logger,
    audit,
  }).catch(async (err: unknown) => {
    await db.close();
    throw err;
  });
  try {
    const entries = await store.listEntries();
    const result = await rebuildCatalogue(db, entries, { nowMs: Date.now(), dryRun: values['dry-run'] ?? false });
    if (values.json) io.out(`${JSON.stringify(result)}\n`);
    else {
      io.out(`${result.dryRun ? 'dry run: ' : ''}${result.scanned} manifests in the store, ${result.catalogueRows} catalogue rows before, ${result.differences.length} differences\n`);
      for (const d of result.differences) io.out(`  ${d.kind.padEnd(21)} ${d.recordingId}${d.fields ? ` (${d.fields.join(', ')})` : ''}: ${d.action}\n`);
    }
    return 0;
  } catch (err) {
    io.err(`optin catalogue rebuild: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
    await db.close();
  }
}
