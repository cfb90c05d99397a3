import { parseArgs } from 'node:util';
import { loadControlPlaneConfig } from '../controlplane/config.ts';
import { openDatabase } from '../db/openDatabase.ts';
import { SCOPES, createToken, disableIntegration, upsertIntegration, type Scope } from '../facts/integrations.ts';
import { isOptinError } from '../errors/OptinError.ts';
import { ID_PATTERN } from '../ids/ids.ts';
import { createLogger } from '../log/logger.ts';
import type { CliIo } from './io.ts';

/**
 * `optin integrations`: credentials of the systems that post facts (src/facts/integrations.ts).
 *   add --name ID --scopes ivr[,wfm,hr,ops]   create or replace; prints the token ONCE
 *   token --name ID --scopes ...              no database: prints a token and the entry for the
 *                                             bootstrap file (OPTIN_CONTROL_INTEGRATIONS_FILE)
 *   disable --name ID                         the token stops working within 5 s
 * With the embedded database, run add/disable while the control plane is stopped, or use `token`.
 */

const USAGE = `usage: optin integrations add|token --name ID --scopes LIST
       optin integrations disable --name ID

Scopes: ivr (calls, consent, pause/resume), wfm (schedules, caps), hr (team leads), ops (deletions,
catalogue, receipts). Environment for add/disable: as the control plane (OPTIN_DATABASE_URL or OPTIN_DATA_DIR).`;

export async function runIntegrations(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  let values: { name?: string; scopes?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, options: { name: { type: 'string' }, scopes: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help || sub === undefined) {
    io.out(`${USAGE}\n`);
    return sub === undefined ? 2 : 0;
  }
  const name = values.name ?? '';
  if (!ID_PATTERN.test(name)) {
    io.err(`optin integrations: --name must be an id ([A-Za-z0-9_-]{1,64})\n${USAGE}\n`);
    return 2;
  }
  const scopes = (values.scopes ?? '').split(',').filter((s) => s !== '');
  if (sub !== 'disable' && (scopes.length === 0 || !scopes.every((s): s is Scope => (SCOPES as readonly string[]).includes(s)))) {
    io.err(`optin integrations: --scopes must list some of ${SCOPES.join(', ')}\n${USAGE}\n`);
    return 2;
  }
  if (sub === 'token') {
    const t = createToken(name);
    io.out(`token (shown once, give it to the integration): ${t.token}\n`);
    io.out(`bootstrap file entry: ${JSON.stringify({ id: name, scopes, secretSha256: t.secretHash })}\n`);
    return 0;
  }
  if (sub !== 'add' && sub !== 'disable') {
    io.err(`optin integrations: unknown subcommand ${JSON.stringify(sub)}\n${USAGE}\n`);
    return 2;
  }
  let db;
  try {
    const config = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: 'not-used-by-this-command-0000000000', ...env });
    db = await openDatabase({ url: config.database.url, dataDir: config.dataDir, logger: createLogger(env.OPTIN_LOG_LEVEL ?? 'warn') });
  } catch (err) {
    io.err(`optin integrations: ${isOptinError(err) ? err.message : String(err)}\n`);
    return 2;
  }
  try {
    if (sub === 'disable') {
      const found = await disableIntegration(db, name);
      io.out(found ? `integration ${name} disabled\n` : `no integration ${name}\n`);
      return found ? 0 : 1;
    }
    const t = createToken(name);
    await upsertIntegration(db, { id: name, secretHash: t.secretHash, scopes: scopes as Scope[] }, Date.now());
    io.out(`integration ${name} (${scopes.join(', ')}); token, shown once: ${t.token}\n`);
    return 0;
  } finally {
    await db.close();
  }
}
