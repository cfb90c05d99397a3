import { parseArgs } from 'node:util';
import { isOptinError, OptinError } from '../errors/OptinError.ts';
import { assertS3Reachable, createS3Client } from '../storage/s3Endpoint.ts';
import { requireAuditKey } from './auditKey.ts';
import { AuditTrail, type ExpectedStream } from './AuditTrail.ts';
import { BREAK_EXPLANATION } from './chain.ts';

export { parseHmacKey } from './auditKey.ts';

/**
 * `optin audit verify`: proves the audit trail unbroken, for the DPO (R11, docs/rules.md "Audit").
 * Exit codes: 0 every chain verified, 1 a chain is broken, 2 the check could not run (usage,
 * configuration, store or control plane unreachable). Reads the audit bucket (every version of
 * every object) and the control plane's registry of writer streams and anchored heads, and prints
 * pseudonymous stream ids, sequence numbers and hashes only.
 */

const USAGE = `usage: optin audit verify [--control-url URL | --bucket-only] [--bucket NAME] [--stream WRITER_ID] [--json]

Verifies the hash chains of the audit trail, every stored version of their entries and heads, and
(with the control plane) that every registered writer stream is still there and reaches the
head hashes anchored for it.

  --control-url URL    the control plane (default: $OPTIN_CONTROL_API_URL); token in $OPTIN_CONTROL_TOKEN (scope ops)
  --bucket-only        verify without the control plane: a writer stream deleted with every version
                       of it, or cut back together with its head's history, then goes unnoticed
  --bucket NAME        audit bucket (default: $OPTIN_AUDIT_BUCKET, else $OPTIN_S3_BUCKET_PREFIX + "optin-audit")
  --stream WRITER_ID   verify one writer's stream only
  --json               print the full result as JSON

Environment: OPTIN_S3_ENDPOINT and OPTIN_S3_AUDIT_ACCESS_KEY/OPTIN_S3_AUDIT_SECRET_KEY (the audit
principal; else OPTIN_S3_ACCESS_KEY/OPTIN_S3_SECRET_KEY), OPTIN_AUDIT_HMAC_KEY or
OPTIN_AUDIT_HMAC_KEY_FILE (the key every writer uses: required).
Exit status: 0 verified, 1 broken, 2 could not verify.`;

export interface VerifyIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: VerifyIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** The control plane's registered streams and anchors (GET /v1/audit/streams). */
export async function fetchExpectedStreams(controlUrl: string, token: string | undefined): Promise<ExpectedStream[]> {
  if (token === undefined || token === '') throw new OptinError('CONFIG_INVALID', 'set OPTIN_CONTROL_TOKEN (an integration token with scope ops) to read the registered audit streams');
  let res: Response;
  try {
    res = await fetch(new URL('/v1/audit/streams', controlUrl), { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new OptinError('CONTROL_UNREACHABLE', `the control plane at ${controlUrl} did not answer (${(err as Error).message}): check --control-url`, { retryable: true });
  }
  if (!res.ok) throw new OptinError('CONTROL_UNREACHABLE', `the control plane answered ${res.status} to GET /v1/audit/streams: check the URL and that the token has scope ops`);
  const body = (await res.json()) as { streams?: Array<{ streamId: string; anchor: { seq: number; hash: string; anchoredAt: string } | null }> };
  return (body.streams ?? []).map((s) => ({ stream: s.streamId, anchors: s.anchor === null ? [] : [{ seq: s.anchor.seq, hash: s.anchor.hash, at: s.anchor.anchoredAt }] }));
}

export async function runAuditVerify(argv: string[], env: NodeJS.ProcessEnv, io: VerifyIo = defaultIo): Promise<number> {
  let values: { bucket?: string; stream?: string; json?: boolean; help?: boolean; 'control-url'?: string; 'bucket-only'?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        bucket: { type: 'string' },
        stream: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        'control-url': { type: 'string' },
        'bucket-only': { type: 'boolean' },
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
    if (values['bucket-only'] && values['control-url'] !== undefined) throw new OptinError('CONFIG_INVALID', 'give --control-url or --bucket-only, not both');
    const controlUrl = values['bucket-only'] ? undefined : (values['control-url'] ?? env.OPTIN_CONTROL_API_URL);
    if (controlUrl === undefined && !values['bucket-only']) {
      throw new OptinError('CONFIG_INVALID', 'name the control plane (--control-url or OPTIN_CONTROL_API_URL) so that deleted writer streams are found, or pass --bucket-only to check the bucket alone');
    }
    const { OPTIN_S3_ENDPOINT: endpoint } = env;
    const accessKey = env.OPTIN_S3_AUDIT_ACCESS_KEY ?? env.OPTIN_S3_ACCESS_KEY;
    const secretKey = env.OPTIN_S3_AUDIT_SECRET_KEY ?? env.OPTIN_S3_SECRET_KEY;
    if (!endpoint || !accessKey || !secretKey) {
      throw new OptinError('S3_CONFIG', 'set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY (for the local test server: eval "$(bash scripts/s3/rgw.sh env)")');
    }
    const hmacKey = requireAuditKey({ hmacKey: env.OPTIN_AUDIT_HMAC_KEY || undefined, hmacKeyFile: env.OPTIN_AUDIT_HMAC_KEY_FILE || undefined });
    const cfg = { endpoint, accessKey, secretKey, ...(env.OPTIN_S3_REGION ? { region: env.OPTIN_S3_REGION } : {}) };
    await assertS3Reachable(cfg);
    const bucket = values.bucket ?? env.OPTIN_AUDIT_BUCKET ?? `${env.OPTIN_S3_BUCKET_PREFIX ?? ''}optin-audit`;
    const expected = controlUrl === undefined ? undefined : await fetchExpectedStreams(controlUrl, env.OPTIN_CONTROL_TOKEN);
    // A reader: the writerId is never used to append.
    const trail = await AuditTrail.open({ client: createS3Client(cfg), bucket, writerId: 'audit-verify', hmacKey, retention: false });
    const result = await trail.verify({ ...(values.stream === undefined ? {} : { stream: values.stream }), ...(expected === undefined ? {} : { expected }) });

    if (values.json) {
      io.out(JSON.stringify({ bucket, ...result }, null, 2));
    } else {
      const scope = [
        'HMAC-SHA256',
        result.versionsChecked ? 'every version' : 'latest versions only (the store lists no versions)',
        result.registryChecked ? `${expected?.length ?? 0} registered stream(s) and their anchors` : 'NO control-plane registry (--bucket-only)',
      ].join(', ');
      io.out(`audit trail ${bucket}: ${result.ok ? 'VERIFIED' : 'BROKEN'}; ${result.streams.length} stream(s), ${result.entries} entries verified; ${scope}`);
      for (const s of result.streams) {
        const state = s.ok ? 'ok' : `BROKEN at seq ${s.brokenAt?.seq}: ${s.brokenAt ? BREAK_EXPLANATION[s.brokenAt.reason] : ''} (${s.brokenAt?.reason}; ${s.brokenAt?.detail})`;
        io.out(`  ${s.stream}: ${s.entries} entries, head ${s.headSeq ?? 'none'}, anchored ${s.anchoredSeq ?? 'never'}, ${state}`);
        for (const w of s.warnings) io.out(`    note: ${w}`);
      }
      if (result.streams.length === 0) io.out('  (no streams: the trail is empty)');
    }
    return result.ok ? 0 : 1;
  } catch (err) {
    io.err(`audit verify: ${isOptinError(err) ? err.message : (err as Error).message}`);
    return 2;
  }
}
