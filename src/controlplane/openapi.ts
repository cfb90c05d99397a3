import { randomBytes } from 'node:crypto';
import type { Database } from '../db/Database.ts';
import { OptinError } from '../errors/OptinError.ts';
import { IntegrationAuth } from '../facts/integrations.ts';
import { createLogger } from '../log/logger.ts';
import { buildApiApp } from './apiApp.ts';
import { loadControlPlaneConfig } from './config.ts';
import { createControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import { AccessService } from '../access/AccessService.ts';
import { DEFAULT_CLAIM_MAPPING } from '../identity/claims.ts';
import { SessionStore } from '../identity/sessions.ts';
import { FfmpegPool } from '../media/ffmpeg.ts';

/** Where the generated document is committed (scripts/control-openapi.ts writes it; a test compares). */
export const OPENAPI_DOC_PATH = 'docs/control-plane-openapi.json';

/**
 * The OpenAPI document of the control-plane API, generated from the route schemas without a
 * database (the routes are registered, never called).
 */
export async function openApiDocument(): Promise<Record<string, unknown>> {
  const unusable = (): never => {
    throw new OptinError('INTERNAL', 'openApiDocument: no database');
  };
  const db: Database = { kind: 'embedded', query: unusable, transaction: unusable, exec: unusable, listen: unusable, ping: unusable, close: async () => undefined };
  // Any valid secret: the document is built without serving anything.
  const config = loadControlPlaneConfig({ OPTIN_CONTROL_SECRET: randomBytes(32).toString('base64url') });
  const logger = createLogger('silent');
  const pool = new FfmpegPool();
  const access = new AccessService({ db, pool, replicaId: 'openapi', logger, retentionSeconds: config.retentionSeconds });
  const app = await buildApiApp(
    config,
    { db, auth: new IntegrationAuth(db), metrics: createControlPlaneMetrics({ defaultMetrics: false }), now: Date.now, contiguityToleranceMs: 0, maxEvidenceSkewMs: 0 },
    logger,
    {
      ctx: {
        access,
        sessions: new SessionStore({ db }),
        oidc: undefined,
        serviceTokens: async () => undefined,
        assets: { scriptUrl: '/assets/app.js', get: () => undefined },
        pool,
        publicUrl: () => 'http://localhost',
        logger,
        now: Date.now,
      },
      mapping: DEFAULT_CLAIM_MAPPING,
    },
  );
  await app.ready();
  const doc = app.swagger() as unknown as Record<string, unknown>;
  await app.close();
  return doc;
}

export function formatOpenApi(doc: Record<string, unknown>): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}
