import { readFileSync } from 'node:fs';
import os from 'node:os';
import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';
import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';
import { IdSchema } from '../ids/ids.ts';
import { withSecretFiles } from './secretFiles.ts';
import { SiprecConfigSchema } from '../siprec/siprecConfig.ts';

export { MAX_RETENTION_SECONDS };

const id = IdSchema;
const port = z.number().int().min(1).max(65535);

/**
 * Every setting optin has, with its default, in one place (README "Configuration" lists them).
 * Sources, later winning: defaults < JSON file named by OPTIN_CONFIG < OPTIN_* environment.
 */
export const ConfigSchema = z.object({
  workerId: id.default(`w-${os.hostname().replace(/[^A-Za-z0-9_-]/g, '').slice(0, 20) || 'local'}`),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  mediasoup: z
    .object({
      workers: z.number().int().min(1).max(64).default(Math.max(1, os.availableParallelism())),
      workerBin: z.string().optional(),
      rtcMinPort: port.default(40000),
      rtcMaxPort: port.default(49999),
      listenIp: z.string().default('127.0.0.1'),
      announcedAddress: z.string().optional(),
    })
    .prefault({}),
  control: z
    .object({
      url: z.string().url().default('ws://127.0.0.1:8780/v1/stream'),
      secret: z.string().min(32, 'must be at least 32 characters').optional(),
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
    .object({
      endpoint: z.string().url().optional(),
      accessKey: z.string().optional(),
      secretKey: z.string().optional(),
      region: z.string().default('us-east-1'),
      bucketPrefix: z.string().regex(/^[a-z0-9-]{0,20}$/).default(''),
      mediaBucket: z.string().default('optin-media'),
      keysBucket: z.string().default('optin-keys'),
      auditBucket: z.string().default('optin-audit'),
    })
    .prefault({}),
  keyring: z
    .object({
      activeKeyId: id,
      keys: z.record(id, z.string()),
    })
    .optional(),
  retentionSeconds: z.number().int().min(1).max(MAX_RETENTION_SECONDS, 'must be at most 2592000 (30 days, R8 in docs/rules.md)').default(MAX_RETENTION_SECONDS),
  segmentSeconds: z.number().min(1).max(300).default(10),
  spool: z
    .object({
      dir: z.string().default('var/spool'),
      maxBytes: z.number().int().min(1024 * 1024).default(1024 * 1024 * 1024),
    })
    .prefault({}),
  admission: z
    .object({
      maxStreams: z.number().int().min(1).default(1000),
      maxEventLoopLagMs: z.number().min(1).default(100),
    })
    .prefault({}),
  transcoderThreads: z.number().int().min(1).max(16).default(1),
  http: z
    .object({
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(7800),
      jwtSecret: z.string().min(32, 'must be at least 32 characters').optional(),
      /** Signs softphone join tokens and SIP-gateway leg requests (shared with the voice platform). */
      callControlSecret: z.string().min(32, 'must be at least 32 characters').optional(),
    })
    .prefault({}),
  /** The SIPREC recording server (docs/siprec.md): off unless enabled. */
  siprec: SiprecConfigSchema.prefault({}),
});

export type OptinConfig = z.infer<typeof ConfigSchema>;

/** OPTIN_* environment variables and the config path each sets. */
const ENV: Record<string, [string, 'string' | 'number' | 'json']> = {
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
  OPTIN_SPOOL_DIR: ['spool.dir', 'string'],
  OPTIN_SPOOL_MAX_BYTES: ['spool.maxBytes', 'number'],
  OPTIN_MAX_STREAMS: ['admission.maxStreams', 'number'],
  OPTIN_MAX_EVENT_LOOP_LAG_MS: ['admission.maxEventLoopLagMs', 'number'],
  OPTIN_TRANSCODER_THREADS: ['transcoderThreads', 'number'],
  OPTIN_HTTP_HOST: ['http.host', 'string'],
  OPTIN_HTTP_PORT: ['http.port', 'number'],
  OPTIN_JWT_SECRET: ['http.jwtSecret', 'string'],
  OPTIN_CALL_CONTROL_SECRET: ['http.callControlSecret', 'string'],
  OPTIN_SIPREC_ENABLED: ['siprec.enabled', 'json'],
  OPTIN_SIPREC_BIND_ADDRESS: ['siprec.bindAddress', 'string'],
  OPTIN_SIPREC_ADVERTISED_HOST: ['siprec.advertisedHost', 'string'],
  OPTIN_SIPREC_UDP_PORT: ['siprec.udpPort', 'json'],
  OPTIN_SIPREC_TCP_PORT: ['siprec.tcpPort', 'json'],
  OPTIN_SIPREC_MEDIA_PORT_MIN: ['siprec.media.portMin', 'number'],
  OPTIN_SIPREC_MEDIA_PORT_MAX: ['siprec.media.portMax', 'number'],
  OPTIN_SIPREC_MEDIA_ADVERTISED_ADDRESS: ['siprec.media.advertisedAddress', 'string'],
};

/** Names of settings that hold secrets: never echoed back in errors or logs. */
const SECRET_PATHS = new Set(['control.secret', 's3.secretKey', 'keyring', 'http.jwtSecret', 'http.callControlSecret']);

function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    node[part] ??= {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
}

/**
 * Builds the validated configuration. Invalid input fails here, at startup, with one
 * OptinError naming each bad field and the variable that set it, never its secret value.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, unknown> = {}): OptinConfig {
  env = withSecretFiles(env, Object.keys(ENV)); // OPTIN_X_FILE=path sets OPTIN_X (src/config/secretFiles.ts)
  let raw: Record<string, unknown> = {};
  if (env.OPTIN_CONFIG) {
    try {
      raw = JSON.parse(readFileSync(env.OPTIN_CONFIG, 'utf8')) as Record<string, unknown>;
    } catch (cause) {
      throw new OptinError('CONFIG_INVALID', `OPTIN_CONFIG=${env.OPTIN_CONFIG}: cannot read it as JSON (${(cause as Error).message})`);
    }
  }
  const origin = new Map<string, string>();
  for (const [name, [dotted, kind]] of Object.entries(ENV)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    origin.set(dotted, name);
    let parsed: unknown = value;
    if (kind === 'number') parsed = Number(value);
    if (kind === 'json') {
      try {
        parsed = JSON.parse(value);
      } catch {
        throw new OptinError('CONFIG_INVALID', `${name} is not valid JSON (value not shown: it holds secrets)`);
      }
    }
    setPath(raw, dotted, parsed);
  }
  for (const [dotted, value] of Object.entries(overrides)) setPath(raw, dotted, value);

  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const dotted = issue.path.join('.');
      const via = origin.get(dotted) ?? [...origin.entries()].find(([p]) => dotted.startsWith(`${p}.`))?.[1];
      const secret = [...SECRET_PATHS].some((p) => dotted === p || dotted.startsWith(`${p}.`));
      return `${dotted || '(root)'}${via ? ` (from ${via})` : ''}: ${issue.message}${secret ? ' (value not shown)' : ''}`;
    });
    throw new OptinError('CONFIG_INVALID', `invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  if (result.data.mediasoup.rtcMinPort > result.data.mediasoup.rtcMaxPort) {
    throw new OptinError('CONFIG_INVALID', 'invalid configuration: mediasoup.rtcMinPort must not exceed mediasoup.rtcMaxPort');
  }
  return result.data;
}
