import { isIP } from 'node:net';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';
import { IdSchema } from '../ids/ids.ts';
import { ROLES } from '../access/roles.ts';
import { requireAuditKey } from '../audit/auditKey.ts';
import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';
import { checkKeyringKeys, loadEnvConfig, secretSetting, storeSecretKeySetting, type EnvKind } from '../config/envLoader.ts';

/**
 * Every setting of the control plane (`npm run control`), with its default, in one place
 * (docs/control-plane.md, "Configuration"). Sources, later winning: defaults < the JSON file named
 * by OPTIN_CONTROL_CONFIG < OPTIN_* environment. Strict: an unknown key is an error (a setting
 * misspelt in a file must not silently fall back to a default).
 */

const port = z.int().min(0).max(65535);
const secret = secretSetting;

export const ControlPlaneConfigSchema = z.strictObject({
  /** This replica's id: the stream's `serverId`, the sweeper's claims, the audit writer. */
  replicaId: IdSchema.default(() => `cp-${os.hostname().replace(/[^A-Za-z0-9_-]/g, '').slice(0, 40) || 'local'}-${randomBytes(3).toString('hex')}`),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Root of local state; the embedded database lives in <dataDir>/control-db. */
  dataDir: z.string().min(1).default('var'),
  database: z
    .strictObject({
      /** postgres://user:pass@host:port/db. Unset: the embedded database (PGlite). */
      url: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
      poolSize: z.int().min(1).max(200).default(10),
    })
    .prefault({}),
  http: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: port.default(8780),
      /** PEM files: serve HTTPS (and wss://). Required unless the host is loopback. */
      tlsCertFile: z.string().optional(),
      tlsKeyFile: z.string().optional(),
      /** PEM CA: workers must present a client certificate it signed (mutual TLS, stream only). */
      clientCaFile: z.string().optional(),
      /** Largest request body. */
      bodyLimitBytes: z.int().min(1024).max(8 * 1024 * 1024).default(64 * 1024),
      /** Requests per minute per integration (or per address, unauthenticated). */
      rateLimitPerMinute: z.int().min(1).max(1_000_000).default(6000),
    })
    .prefault({}),
  stream: z
    .strictObject({
      /** Shared with the workers (OPTIN_CONTROL_SECRET), at least 32 bytes, not a placeholder. */
      secret: secret.optional(),
      heartbeatMs: z.int().min(10).max(60_000).default(1000),
      /** Completed deletions younger than this are listed in snapshots as tombstones. */
      tombstoneHorizonMs: z.int().min(60_000).default(24 * 3600_000),
    })
    .prefault({}),
  /** Bootstrap file of integration credentials (id, scopes, secretSha256), applied at start. */
  integrationsFile: z.string().optional(),
  ledger: z
    .strictObject({
      graceMs: z.int().min(0).default(2_000),
      holderTimeoutMs: z.int().min(0).default(30_000),
      sweepIntervalMs: z.int().min(50).default(1_000),
    })
    .prefault({}),
  /** R8: the longest anything about a recording may be kept; counters live this long past their month. */
  retentionSeconds: z.int().min(1).max(MAX_RETENTION_SECONDS, 'must be at most 2592000 (30 days, DESIGN R8)').default(MAX_RETENTION_SECONDS),
  /** Stream log kept this long (workers far behind reconnect for a snapshot). */
  factsRetentionHours: z.int().min(1).max(24 * 30).default(24 * 7),
  /** The object store, for deletions no worker can do and for `optin catalogue rebuild`. Optional. */
  s3: z
    .strictObject({
      endpoint: z.string().url().optional(),
      accessKey: z.string().optional(),
      secretKey: storeSecretKeySetting.optional(),
      region: z.string().default('us-east-1'),
      bucketPrefix: z.string().regex(/^[a-z0-9-]{0,20}$/).default(''),
      mediaBucket: z.string().default('optin-media'),
      keysBucket: z.string().default('optin-keys'),
      auditBucket: z.string().default('optin-audit'),
    })
    .prefault({}),
  keyring: z.strictObject({ activeKeyId: IdSchema, keys: z.record(IdSchema, z.string()) }).optional(),
  /** The people's side (issue 14): the web app and the access API, sign-in, sessions, renders and extracts. */
  access: z
    .strictObject({
      /** The URL people reach the control plane at (sign-in redirects). Default: http(s)://<http.host>:<http.port>. */
      publicUrl: z.string().url().optional(),
      oidc: z
        .strictObject({
          /** The contact centre's OpenID provider. Unset: no sign-in (the web app and the access API answer 503). */
          issuer: z.string().url().optional(),
          clientId: z.string().min(1).optional(),
          /** Confidential client; without it a public client (PKCE alone). */
          clientSecret: z.string().min(16, 'must be at least 16 characters').optional(),
          scopes: z.string().default('openid profile'),
          /** Dotted path of the claim that names the role (e.g. realm_access.roles). */
          roleClaim: z.string().regex(/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/).default('optin_roles'),
          subjectClaim: z.string().regex(/^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$/).default('sub'),
          /** The provider's group names -> optin roles. */
          roleMap: z.record(z.string().min(1).max(200), z.enum(ROLES)).default({}),
        })
        .prefault({}),
      /** `aud` of the JWT access tokens services present (the extract service's client credentials). */
      apiAudience: z.string().min(1).default('optin-api'),
      /** A service token older than this (its `iat`) is refused, whatever its `exp`. */
      maxTokenAgeSeconds: z.int().min(30).max(24 * 3600).default(600),
      sessionIdleMinutes: z.int().min(1).max(24 * 60).default(30),
      sessionMaxHours: z.int().min(1).max(24 * 7).default(8),
      renderCacheMb: z.int().min(1).max(16 * 1024).default(128),
      renderCacheMinutes: z.int().min(1).max(24 * 60).default(10),
      extractMb: z.int().min(1).max(16 * 1024).default(256),
      extractHoldMinutes: z.int().min(1).max(24 * 60).default(15),
      /** ffmpeg processes at once for renders and extracts; beyond it (and the queue) 503 + Retry-After. */
      ffmpegConcurrency: z.int().min(1).max(64).default(2),
      ffmpegQueue: z.int().min(0).max(1000).default(2),
      ffmpegTimeoutSeconds: z.int().min(1).max(3600).default(120),
    })
    .prefault({}),
  /** The audit trail: this replica writes deletion receipts to it and anchors every stream's head (docs/rules.md "Audit"). */
  audit: z
    .strictObject({
      /** The same HMAC key as the recorders (hex or base64, >= 32 bytes); required with the store. */
      hmacKey: z.string().optional(),
      hmacKeyFile: z.string().min(1).optional(),
      /** The audit principal (put and read, never delete); default the s3 keys. */
      accessKey: z.string().optional(),
      secretKey: storeSecretKeySetting.optional(),
      lockMode: z.enum(['COMPLIANCE', 'GOVERNANCE']).default('COMPLIANCE'),
      lockDays: z.number().positive().max(3650).default(400),
      /** How often every stream's head is read and anchored in the database. */
      anchorIntervalMs: z.int().min(100).max(24 * 3600_000).default(60_000),
    })
    .refine((a) => !(a.hmacKey !== undefined && a.hmacKeyFile !== undefined), { message: 'set hmacKey or hmacKeyFile, not both' })
    .refine((a) => (a.accessKey === undefined) === (a.secretKey === undefined), { message: 'set both audit.accessKey and audit.secretKey, or neither' })
    .prefault({}),
});

