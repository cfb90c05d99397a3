/**
 * Reference policy server, standalone (docs/architecture.md §4): `npm run policy-server`.
 *
 * Configuration (environment):
 *   OPTIN_CONTROL_SECRET        shared secret, >= 32 bytes (required; never logged)
 *   OPTIN_POLICY_HOST           bind address, default 127.0.0.1
 *   OPTIN_POLICY_PORT           default 8780
 *   OPTIN_POLICY_HEARTBEAT_MS   default 1000
 *   OPTIN_POLICY_TLS_CERT / OPTIN_POLICY_TLS_KEY   PEM files: serve wss:// instead of ws://
 *   OPTIN_LOG_LEVEL             default info
 *
 * Facts are fed on standard input, one JSON object per line, in the wire
 * format of a delta's `fact` (docs/control-protocol.md), for example
 *   {"type":"call.started","callId":"c1","participants":[...]}
 * Each line is validated and broadcast as the next delta; a refused line is
 * reported on stderr with the reason and changes nothing. Recording-state
 * reports from workers are printed on stdout, one JSON object per line.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { PolicyServer } from '../src/control/PolicyServer.ts';
import { FactSchema } from '../src/gate/facts.ts';
import { isOptinError } from '../src/errors/OptinError.ts';
import { createLogger } from '../src/log/logger.ts';

const EnvSchema = z.object({
  OPTIN_CONTROL_SECRET: z.string().min(32, 'OPTIN_CONTROL_SECRET must be at least 32 bytes (openssl rand -base64 48)'),
  OPTIN_POLICY_HOST: z.string().default('127.0.0.1'),
  OPTIN_POLICY_PORT: z.coerce.number().int().min(0).max(65535).default(8780),
  OPTIN_POLICY_HEARTBEAT_MS: z.coerce.number().int().min(10).max(60_000).default(1000),
  OPTIN_POLICY_TLS_CERT: z.string().optional(),
  OPTIN_POLICY_TLS_KEY: z.string().optional(),
  OPTIN_LOG_LEVEL: z.string().default('info'),
});

async function main(): Promise<void> {
  const parsed = EnvSchema.safeParse(process.env);
  if (!parsed.success) {
    // Messages name the variable, never its value.
    console.error(`policy-server: bad configuration: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    process.exit(2);
  }
  const env = parsed.data;
  if ((env.OPTIN_POLICY_TLS_CERT === undefined) !== (env.OPTIN_POLICY_TLS_KEY === undefined)) {
    console.error('policy-server: set both OPTIN_POLICY_TLS_CERT and OPTIN_POLICY_TLS_KEY, or neither');
    process.exit(2);
  }
  const logger = createLogger(env.OPTIN_LOG_LEVEL, process.stderr as unknown as Parameters<typeof createLogger>[1]);
  const server = new PolicyServer({
    secret: env.OPTIN_CONTROL_SECRET,
    host: env.OPTIN_POLICY_HOST,
    port: env.OPTIN_POLICY_PORT,
    heartbeatMs: env.OPTIN_POLICY_HEARTBEAT_MS,
    https:
      env.OPTIN_POLICY_TLS_CERT !== undefined && env.OPTIN_POLICY_TLS_KEY !== undefined
        ? { cert: readFileSync(env.OPTIN_POLICY_TLS_CERT), key: readFileSync(env.OPTIN_POLICY_TLS_KEY) }
        : undefined,
    logger,
  });
  server.on('recording-state', (state, workerId) => {
    process.stdout.write(`${JSON.stringify({ workerId, ...state })}\n`);
  });
  await server.listen();
  logger.info({ url: server.url }, 'policy server listening');

  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      logger.error('stdin: line is not JSON; ignored');
      return;
    }
    const fact = FactSchema.safeParse(raw);
    if (!fact.success) {
      logger.error({ issues: fact.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`) }, 'stdin: not a valid fact; ignored');
      return;
    }
    try {
      const delta = server.applyFact(fact.data);
      logger.info({ seq: delta.seq, fact: delta.fact.type }, 'fact broadcast');
    } catch (err) {
      if (isOptinError(err)) logger.error({ code: err.code }, err.message);
      else throw err;
    }
  });

  const stop = (): void => {
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

await main();
