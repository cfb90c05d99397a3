import os from 'node:os';
import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';
import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';
import { IdSchema } from '../ids/ids.ts';
import { checkKeyringKeys, loadEnvConfig, secretSetting, storeSecretKeySetting, type EnvKind } from './envLoader.ts';
import { SiprecConfigSchema } from '../siprec/siprecConfig.ts';
import { DEFAULT_BATCH_MS, DEFAULT_OLD_SPACE_MB, DEFAULT_SEALING, DEFAULT_SEMI_SPACE_MB } from '../mediathreads/defaults.ts';

export { MAX_RETENTION_SECONDS };

const id = IdSchema;
const port = z.number().int().min(1).max(65535);
const secret = secretSetting;

/**
 * Every setting optin has, with its default, in one place (README "Configuration" lists them).
 * Sources, later winning: defaults < JSON file named by OPTIN_CONFIG < OPTIN_* environment.
 * Strict: an unknown key anywhere (a misspelt setting in the file) is an error naming it, never a
 * silent default; secrets that are placeholders from the examples, short or uniform are refused.
 */
export const ConfigSchema = z.strictObject({
  workerId: id.default(`w-${os.hostname().replace(/[^A-Za-z0-9_-]/g, '').slice(0, 20) || 'local'}`),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  mediasoup: z
    .strictObject({
      workers: z.number().int().min(1).max(64).default(Math.max(1, os.availableParallelism())),
      workerBin: z.string().optional(),
      rtcMinPort: port.default(40000),
      rtcMaxPort: port.default(49999),
      listenIp: z.string().default('127.0.0.1'),
      announcedAddress: z.string().optional(),
    })
    .prefault({}),
  control: z
    .strictObject({
      url: z.string().url().default('ws://127.0.0.1:8780/v1/stream'),
      secret: secret.optional(),
      heartbeatTimeoutMs: z.number().int().min(100).default(3000),
      caFile: z.string().optional(),
      /** Mutual TLS: the worker's certificate and key (PEM files), when the control plane asks for one. */
      clientCertFile: z.string().optional(),
      clientKeyFile: z.string().optional(),
      /** How long a monthly-cap request waits for the control plane's decision (`cap-unknown` after). */
      capTimeoutMs: z.number().int().min(100).max(60_000).default(2000),
    })
    .prefault({}),
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
      /**
       * How media segments are PUT: `lean` (our signed PUT on a keep-alive pool, LeanPut.ts) or
       * `minio` (the minio client, the client of record for everything else). Measured by
       * `npm run bench:put`; `minio` for a store the lean path was not tried against.
       */
      mediaPut: z.enum(['lean', 'minio']).default('lean'),
    })
    .prefault({}),
  keyring: z
    .strictObject({
      activeKeyId: id,
      keys: z.record(id, z.string()),
    })
    .optional(),
  retentionSeconds: z.number().int().min(1).max(MAX_RETENTION_SECONDS, 'must be at most 2592000 (30 days, R8 in docs/rules.md)').default(MAX_RETENTION_SECONDS),
  segmentSeconds: z.number().min(1).max(300).default(10),
  /**
   * How often an in-progress recording's manifest is rewritten when only segments were added
   * (begin, end, erasure and deletion are written at once). Crash repair rebuilds the segment list
   * from the segments' own metadata, so this bounds how stale a live recording's listing may be,
   * at one PUT per recording per period: at 750 calls, 5 s is 150 manifest PUTs a second.
   */
  manifestFlushSeconds: z.number().min(1).max(600).default(5),
  spool: z
    .strictObject({
      dir: z.string().default('var/spool'),
      maxBytes: z.number().int().min(1024 * 1024).default(1024 * 1024 * 1024),
    })
    .prefault({}),
  admission: z
    .strictObject({
      maxStreams: z.number().int().min(1).default(1000),
      maxEventLoopLagMs: z.number().min(1).default(100),
    })
    .prefault({}),
  transcoderThreads: z.number().int().min(1).max(16).default(1),
  /**
   * Where the media threads keep an open segment's closed Ogg pages until it is finished: 'disk'
   * (encrypted files under <spool.dir>/open-segments, a key per file held in memory; the page being
   * filled stays in memory) or 'memory'. Disk takes the open segments (~70 KB per stream on average
   * with 60 s segments) out of the process's memory for a page write per ~5 s per stream.
   */
  openSegments: z.enum(['disk', 'memory']).default('disk'),
  /**
   * Where a media thread's finished segments are sealed and PUT: 'thread' (in the media thread that
   * made it; the store on the main thread keeps the books and asks the thread, one segment at a
   * time) or 'main' (the Ogg moves to the main thread, whose store seals and PUTs it). 'thread' by
   * default: it keeps the main thread (the gate's decisions, admission, the pulse the media threads
   * fail closed on) responsive; on the bench's 2 cores it met the main loop and zero-loss targets
   * in every run where 'main' missed them in two of four, at the price of more lag in the media
   * threads on the direct path and slower PUTs (README, performance; docs/architecture.md §3.2).
   */
  segmentSealing: z.enum(['thread', 'main']).default(DEFAULT_SEALING),
  /**
   * Media threads for direct streams (SIPREC): their RTP is received and recorded there, one thread
   * per core by default (issue 16). 0 keeps the sockets and tracks on the main thread.
   */
  mediaThreads: z.number().int().min(0).max(64).default(Math.max(1, os.availableParallelism())),
  /**
   * Receive coalescing in each media thread, ms: it drains its sockets this often instead of
   * waking for every packet (0 = every packet). Costs up to this much extra delay per packet (the
   * jitter buffer absorbs it); saves most of the per-wake-up cost (README, performance).
   */
  mediaBatchMs: z.number().int().min(0).max(40).default(DEFAULT_BATCH_MS),
  /**
   * Each media thread's young generation, as V8's semi-space size in MB. V8 grows a busy isolate's
   * semi-spaces to 16 MB or more; a media thread allocates fast (a Buffer per datagram) but keeps
   * little past a few scavenges, so a small one costs ~1 % more CPU in scavenges and saves most of
   * the thread's heap (README, performance: 2 MB cut private memory per stream at 1,000 streams from 560 to about 260 KB).
   */
  mediaThreadSemiSpaceMb: z.number().int().min(1).max(64).default(DEFAULT_SEMI_SPACE_MB),
  /**
   * Each media thread's old generation limit, MB. V8 sizes a heap's growth steps from its limit:
   * left to itself on a machine with many GB it lets an isolate grow to 4x its live data before a
   * full collection (a media thread at 750 tracks: ~100 MB committed for ~32 MB live); at 512 MB
   * the step is ~1.4x. A thread past it dies like one that crashed (its calls' media stop, fail
   * closed); its live data is ~45 KB per track.
   */
  mediaThreadOldSpaceMb: z.number().int().min(64).max(8192).default(DEFAULT_OLD_SPACE_MB),
  /**
   * Where SFU legs (WebRTC, gateway plain legs) are tapped: `thread` (a PlainTransport consumer per
   * leg into the media threads' sockets) or `main` (a DirectTransport on the main thread, one
   * channel message per packet). Measured by `npm run bench` (README, performance).
   */
  sfuTap: z.enum(['thread', 'main']).default('thread'),
  http: z
    .strictObject({
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(7800),
    })
    .prefault({}),
  /** The audit trail (R11, docs/rules.md): its key, its own store principal, its object lock. */
  audit: z
    .strictObject({
      /** HMAC-SHA256 key of the trail, hex or base64, >= 32 bytes; the same for every writer and the verifier. Required (or hmacKeyFile). */
      hmacKey: z.string().optional(),
      /** A file holding the key (mode 0600 or stricter); instead of hmacKey. */
      hmacKeyFile: z.string().min(1).optional(),
      /** The audit principal: may put and read audit objects, never delete (docker/minio/optin-audit-policy.json). Default: the s3 keys. */
      accessKey: z.string().optional(),
      secretKey: storeSecretKeySetting.optional(),
      /** Object-lock retention of each entry where the bucket supports it (COMPLIANCE: nobody can shorten it). */
      lockMode: z.enum(['COMPLIANCE', 'GOVERNANCE']).default('COMPLIANCE'),
      lockDays: z.number().positive().max(3650).default(400),
    })
    .refine((a) => !(a.hmacKey !== undefined && a.hmacKeyFile !== undefined), { message: 'set hmacKey or hmacKeyFile, not both' })
    .refine((a) => (a.accessKey === undefined) === (a.secretKey === undefined), { message: 'set both audit.accessKey and audit.secretKey, or neither' })
    .prefault({}),
  /** Softphone joins (/signal) and SIP-gateway legs (/calls/{id}/plain-legs): docs/call-control.md. */
  callControl: z
    .strictObject({
      /** Verifies softphone join tokens (audience softphone-join); enables /signal and /softphone/. */
      joinSecret: secret.optional(),
      /** Verifies SIP-leg tokens (audience sip-leg); enables /calls/{id}/plain-legs. Must differ from joinSecret. */
      sipLegSecret: secret.optional(),
      /** Longest lifetime a token may claim (exp - iat), seconds. */
      maxTokenLifetimeSeconds: z.int().min(5).max(3600).default(300),
      /** Origins allowed to open /signal besides the page's own (e.g. https://agent.example.com). */
      allowedOrigins: z.array(z.url()).max(32).default([]),
      /** A socket that has not joined after this long is closed. */
      joinTimeoutMs: z.int().min(100).max(120_000).default(10_000),
      maxTransportsPerPeer: z.int().min(1).max(16).default(2),
      maxProducersPerPeer: z.int().min(1).max(16).default(2),
      maxConsumersPerPeer: z.int().min(1).max(256).default(32),
    })
    .refine((c) => c.joinSecret === undefined || c.joinSecret !== c.sipLegSecret, { message: 'joinSecret and sipLegSecret must differ', path: ['sipLegSecret'] })
    .prefault({}),
  /** The SIPREC recording server (docs/siprec.md): off unless enabled. */
  siprec: SiprecConfigSchema.prefault({}),
});

