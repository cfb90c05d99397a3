import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PolicyServer } from '../../src/control/PolicyServer.ts';
import { loadConfig, type OptinConfig } from '../../src/config/config.ts';
import { startRecorderApp, type RecorderApp } from '../../src/app/RecorderApp.ts';
import { Keyring } from '../../src/crypto/Keyring.ts';
import { createLogger, type Logger } from '../../src/log/logger.ts';
import { TestBuckets } from './buckets.ts';
import { useForFile } from './lifecycle.ts';
import { s3Config } from './s3.ts';

export interface Stack {
  app: RecorderApp;
  policy: PolicyServer;
  config: OptinConfig;
  spoolDir: string;
  close(): Promise<void>;
}

export interface StackOptions {
  logger?: Logger;
  /** The policy server's heartbeat; the worker calls the stream stale after three missed. */
  heartbeatMs?: number;
}

/** Configuration keys (as `loadConfig` takes them) over the stack's defaults. */
export type StackOverrides = Record<string, unknown>;

/**
 * The whole recorder against real services: the run's S3 server (globalSetup), a reference policy
 * server on a free port, and a RecorderApp (mediasoup workers, store, audit, control client) on
 * buckets of its own, so test files never see each other's recordings; `close()` removes them.
 */
export async function startStack(overrides: StackOverrides = {}, opts: StackOptions = {}): Promise<Stack> {
  const s3 = s3Config();
  const buckets = new TestBuckets();
  const secret = randomBytes(32).toString('base64url');
  const logger = opts.logger ?? createLogger(process.env.OPTIN_TEST_LOG_LEVEL ?? 'silent');
  const policy = new PolicyServer({ secret, heartbeatMs: opts.heartbeatMs ?? 1000, logger });
  const addr = await policy.listen();
  const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-spool-'));
  const config = loadConfig(
    {},
    {
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.bucketPrefix': buckets.prefix(),
      keyring: { activeKeyId: 't1', keys: { t1: Keyring.generateKeyBase64() } },
      'control.url': `ws://127.0.0.1:${addr.port}/control`,
      'control.secret': secret,
      'http.callControlSecret': randomBytes(32).toString('base64url'),
      'control.heartbeatTimeoutMs': (opts.heartbeatMs ?? 1000) * 3,
      'spool.dir': spoolDir,
      'mediasoup.workers': 1,
      segmentSeconds: 2,
      // Tests share two cores with browsers and mediasoup workers: a lag ceiling this high keeps
      // admission control (tested on its own with the stream ceiling) from refusing their calls.
      'admission.maxEventLoopLagMs': 5000,
      workerId: `t-${randomBytes(3).toString('hex')}`,
      ...overrides,
    },
  );
  const app = await startRecorderApp(config, { logger });
  await app.control.waitFresh(10_000);
  return {
    app,
    policy,
    config,
    spoolDir,
    async close() {
      await app.close();
      await policy.close();
      rmSync(spoolDir, { recursive: true, force: true });
      await buckets.removeAll();
    },
  };
}

export interface UseStackOptions extends StackOptions {
  /** Agents given an open schedule (`openSchedule`) as soon as the stack is up. */
  agents?: string[];
}

/**
 * One stack for a whole test file (see useForFile): started in a beforeAll with the `agents'`
 * schedules opened, closed in an afterAll. `overrides` may be a function when it depends on
 * something an earlier beforeAll makes (a proxy's port).
 */
export function useStack(overrides: StackOverrides | (() => StackOverrides) = {}, opts: UseStackOptions = {}): Stack {
  return useForFile(
    'the stack',
    async () => {
      const stack = await startStack(typeof overrides === 'function' ? overrides() : overrides, opts);
      for (const agent of opts.agents ?? []) openSchedule(stack.policy, agent);
      return stack;
    },
    (stack) => stack.close(),
  );
}

/** An agent schedule window around now (R6) with a generous cap. */
export function openSchedule(policy: PolicyServer, agentId: string, cap = 50): void {
  const now = Date.now();
  policy.setSchedule(agentId, [{ start: now - 60_000, end: now + 3_600_000 }], cap);
}
