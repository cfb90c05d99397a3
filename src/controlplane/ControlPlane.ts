import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Database } from '../db/Database.ts';
import { openDatabase } from '../db/openDatabase.ts';
import { LedgerSweeper } from '../erasure/LedgerSweeper.ts';
import { openControlPlaneStore, type ControlPlaneStore } from '../erasure/storeAdapter.ts';
import { OptinError } from '../errors/OptinError.ts';
import { IntegrationAuth, bootstrapIntegrations } from '../facts/integrations.ts';
import type { FastifyInstance } from 'fastify';
import { buildApiApp } from './apiApp.ts';
import type { ApiContext } from '../api/context.ts';
import { DEFAULT_CONTIGUITY_TOLERANCE_MS } from '../gate/schedule.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { StreamServer } from '../stream/StreamServer.ts';
import { auditStoreSettings, isLoopback, storeConfigured, type ControlPlaneConfig } from './config.ts';
import { Maintenance } from './Maintenance.ts';
import { AuditAnchoring, registerAuditStream } from '../audit/anchors.ts';
import { createControlPlaneMetrics, type ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import { AccessService } from '../access/AccessService.ts';
import type { PeopleContext } from '../api/people.ts';
import type { ClaimMapping } from '../identity/claims.ts';
import { OidcRelyingParty } from '../identity/oidc.ts';
import { ServiceTokenVerifier } from '../identity/serviceTokens.ts';
import { SessionStore } from '../identity/sessions.ts';
import { FfmpegPool } from '../media/ffmpeg.ts';
import { buildWebAssets } from '../web/assets.ts';

/**
 * The control-plane service (issue 13): the database, the fact-ingest API, the policy stream
 * v2, the erasure/deletion sweeper and retention, on one fastify instance (routes registered
 * per concern, so the access API of issue 14 can join as another plugin). Several replicas may
 * serve one PostgreSQL database; the embedded database serves exactly one.
 */

export interface ControlPlaneDeps {
  logger?: Logger;
  metrics?: ControlPlaneMetrics;
  /** Overrides the store built from the configuration (tests); null: none. */
  store?: ControlPlaneStore | null;
  now?: () => number;
  /** Reuse an open database instead of opening the configured one (benchmarks, tests). */
  db?: Database;
}

export class ControlPlane {
  readonly config: ControlPlaneConfig;
  readonly db: Database;
  readonly app: FastifyInstance;
  readonly stream: StreamServer;
  readonly sweeper: LedgerSweeper;
  readonly metrics: ControlPlaneMetrics;
  readonly logger: Logger;
  /** The people's side (issue 14): the access API's use cases, sessions, the render/extract pool. */
  readonly access: AccessService;
  readonly sessions: SessionStore;
  readonly pool: FfmpegPool;
  readonly #maintenance: Maintenance;
  readonly #store: ControlPlaneStore | undefined;
  readonly #ownsDb: boolean;
  /** Anchors every audit stream's head in the database (present when the store is configured). */
  readonly anchoring: AuditAnchoring | undefined;
  #closing: Promise<void> | undefined;

  private constructor(init: {
    config: ControlPlaneConfig;
    db: Database;
    app: FastifyInstance;
    stream: StreamServer;
    sweeper: LedgerSweeper;
    metrics: ControlPlaneMetrics;
    logger: Logger;
    maintenance: Maintenance;
    store: ControlPlaneStore | undefined;
    ownsDb: boolean;
    access: AccessService;
    sessions: SessionStore;
    pool: FfmpegPool;
    anchoring?: AuditAnchoring | undefined;
  }) {
    this.access = init.access;
    this.sessions = init.sessions;
    this.pool = init.pool;
    this.config = init.config;
    this.db = init.db;
    this.app = init.app;
    this.stream = init.stream;
    this.sweeper = init.sweeper;
    this.metrics = init.metrics;
    this.logger = init.logger;
    this.#maintenance = init.maintenance;
    this.#store = init.store;
    this.#ownsDb = init.ownsDb;
    this.anchoring = init.anchoring;
  }

  static async start(config: ControlPlaneConfig, deps: ControlPlaneDeps = {}): Promise<ControlPlane> {
    const logger = deps.logger ?? createLogger(config.logLevel);
    const metrics = deps.metrics ?? createControlPlaneMetrics();
    const now = deps.now ?? Date.now;
    if (config.stream.secret === undefined) {
      throw new OptinError('CONFIG_INVALID', 'no stream secret: set OPTIN_CONTROL_SECRET (at least 32 characters, shared with the recorders)');
    }
    const cleanups: (() => Promise<unknown>)[] = [];
    try {
      const db =
        deps.db ??
        (await openDatabase({
          url: config.database.url,
          dataDir: config.dataDir,
          poolSize: config.database.poolSize,
          logger,
          onQuery: (seconds, ok) => metrics.dbQuerySeconds.observe({ ok: String(ok) }, seconds),
        }));
      if (deps.db === undefined) cleanups.push(() => db.close());
      if (config.integrationsFile !== undefined) {
        const n = await bootstrapIntegrations(db, config.integrationsFile, now());
        logger.info({ integrations: n }, 'control: integrations bootstrapped');
      }
      let store: ControlPlaneStore | undefined;
      if (deps.store !== undefined) store = deps.store ?? undefined;
      else if (storeConfigured(config)) {
        store = await openControlPlaneStore({
          s3: { endpoint: config.s3.endpoint!, accessKey: config.s3.accessKey!, secretKey: config.s3.secretKey!, region: config.s3.region },
          bucketPrefix: config.s3.bucketPrefix,
          mediaBucket: config.s3.mediaBucket,
          keysBucket: config.s3.keysBucket,
          auditBucket: config.s3.auditBucket,
          keyring: config.keyring,
          retentionSeconds: config.retentionSeconds,
          spoolDir: path.resolve(config.dataDir, 'control-spool', config.replicaId),
          nodeId: config.replicaId,
          logger,
          audit: auditStoreSettings(config),
        });
        cleanups.push(() => store!.close());
      }

      const ctx: ApiContext = {
        db,
        auth: new IntegrationAuth(db),
        metrics,
        now,
        contiguityToleranceMs: DEFAULT_CONTIGUITY_TOLERANCE_MS,
        maxEvidenceSkewMs: 5 * 60_000,
      };
      // The people's side (issue 14): the access API, the web app, sign-in.
      const a = config.access;
      const pool = new FfmpegPool({ concurrency: a.ffmpegConcurrency, queue: a.ffmpegQueue, timeoutMs: a.ffmpegTimeoutSeconds * 1000 });
      cleanups.push(async () => pool.close());
      let kickSweeper: () => void = () => undefined;
      const access = new AccessService({
        db,
        ...(store?.reader !== undefined && store.s3 !== undefined && store.buckets !== undefined ? { store: { source: store.reader, s3: store.s3, buckets: store.buckets } } : {}),
        ...(store?.trail === undefined ? {} : { audit: store.trail }),
        pool,
        replicaId: config.replicaId,
        logger,
        kickSweeper: () => kickSweeper(),
        renderCacheBytes: a.renderCacheMb * 1024 * 1024,
        renderCacheTtlMs: a.renderCacheMinutes * 60_000,
        extractMaxBytes: a.extractMb * 1024 * 1024,
        extractTtlMs: a.extractHoldMinutes * 60_000,
        retentionSeconds: config.retentionSeconds,
        now,
      });
      cleanups.push(() => access.close());
      const sessions = new SessionStore({ db, idleMs: a.sessionIdleMinutes * 60_000, absoluteMs: a.sessionMaxHours * 3600_000, now });
      let publicUrl = a.publicUrl;
      const resolvePublicUrl = (): string => publicUrl ?? 'http://127.0.0.1';
      const mapping: ClaimMapping = { roleClaim: a.oidc.roleClaim, subjectClaim: a.oidc.subjectClaim, roleMap: a.oidc.roleMap };
      const oidc =
        a.oidc.issuer === undefined || a.oidc.clientId === undefined
          ? undefined
          : new OidcRelyingParty(
              {
                issuer: a.oidc.issuer,
                clientId: a.oidc.clientId,
                ...(a.oidc.clientSecret === undefined ? {} : { clientSecret: a.oidc.clientSecret }),
                publicUrl: resolvePublicUrl,
                scopes: a.oidc.scopes,
                allowInsecure: new URL(a.oidc.issuer).protocol === 'http:',
              },
              logger,
            );
      let verifier: Promise<ServiceTokenVerifier | undefined> | undefined;
      const serviceTokens = (): Promise<ServiceTokenVerifier | undefined> => {
        verifier ??= (async () => {
          if (oidc === undefined) return undefined;
          const [issuer, jwks] = await Promise.all([oidc.issuer(), oidc.jwksUri()]);
          return new ServiceTokenVerifier({ issuer, audience: a.apiAudience, jwks, maxTokenAgeSeconds: a.maxTokenAgeSeconds, claims: mapping, now });
        })().catch((err: unknown) => {
          verifier = undefined;
          throw err;
        });
        return verifier;
      };
      const people: PeopleContext = { access, sessions, oidc, serviceTokens, assets: await buildWebAssets(), pool, publicUrl: resolvePublicUrl, logger, now };
      const app = await buildApiApp(config, ctx, logger, { ctx: people, mapping, ...(a.oidc.issuer === undefined ? {} : { idpOrigin: new URL(a.oidc.issuer).origin }) });
      cleanups.push(() => app.close());

      const sweeper = new LedgerSweeper({
        db,
        store,
        replicaId: config.replicaId,
        logger,
        metrics,
        graceMs: config.ledger.graceMs,
        holderTimeoutMs: config.ledger.holderTimeoutMs,
        intervalMs: config.ledger.sweepIntervalMs,
        liveWindowMs: Math.max(3 * config.stream.heartbeatMs, 2_000),
        now,
      });
      const stream = new StreamServer({
        db,
        secret: config.stream.secret,
        replicaId: config.replicaId,
        heartbeatMs: config.stream.heartbeatMs,
        logger,
        metrics,
        requireClientCert: config.http.clientCaFile !== undefined,
        tombstoneHorizonMs: config.stream.tombstoneHorizonMs,
        now,
        onConfirmation: () => sweeper.kick(),
      });
      kickSweeper = () => sweeper.kick();
      // Deletions and erasures made anywhere (any replica, any path) leave this replica's renders
      // and held extracts as soon as the fact log tells of them (NOTIFY, then a read).
      stream.follower.on('facts', (facts) => {
        void access.onFacts(facts).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'access: following facts failed'));
      });
      await access.start();
      await app.ready();
      await stream.start(app.server);
      cleanups.unshift(() => stream.close());
      await app.listen({ host: config.http.host, port: config.http.port });
      if (publicUrl === undefined) {
        const addr = app.server.address() as AddressInfo;
        // Loopback without a configured public URL: `localhost`, which browsers treat as a secure
        // context (the session cookie is Secure) whether it is 127.0.0.1 or ::1.
        publicUrl = `${config.http.tlsCertFile !== undefined ? 'https' : 'http'}://${isLoopback(config.http.host) ? 'localhost' : config.http.host}:${addr.port}`;
      }
      sweeper.start();
      const maintenance = new Maintenance({ db, retentionSeconds: config.retentionSeconds, factsRetentionHours: config.factsRetentionHours, logger, metrics, now, extra: [() => sessions.purge(), () => access.purge()] });
      maintenance.start();
      // The audit registry: this replica's own stream, then every stream's head anchored
      // periodically (only with the store: the heads are read from the audit bucket).
      let anchoring: AuditAnchoring | undefined;
      if (store !== undefined) {
        await registerAuditStream(db, config.replicaId, 'replica', now());
        anchoring = new AuditAnchoring({ db, heads: store.audit, logger, now });
        anchoring.start(config.audit.anchorIntervalMs);
      }
      const cp = new ControlPlane({ config, db, app, stream, sweeper, metrics, logger, maintenance, store, ownsDb: deps.db === undefined, access, sessions, pool, anchoring });
      cp.#publicUrl = resolvePublicUrl;
      logger.info({ url: cp.url, replicaId: config.replicaId, database: db.kind, store: store !== undefined, seq: stream.follower.head }, 'control plane listening');
      return cp;
    } catch (err) {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
      throw err;
    }
  }

  #publicUrl: () => string = () => this.url;

  /** The store this replica deletes through and reads recordings from (undefined: none configured). */
  get store(): ControlPlaneStore | undefined {
    return this.#store;
  }

  /** The URL people reach the web app at (OPTIN_PUBLIC_URL, else http://localhost:<port>). */
  get publicUrl(): string {
    return this.#publicUrl();
  }

  get #tls(): boolean {
    return this.config.http.tlsCertFile !== undefined;
  }

  /** http(s)://host:port of the API. */
  get url(): string {
    const a = this.app.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.#tls ? 'https' : 'http'}://${host}:${a.port}`;
  }

  /** ws(s)://host:port/v1/stream: what a recorder's OPTIN_CONTROL_URL points at. */
  get streamUrl(): string {
    return `${this.url.replace(/^http/, 'ws')}/v1/stream`;
  }

  get port(): number {
    return (this.app.server.address() as AddressInfo).port;
  }

  /** Stops serving and closes the database (when it opened it). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.sweeper.close();
      this.#maintenance.close();
      await this.access.close();
      this.pool.close();
      await this.anchoring?.close();
      await this.stream.close();
      this.app.server.closeAllConnections();
      await this.app.close();
      await this.#store?.close().catch(() => undefined);
      if (this.#ownsDb) await this.db.close();
      this.logger.info({ replicaId: this.config.replicaId }, 'control plane closed');
    })();
    return this.#closing;
  }
}