export type ControlPlaneConfig = z.infer<typeof ControlPlaneConfigSchema>;

const ENV: Record<string, readonly [string, EnvKind]> = {
  OPTIN_CONTROL_REPLICA_ID: ['replicaId', 'string'],
  OPTIN_LOG_LEVEL: ['logLevel', 'string'],
  OPTIN_DATA_DIR: ['dataDir', 'string'],
  OPTIN_DATABASE_URL: ['database.url', 'string'],
  OPTIN_DATABASE_POOL_SIZE: ['database.poolSize', 'number'],
  OPTIN_CONTROL_HOST: ['http.host', 'string'],
  OPTIN_CONTROL_PORT: ['http.port', 'number'],
  OPTIN_CONTROL_TLS_CERT: ['http.tlsCertFile', 'string'],
  OPTIN_CONTROL_TLS_KEY: ['http.tlsKeyFile', 'string'],
  OPTIN_CONTROL_CLIENT_CA_FILE: ['http.clientCaFile', 'string'],
  OPTIN_CONTROL_BODY_LIMIT_BYTES: ['http.bodyLimitBytes', 'number'],
  OPTIN_CONTROL_RATE_LIMIT_PER_MINUTE: ['http.rateLimitPerMinute', 'number'],
  OPTIN_CONTROL_SECRET: ['stream.secret', 'string'],
  OPTIN_CONTROL_HEARTBEAT_MS: ['stream.heartbeatMs', 'number'],
  OPTIN_CONTROL_TOMBSTONE_HORIZON_MS: ['stream.tombstoneHorizonMs', 'number'],
  OPTIN_CONTROL_INTEGRATIONS_FILE: ['integrationsFile', 'string'],
  OPTIN_CONTROL_ERASURE_GRACE_MS: ['ledger.graceMs', 'number'],
  OPTIN_CONTROL_HOLDER_TIMEOUT_MS: ['ledger.holderTimeoutMs', 'number'],
  OPTIN_CONTROL_SWEEP_INTERVAL_MS: ['ledger.sweepIntervalMs', 'number'],
  OPTIN_RETENTION_SECONDS: ['retentionSeconds', 'number'],
  OPTIN_CONTROL_FACTS_RETENTION_HOURS: ['factsRetentionHours', 'number'],
  OPTIN_S3_ENDPOINT: ['s3.endpoint', 'string'],
  OPTIN_S3_ACCESS_KEY: ['s3.accessKey', 'string'],
  OPTIN_S3_SECRET_KEY: ['s3.secretKey', 'string'],
  OPTIN_S3_REGION: ['s3.region', 'string'],
  OPTIN_S3_BUCKET_PREFIX: ['s3.bucketPrefix', 'string'],
  OPTIN_KEYRING: ['keyring', 'json'],
  OPTIN_PUBLIC_URL: ['access.publicUrl', 'string'],
  OPTIN_OIDC_ISSUER: ['access.oidc.issuer', 'string'],
  OPTIN_OIDC_CLIENT_ID: ['access.oidc.clientId', 'string'],
  OPTIN_OIDC_CLIENT_SECRET: ['access.oidc.clientSecret', 'string'],
  OPTIN_OIDC_SCOPES: ['access.oidc.scopes', 'string'],
  OPTIN_OIDC_ROLE_CLAIM: ['access.oidc.roleClaim', 'string'],
  OPTIN_OIDC_SUBJECT_CLAIM: ['access.oidc.subjectClaim', 'string'],
  OPTIN_OIDC_ROLE_MAP: ['access.oidc.roleMap', 'json'],
  OPTIN_API_AUDIENCE: ['access.apiAudience', 'string'],
  OPTIN_TOKEN_MAX_AGE_SECONDS: ['access.maxTokenAgeSeconds', 'number'],
  OPTIN_SESSION_IDLE_MINUTES: ['access.sessionIdleMinutes', 'number'],
  OPTIN_SESSION_MAX_HOURS: ['access.sessionMaxHours', 'number'],
  OPTIN_RENDER_CACHE_MB: ['access.renderCacheMb', 'number'],
  OPTIN_EXTRACT_MB: ['access.extractMb', 'number'],
  OPTIN_EXTRACT_HOLD_MINUTES: ['access.extractHoldMinutes', 'number'],
  OPTIN_FFMPEG_CONCURRENCY: ['access.ffmpegConcurrency', 'number'],
  OPTIN_FFMPEG_QUEUE: ['access.ffmpegQueue', 'number'],
  OPTIN_FFMPEG_TIMEOUT_SECONDS: ['access.ffmpegTimeoutSeconds', 'number'],
  OPTIN_AUDIT_HMAC_KEY: ['audit.hmacKey', 'string'],
  OPTIN_AUDIT_HMAC_KEY_FILE: ['audit.hmacKeyFile', 'string'],
  OPTIN_S3_AUDIT_ACCESS_KEY: ['audit.accessKey', 'string'],
  OPTIN_S3_AUDIT_SECRET_KEY: ['audit.secretKey', 'string'],
  OPTIN_AUDIT_LOCK_MODE: ['audit.lockMode', 'string'],
  OPTIN_AUDIT_LOCK_DAYS: ['audit.lockDays', 'number'],
  OPTIN_AUDIT_ANCHOR_INTERVAL_MS: ['audit.anchorIntervalMs', 'number'],
};

