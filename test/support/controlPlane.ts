import { randomBytes } from 'node:crypto';
import { ControlPlane, type ControlPlaneDeps } from '../../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../../src/controlplane/config.ts';
import { createToken, upsertIntegration, type Scope } from '../../src/facts/integrations.ts';
import { createLogger } from '../../src/log/logger.ts';
import { createControlPlaneMetrics } from '../../src/metrics/controlPlaneMetrics.ts';
import { TEST_AUDIT_KEY_HEX } from './auditKey.ts';

/**
 * A control plane for a test: in this process, on loopback, on the database the test made
 * (test/support/pg.ts), with one integration per scope and a random stream secret.
 */

export const TEST_SECRET = `test-stream-secret-${randomBytes(16).toString('hex')}`;

export interface Tokens {
  ivr: string;
  wfm: string;
  hr: string;
  ops: string;
}

export interface TestControlPlane {
  cp: ControlPlane;
  tokens: Tokens;
  secret: string;
  api: (method: string, path: string, options?: ApiOptions) => Promise<ApiResponse>;
  close: () => Promise<void>;
}

export interface ApiOptions {
  token?: string;
  body?: unknown;
  /** Raw body text (bad JSON, oversized). */
  raw?: string;
  /** Idempotency-Key; default a fresh random one; null: none. */
  key?: string | null;
  headers?: Record<string, string>;
}

export interface ApiResponse {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

export async function startTestControlPlane(options: {
  databaseUrl?: string;
  overrides?: Record<string, unknown>;
  deps?: ControlPlaneDeps;
  secret?: string;
  createTokens?: boolean;
}): Promise<TestControlPlane> {
  const secret = options.secret ?? TEST_SECRET;
  // The audit key the file's other writers use (needed when the overrides configure the store).
  const env: NodeJS.ProcessEnv = {
    OPTIN_CONTROL_SECRET: secret,
    OPTIN_CONTROL_PORT: '0',
    OPTIN_LOG_LEVEL: process.env.OPTIN_TEST_LOG_LEVEL ?? 'warn',
    OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX,
    // Test audit buckets must be removable after the file: GOVERNANCE retention (bypassable), one day.
    OPTIN_AUDIT_LOCK_MODE: 'GOVERNANCE',
    OPTIN_AUDIT_LOCK_DAYS: '1',
  };
  if (options.databaseUrl !== undefined) env.OPTIN_DATABASE_URL = options.databaseUrl;
  const config = loadControlPlaneConfig(env, { 'ledger.graceMs': 200, 'ledger.sweepIntervalMs': 100, 'stream.heartbeatMs': 100, ...(options.overrides ?? {}) });
  const cp = await ControlPlane.start(config, {
    logger: createLogger(config.logLevel),
    metrics: createControlPlaneMetrics({ defaultMetrics: false }),
    store: null,
    ...(options.deps ?? {}),
  });
  const tokens = {} as Tokens;
  if (options.createTokens ?? true) {
    for (const scope of ['ivr', 'wfm', 'hr', 'ops'] as Scope[]) {
      const t = createToken(scope);
      await upsertIntegration(cp.db, { id: scope, secretHash: t.secretHash, scopes: [scope] }, Date.now());
      tokens[scope] = t.token;
    }
  }
  const api = async (method: string, path: string, o: ApiOptions = {}): Promise<ApiResponse> => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (method !== 'GET' && o.key !== null) headers['idempotency-key'] = o.key ?? `k-${randomBytes(8).toString('hex')}`;
    let body: string | undefined;
    if (o.raw !== undefined) body = o.raw;
    else if (o.body !== undefined) body = JSON.stringify(o.body);
    if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${cp.url}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    let parsed: Record<string, unknown> = {};
    try {
      parsed = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
    } catch {
      parsed = { text };
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  return { cp, tokens, secret, api, close: () => cp.close() };
}

/** Evidence of a DTMF consent act a second ago. */
export function dtmfEvidence(atMs: number = Date.now() - 1000): { method: 'dtmf'; at: number; infoVersion: string; ref: string } {
  return { method: 'dtmf', at: atMs, infoVersion: '2026-01.v1', ref: `ivr:${randomBytes(3).toString('hex')}` };
}

/** A call with one agent (subject `agentId`) and one customer. */
export function callBody(callId: string, agentId = 'agent-1', extra: { teamLeadId?: string } = {}): Record<string, unknown> {
  return {
    callId,
    participants: [
      { participantId: `${callId}-a`, role: 'agent', subjectId: agentId, ...(extra.teamLeadId ? { teamLeadId: extra.teamLeadId } : {}) },
      { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${callId}` },
    ],
  };
}