export type OptinConfig = z.infer<typeof ConfigSchema>;

/** OPTIN_* environment variables and the config path each sets. */
const ENV: Record<string, readonly [string, EnvKind]> = {
  OPTIN_WORKER_ID: ['workerId', 'string'],
  OPTIN_LOG_LEVEL: ['logLevel', 'string'],
  OPTIN_MEDIASOUP_WORKERS: ['mediasoup.workers', 'number'],
  OPTIN_MEDIASOUP_WORKER_BIN: ['mediasoup.workerBin', 'string'],
  OPTIN_RTC_MIN_PORT: ['mediasoup.rtcMinPort', 'number'],
  OPTIN_RTC_MAX_PORT: ['mediasoup.rtcMaxPort', 'number'],
  OPTIN_LISTEN_IP: ['mediasoup.listenIp', 'string'],
  OPTIN_ANNOUNCED_ADDRESS: ['mediasoup.announcedAddress', 'string'],
  OPTIN_CONTROL_URL: ['control.url', 'string'],
  OPTIN_CONTROL_SECRET: ['control.secret', 'string'],
  OPTIN_CONTROL_HEARTBEAT_TIMEOUT_MS: ['control.heartbeatTimeoutMs', 'number'],
  OPTIN_CONTROL_CA_FILE: ['control.caFile', 'string'],
  OPTIN_CONTROL_CLIENT_CERT: ['control.clientCertFile', 'string'],
  OPTIN_CONTROL_CLIENT_KEY: ['control.clientKeyFile', 'string'],
  OPTIN_CONTROL_CAP_TIMEOUT_MS: ['control.capTimeoutMs', 'number'],
  OPTIN_S3_ENDPOINT: ['s3.endpoint', 'string'],
  OPTIN_S3_ACCESS_KEY: ['s3.accessKey', 'string'],
  OPTIN_S3_SECRET_KEY: ['s3.secretKey', 'string'],
  OPTIN_S3_REGION: ['s3.region', 'string'],
  OPTIN_S3_BUCKET_PREFIX: ['s3.bucketPrefix', 'string'],
  OPTIN_KEYRING: ['keyring', 'json'],
  OPTIN_RETENTION_SECONDS: ['retentionSeconds', 'number'],
  OPTIN_SEGMENT_SECONDS: ['segmentSeconds', 'number'],
  OPTIN_MANIFEST_FLUSH_SECONDS: ['manifestFlushSeconds', 'number'],
  OPTIN_SPOOL_DIR: ['spool.dir', 'string'],
  OPTIN_SPOOL_MAX_BYTES: ['spool.maxBytes', 'number'],
  OPTIN_MAX_STREAMS: ['admission.maxStreams', 'number'],
  OPTIN_MAX_EVENT_LOOP_LAG_MS: ['admission.maxEventLoopLagMs', 'number'],
  OPTIN_TRANSCODER_THREADS: ['transcoderThreads', 'number'],
  OPTIN_MEDIA_THREADS: ['mediaThreads', 'number'],
  OPTIN_OPEN_SEGMENTS: ['openSegments', 'string'],
  OPTIN_SEGMENT_SEALING: ['segmentSealing', 'string'],
  OPTIN_MEDIA_BATCH_MS: ['mediaBatchMs', 'number'],
  OPTIN_MEDIA_THREAD_SEMI_SPACE_MB: ['mediaThreadSemiSpaceMb', 'number'],
  OPTIN_MEDIA_THREAD_OLD_SPACE_MB: ['mediaThreadOldSpaceMb', 'number'],
  OPTIN_SFU_TAP: ['sfuTap', 'string'],
  OPTIN_S3_MEDIA_PUT: ['s3.mediaPut', 'string'],
  OPTIN_HTTP_HOST: ['http.host', 'string'],
  OPTIN_HTTP_PORT: ['http.port', 'number'],
  OPTIN_AUDIT_HMAC_KEY: ['audit.hmacKey', 'string'],
  OPTIN_AUDIT_HMAC_KEY_FILE: ['audit.hmacKeyFile', 'string'],
  OPTIN_S3_AUDIT_ACCESS_KEY: ['audit.accessKey', 'string'],
  OPTIN_S3_AUDIT_SECRET_KEY: ['audit.secretKey', 'string'],
  OPTIN_AUDIT_LOCK_MODE: ['audit.lockMode', 'string'],
  OPTIN_AUDIT_LOCK_DAYS: ['audit.lockDays', 'number'],
  OPTIN_SOFTPHONE_JOIN_SECRET: ['callControl.joinSecret', 'string'],
  OPTIN_SIP_LEG_SECRET: ['callControl.sipLegSecret', 'string'],
  OPTIN_CALL_TOKEN_MAX_LIFETIME_SECONDS: ['callControl.maxTokenLifetimeSeconds', 'number'],
  OPTIN_SIGNAL_ALLOWED_ORIGINS: ['callControl.allowedOrigins', 'list'],
  OPTIN_SIGNAL_JOIN_TIMEOUT_MS: ['callControl.joinTimeoutMs', 'number'],
  OPTIN_SIPREC_ENABLED: ['siprec.enabled', 'json'],
  OPTIN_SIPREC_BIND_ADDRESS: ['siprec.bindAddress', 'string'],
  OPTIN_SIPREC_ADVERTISED_HOST: ['siprec.advertisedHost', 'string'],
  OPTIN_SIPREC_UDP_PORT: ['siprec.udpPort', 'json'],
  OPTIN_SIPREC_TCP_PORT: ['siprec.tcpPort', 'json'],
  OPTIN_SIPREC_MEDIA_PORT_MIN: ['siprec.media.portMin', 'number'],
  OPTIN_SIPREC_MEDIA_PORT_MAX: ['siprec.media.portMax', 'number'],
  OPTIN_SIPREC_MEDIA_ADVERTISED_ADDRESS: ['siprec.media.advertisedAddress', 'string'],
};