const SECRET_PATHS = ['stream.secret', 's3.secretKey', 'keyring', 'database.url', 'access.oidc.clientSecret', 'audit.hmacKey', 'audit.secretKey'];

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1';
  return false;
}

/** Validated configuration; one OptinError naming every bad field and where it came from (never a secret's value). */
export function loadControlPlaneConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): ControlPlaneConfig {
  const title = 'control-plane configuration';
  const { config } = loadEnvConfig(
    { schema: ControlPlaneConfigSchema, env: ENV, secretPaths: SECRET_PATHS, fileVariable: 'OPTIN_CONTROL_CONFIG', title, listedIn: 'docs/control-plane.md' },
    env,
    overrides,
  );
  const tls = config.http.tlsCertFile !== undefined || config.http.tlsKeyFile !== undefined;
  if (tls && (config.http.tlsCertFile === undefined || config.http.tlsKeyFile === undefined)) {
    throw new OptinError('CONFIG_INVALID', 'set both OPTIN_CONTROL_TLS_CERT and OPTIN_CONTROL_TLS_KEY, or neither');
  }
  // The stream and the API carry consent facts: cleartext only where nothing else can listen.
  if (!tls && !isLoopback(config.http.host)) {
    throw new OptinError(
      'CONFIG_INVALID',
      `http.host ${config.http.host} is not loopback: TLS is required (OPTIN_CONTROL_TLS_CERT and OPTIN_CONTROL_TLS_KEY), or bind 127.0.0.1 behind a TLS-terminating proxy`,
    );
  }
  if (config.http.clientCaFile !== undefined && !tls) {
    throw new OptinError('CONFIG_INVALID', 'OPTIN_CONTROL_CLIENT_CA_FILE (mutual TLS) needs TLS: set OPTIN_CONTROL_TLS_CERT and OPTIN_CONTROL_TLS_KEY');
  }
  const { issuer, clientId } = config.access.oidc;
  if ((issuer === undefined) !== (clientId === undefined)) {
    throw new OptinError('CONFIG_INVALID', 'set OPTIN_OIDC_ISSUER and OPTIN_OIDC_CLIENT_ID together (or neither: no sign-in)');
  }
  // Sign-in and tokens over cleartext only to a provider on this machine.
  if (issuer !== undefined && new URL(issuer).protocol === 'http:' && !isLoopback(new URL(issuer).hostname)) {
    throw new OptinError('CONFIG_INVALID', `OPTIN_OIDC_ISSUER ${issuer} is http:// on another host: the identity provider must be reached over https`);
  }
  const pub = config.access.publicUrl;
  if (pub !== undefined && new URL(pub).protocol === 'http:' && !isLoopback(new URL(pub).hostname)) {
    throw new OptinError('CONFIG_INVALID', `OPTIN_PUBLIC_URL ${pub} is http:// on another host: people sign in over https (session cookies are Secure)`);
  }
  checkKeyringKeys(config.keyring, title, undefined);
  return config;
}

/** The store settings are usable only when complete; a partial set is a configuration error. */
export function storeConfigured(config: ControlPlaneConfig): boolean {
  const { endpoint, accessKey, secretKey } = config.s3;
  const any = endpoint !== undefined || accessKey !== undefined || secretKey !== undefined || config.keyring !== undefined;
  const all = endpoint !== undefined && accessKey !== undefined && secretKey !== undefined && config.keyring !== undefined;
  if (any && !all) {
    throw new OptinError('CONFIG_INVALID', 'the store needs OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY and OPTIN_KEYRING together (or none: erasures then wait for workers)');
  }
  return all;
}

/** The audit settings the store adapter takes: the key (required with the store), the principal, the lock. */
export function auditStoreSettings(config: ControlPlaneConfig): { hmacKey: Buffer; accessKey?: string | undefined; secretKey?: string | undefined; retention: { mode: 'COMPLIANCE' | 'GOVERNANCE'; days: number } } {
  return {
    hmacKey: requireAuditKey(config.audit),
    accessKey: config.audit.accessKey,
    secretKey: config.audit.secretKey,
    retention: { mode: config.audit.lockMode, days: config.audit.lockDays },
  };
}
