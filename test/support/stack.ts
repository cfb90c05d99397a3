import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig, type OptinConfig } from '../../src/config/config.ts';
import { startRecorderApp, type RecorderApp } from '../../src/app/RecorderApp.ts';
import { Keyring } from '../../src/crypto/Keyring.ts';
import { createLogger, type Logger } from '../../src/log/logger.ts';
import { TestBuckets } from './buckets.ts';
import { startTestControlPlane, type TestControlPlane } from './controlPlane.ts';
import { useForFile } from './lifecycle.ts';
import { createTestDatabase, type TestDatabase } from './pg.ts';
import { PolicyFacts, openSchedule as openScheduleOf } from './policyFacts.ts';
import { s3Config } from './s3.ts';
import { TEST_AUDIT_KEY_HEX } from './auditKey.ts';
import { StreamRelay } from './streamRelay.ts';

export interface Stack {
  app: RecorderApp;
  /** The real control plane, on a database of its own on the run's PostgreSQL. */
  control: TestControlPlane;
  /** Facts through the control plane's ingest API (the IVR, WFM and HR of the test). */
  policy: PolicyFacts;
  /** Between the worker and the control plane: what the worker sent, and faults of the link. */
  relay: StreamRelay;
  db: TestDatabase;
  config: OptinConfig;
  spoolDir: string;
  close(): Promise<void>;
}

export interface StackOptions {
  logger?: Logger;
  /** The control plane's heartbeat; the worker calls the stream stale after three missed. */
  heartbeatMs?: number;
  /** Give the control plane the store too (it then carries out deletions no worker holds). */
  controlPlaneStore?: boolean;
  /** Control-plane settings over the test defaults (as loadControlPlaneConfig takes them). */
  controlPlaneOverrides?: Record<string, unknown>;
}

/** Configuration keys (as `loadConfig` takes them) over the stack's defaults. */
export type StackOverrides = Record<string, unknown>;

/**
 * The whole recorder against real services: the run's S3 server and PostgreSQL (globalSetup),
 * the control plane (in this process, on a database of its own), a relay on the policy stream,
 * and a RecorderApp (mediasoup workers, store, audit, control client) on buckets of its own, so
 * test files never see each other's recordings; `close()` removes them.
 */
export async function startStack(overrides: StackOverrides = {}, opts: StackOptions = {}): Promise<Stack> {
  const s3 = s3Config();
  const buckets = new TestBuckets();
  const logger = opts.logger ?? createLogger(process.env.OPTIN_TEST_LOG_LEVEL ?? 'silent');
  const heartbeatMs = opts.heartbeatMs ?? 1000;
  const bucketPrefix = (overrides['s3.bucketPrefix'] as string | undefined) ?? buckets.prefix();
  const keyring = (overrides.keyring as OptinConfig['keyring'] | undefined) ?? { activeKeyId: 't1', keys: { t1: Keyring.generateKeyBase64() } };
  const db = await createTestDatabase();
  const cpDataDir = opts.controlPlaneStore ? mkdtempSync(path.join(tmpdir(), 'optin-cp-')) : undefined;
  const control = await startTestControlPlane({
    databaseUrl: db.url,
    overrides: {
      'stream.heartbeatMs': heartbeatMs,
      ...(opts.controlPlaneStore
        ? { 's3.endpoint': s3.endpoint, 's3.accessKey': s3.accessKey, 's3.secretKey': s3.secretKey, 's3.bucketPrefix': bucketPrefix, keyring, dataDir: cpDataDir }
        : {}),
      ...(opts.controlPlaneOverrides ?? {}),
    },
    ...(opts.controlPlaneStore ? { deps: { store: undefined } } : {}),
  });
  const relay = await StreamRelay.start({ target: control.cp.streamUrl, secret: control.secret });
  const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-spool-'));
  const config = loadConfig(
    {},
    {
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      'control.url': relay.url,
      'control.secret': control.secret,
      'callControl.joinSecret': randomBytes(32).toString('base64url'),
      'callControl.sipLegSecret': randomBytes(32).toString('base64url'),
      'audit.hmacKey': TEST_AUDIT_KEY_HEX,
      // Test buckets must be removable after the file: GOVERNANCE (removable with bypass), short.
      'audit.lockMode': 'GOVERNANCE',
      'audit.lockDays': 1,
      'control.heartbeatTimeoutMs': heartbeatMs * 3,
      'spool.dir': spoolDir,
      'mediasoup.workers': 1,
      segmentSeconds: 2,
      // Tests share two cores with browsers and mediasoup workers: a lag ceiling this high keeps
      // admission control (tested on its own with the stream ceiling) from refusing their calls.
      'admission.maxEventLoopLagMs': 5000,
      workerId: `t-${randomBytes(3).toString('hex')}`,
      ...overrides,
      's3.bucketPrefix': bucketPrefix,
      keyring,
    },
  );
  const policy = new PolicyFacts({ url: control.cp.url, tokens: control.tokens });
  let app: RecorderApp;
  try {
    app = await startRecorderApp(config, { logger });
    await app.control.waitFresh(10_000);
  } catch (err) {
    await relay.close();
    await control.close();
    await db.drop().catch(() => undefined);
    if (cpDataDir) rmSync(cpDataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    app,
    control,
    policy,
    relay,
    db,
    config,
    spoolDir,
    async close() {
      await app.close();
      await relay.close();
      await control.close();
      await db.drop().catch(() => undefined);
      rmSync(spoolDir, { recursive: true, force: true });
      if (cpDataDir) rmSync(cpDataDir, { recursive: true, force: true });
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
      for (const agent of opts.agents ?? []) await openSchedule(stack.policy, agent);
      return stack;
    },
    (stack) => stack.close(),
  );
}

/** An agent schedule window around now (R6) with a generous cap. */
export const openSchedule = openScheduleOf;

/**
 * How far before a gate's opening a track's first segment may start: one 20 ms packet (the
 * per-packet gate's accuracy) plus the media threads' longest measured stall. A packet that
 * waited out a stall of its thread outside a drain's sleep is judged by when it was read (the
 * known limit in docs/architecture.md §3.2), so on a loaded host audio from up to that stall
 * before the opening can be kept. Measured, not guessed; read it after the call.
 */
export function openingEarlyBoundMs(stack: Stack): number {
  return 20 + (stack.app.mediaThreads?.worstLoopStallMs ?? 0);
}

/**
 * Waits until the recorder has let `callId` go and finished closing it. The call leaves
 * `recorder.calls` when its close begins; a track in a media thread hands its last segment over
 * only when the thread answers the run's end, so `store.drained()` right after the call left can
 * miss that segment. `detachCall` on a call being closed returns that close.
 */
export async function callClosed(stack: Stack, callId: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (stack.app.recorder.calls.has(callId)) {
    if (Date.now() > until) throw new Error(`${callId} still open after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await stack.app.recorder.detachCall(callId);
}