/** Variables that no longer exist: setting one is an error that names the replacement. */
const RETIRED_ENV: Record<string, string> = {
  OPTIN_JWT_SECRET: 'removed: recorders serve no access API and hold no key that can mint tokens; people sign in to the control plane with OpenID Connect and services present JWTs from the identity provider (docs/web-app.md)',
  OPTIN_CALL_CONTROL_SECRET: 'replaced by OPTIN_SOFTPHONE_JOIN_SECRET (softphone joins) and OPTIN_SIP_LEG_SECRET (SIP-gateway legs), two different secrets',
};

/** Names of settings that hold secrets: never echoed back in errors or logs. */
const SECRET_PATHS = ['control.secret', 's3.secretKey', 'keyring', 'audit.hmacKey', 'audit.secretKey', 'callControl.joinSecret', 'callControl.sipLegSecret'];

/**
 * Builds the validated configuration (src/config/envLoader.ts: file, variables, overrides, one
 * strict schema). Invalid input fails here, at startup, naming each bad field and the variable
 * that set it, never its secret value.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): OptinConfig {
  const title = 'configuration';
  const { config, origin } = loadEnvConfig(
    { schema: ConfigSchema, env: ENV, retired: RETIRED_ENV, secretPaths: SECRET_PATHS, fileVariable: 'OPTIN_CONFIG', title, listedIn: 'README "Configuration"' },
    env,
    overrides,
  );
  if (config.mediasoup.rtcMinPort > config.mediasoup.rtcMaxPort) {
    throw new OptinError('CONFIG_INVALID', 'invalid configuration: mediasoup.rtcMinPort must not exceed mediasoup.rtcMaxPort');
  }
  checkKeyringKeys(config.keyring, title, origin.get('keyring'));
  return config;
}

/** The store credentials the audit trail writes with: the audit principal's, else the store's. */
export function auditCredentials(config: OptinConfig): { accessKey: string; secretKey: string } {
  const { accessKey, secretKey } = config.audit.accessKey !== undefined && config.audit.secretKey !== undefined ? config.audit : config.s3;
  if (accessKey === undefined || secretKey === undefined) {
    throw new OptinError('CONFIG_INVALID', 'no credentials for the audit bucket: set OPTIN_S3_AUDIT_ACCESS_KEY and OPTIN_S3_AUDIT_SECRET_KEY (the audit principal), or the store keys');
  }
  return { accessKey, secretKey };
}
