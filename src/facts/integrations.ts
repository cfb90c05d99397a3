import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Queryable } from '../db/Database.ts';
import { OptinError } from '../errors/OptinError.ts';
import { IdSchema } from '../ids/ids.ts';

/**
 * One credential per integration (the IVR, the workforce-management system, HR, operators), each
 * with the scopes it needs and no more:
 *   ivr  calls, participants, consent, pause/resume, erasure status
 *   wfm  schedules and monthly caps
 *   hr   agent -> team lead
 *   ops  deletions, the catalogue, erasure and deletion status (operators and the access API)
 *
 * Token: `<integrationId>.<secret>` where secret is 32 random bytes in base64url, sent as
 * `Authorization: Bearer <token>`. Only sha256(secret) is stored: a 256-bit random secret needs
 * no slow hash. Shown once, at creation (`optin integrations add`).
 */

export const SCOPES = ['ivr', 'wfm', 'hr', 'ops'] as const;
export type Scope = (typeof SCOPES)[number];

const TOKEN_PATTERN = /^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})$/;

export interface Integration {
  id: string;
  scopes: Scope[];
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function createToken(integrationId: string): { token: string; secretHash: string } {
  const secret = randomBytes(32).toString('base64url');
  return { token: `${integrationId}.${secret}`, secretHash: hashSecret(secret) };
}

/** The integration id of a well-formed token (unverified), for rate limiting and logs. */
export function tokenIntegrationId(token: string): string | undefined {
  return TOKEN_PATTERN.exec(token)?.[1];
}

export async function upsertIntegration(db: Queryable, integration: { id: string; secretHash: string; scopes: readonly Scope[] }, nowMs: number): Promise<void> {
  await db.query(
    `INSERT INTO integrations (id, secret_hash, scopes, created_at_ms, disabled) VALUES ($1, $2, $3, $4, false)
     ON CONFLICT (id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, scopes = EXCLUDED.scopes, disabled = false`,
    [integration.id, integration.secretHash, [...integration.scopes], nowMs],
  );
}

export async function disableIntegration(db: Queryable, id: string): Promise<boolean> {
  const res = await db.query('UPDATE integrations SET disabled = true WHERE id = $1', [id]);
  return res.rowCount > 0;
}

/** The bootstrap file (OPTIN_CONTROL_INTEGRATIONS_FILE): integrations created or updated at start. */
export const IntegrationsFileSchema = z.array(
  z.strictObject({
    id: IdSchema,
    scopes: z.array(z.enum(SCOPES)).min(1),
    /** hex sha256 of the token's secret part (`optin integrations token` prints it). */
    secretSha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits'),
  }),
);

export async function bootstrapIntegrations(db: Queryable, file: string, nowMs: number): Promise<number> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new OptinError('CONFIG_INVALID', `integrations file ${file}: cannot read it as JSON (${(err as Error).message})`);
  }
  const parsed = IntegrationsFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new OptinError('CONFIG_INVALID', `integrations file ${file}: ${issue.path.join('.')}: ${issue.message}`);
  }
  for (const entry of parsed.data) await upsertIntegration(db, { id: entry.id, secretHash: entry.secretSha256, scopes: entry.scopes }, nowMs);
  return parsed.data.length;
}

interface CachedIntegration {
  integration: Integration | null;
  secretHash: string;
  until: number;
}

/**
 * Verifies bearer tokens against the table, with a short cache (default 5 s) so a burst of
 * webhooks costs one lookup; disabling an integration takes effect within that time. Unknown ids
 * are cached too (bounded), so a flood of made-up tokens does not become a flood of queries.
 */
export class IntegrationAuth {
  readonly #db: Queryable;
  readonly #ttlMs: number;
  readonly #cache = new Map<string, CachedIntegration>();
  static readonly MAX_CACHED = 1024;

  constructor(db: Queryable, ttlMs = 5_000) {
    this.#db = db;
    this.#ttlMs = ttlMs;
  }

  /** The integration, or undefined when the token is missing, malformed, unknown, disabled or wrong. */
  async verify(authorization: string | undefined, nowMs = Date.now()): Promise<Integration | undefined> {
    if (authorization === undefined) return undefined;
    const m = /^Bearer (\S+)$/.exec(authorization);
    if (m === null) return undefined;
    const parts = TOKEN_PATTERN.exec(m[1]!);
    if (parts === null) return undefined;
    const [, id = '', secret = ''] = parts;
    let entry = this.#cache.get(id);
    if (entry === undefined || entry.until <= nowMs) {
      const { rows } = await this.#db.query<{ secret_hash: string; scopes: Scope[]; disabled: boolean }>(
        'SELECT secret_hash, scopes, disabled FROM integrations WHERE id = $1',
        [id],
      );
      const row = rows[0];
      entry = {
        integration: row === undefined || row.disabled ? null : { id, scopes: row.scopes },
        secretHash: row?.secret_hash ?? '',
        until: nowMs + this.#ttlMs,
      };
      if (this.#cache.size >= IntegrationAuth.MAX_CACHED) this.#cache.delete(this.#cache.keys().next().value as string);
      this.#cache.set(id, entry);
    }
    if (entry.integration === null) return undefined;
    const got = Buffer.from(hashSecret(secret), 'utf8');
    const want = Buffer.from(entry.secretHash, 'utf8');
    return got.length === want.length && timingSafeEqual(got, want) ? entry.integration : undefined;
  }
}
