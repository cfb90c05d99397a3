import { parseArgs } from 'node:util';
import { isOptinError, OptinError } from '../errors/OptinError.ts';
import { assertS3Reachable, createS3Client } from '../storage/s3Endpoint.ts';
import { AuditTrail } from './AuditTrail.ts';
import { BREAK_EXPLANATION } from './chain.ts';

/**
 * `optin audit verify`: proves the audit trail unbroken, for the DPO (R11, docs/rules.md).
 * Exit codes: 0 every chain verified, 1 a chain is broken, 2 the check could not run
 * (usage, configuration, store unreachable). Reads nothing but the audit bucket, and prints
 * pseudonymous stream ids and sequence numbers only.
 */

const USAGE = `usage: optin audit verify [--bucket NAME] [--stream WRITER_ID] [--json]

Verifies the hash chains of the audit trail and their heads.

  --bucket NAME        audit bucket (default: $OPTIN_AUDIT_BUCKET, else $OPTIN_S3_BUCKET_PREFIX + "optin-audit")
  --stream WRITER_ID   verify one writer's stream only
  --json               print the full result as JSON

Environment: OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY (the store),
OPTIN_AUDIT_HMAC_KEY (hex or base64, >= 32 bytes; required when the trail was written with one).
Exit status: 0 verified, 1 broken, 2 could not verify.`;

export interface VerifyIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: VerifyIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** Accepts 64 hex digits or base64 of at least 32 bytes. */
export function parseHmacKey(text: string): Buffer {
  const trimmed = text.trim();
  const key = /^(?:[0-9a-fA-F]{2})+$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (key.length < 32) throw new OptinError('CONFIG_INVALID', 'OPTIN_AUDIT_HMAC_KEY must hold at least 32 bytes, as hex or base64 (value not shown)');
  return key;
}

export async function runAuditVerify(argv: string[], env: NodeJS.ProcessEnv, io: VerifyIo = defaultIo): Promise<number> {
  let values: { bucket?: string; stream?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        bucket: { type: 'string' },
        stream: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }

  try {
    const { OPTIN_S3_ENDPOINT: endpoint, OPTIN_S3_ACCESS_KEY: accessKey, OPTIN_S3_SECRET_KEY: secretKey } = env;
    if (!endpoint || !accessKey || !secretKey) {
      throw new OptinError('S3_CONFIG', 'set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY (for the local test server: eval "$(bash scripts/s3/rgw.sh env)")');
    }
    const cfg = { endpoint, accessKey, secretKey, ...(env.OPTIN_S3_REGION ? { region: env.OPTIN_S3_REGION } : {}) };
    await assertS3Reachable(cfg);
    const bucket = values.bucket ?? env.OPTIN_AUDIT_BUCKET ?? `${env.OPTIN_S3_BUCKET_PREFIX ?? ''}optin-audit`;
    const hmacKey = env.OPTIN_AUDIT_HMAC_KEY ? parseHmacKey(env.OPTIN_AUDIT_HMAC_KEY) : undefined;
    // A reader: the writerId is never used to append.
    const trail = await AuditTrail.open({ client: createS3Client(cfg), bucket, writerId: 'audit-verify', ...(hmacKey ? { hmacKey } : {}) });
    const result = await trail.verify(values.stream === undefined ? {} : { stream: values.stream });

    if (values.json) {
      io.out(JSON.stringify({ bucket, ...result }, null, 2));
    } else {
      const protection = hmacKey ? 'HMAC-SHA256' : 'SHA-256 (no HMAC key: a writer with bucket access could forge a consistent chain)';
      io.out(`audit trail ${bucket}: ${result.ok ? 'VERIFIED' : 'BROKEN'}; ${result.streams.length} stream(s), ${result.entries} entries verified, ${protection}`);
      for (const s of result.streams) {
        const state = s.ok ? 'ok' : `BROKEN at seq ${s.brokenAt?.seq}: ${s.brokenAt ? BREAK_EXPLANATION[s.brokenAt.reason] : ''} (${s.brokenAt?.reason}; ${s.brokenAt?.detail})`;
        io.out(`  ${s.stream}: ${s.entries} entries, head ${s.headSeq ?? 'none'}, ${state}`);
        for (const w of s.warnings) io.out(`    note: ${w}`);
      }
      if (result.streams.length === 0) io.out('  (no streams: the trail is empty)');
    }
    // Without the key nothing was proven either way: that is "could not verify", not "broken".
    if (result.brokenAt?.reason === 'hmac-key-required') return 2;
    return result.ok ? 0 : 1;
  } catch (err) {
    io.err(`audit verify: ${isOptinError(err) ? err.message : (err as Error).message}`);
    return 2;
  }
}
