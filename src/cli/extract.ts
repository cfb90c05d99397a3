import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createExtract, type ExtractProgress } from '../access/extract.ts';
import { AuditTrail } from '../audit/AuditTrail.ts';
import { requireAuditKey } from '../audit/auditKey.ts';
import { auditCredentials, loadConfig } from '../config/config.ts';
import { Keyring } from '../crypto/Keyring.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { bucketNames } from '../storage/layout.ts';
import { RecordingReader } from '../storage/RecordingReader.ts';
import { assertS3Reachable, createS3Client } from '../storage/s3Endpoint.ts';
import type { CliIo } from './io.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * `optin extract`: the subject-access extract of src/access/extract.ts, written to a folder
 * (one Ogg Opus or WAV per recording, and manifest.json), for extracts too large or too slow
 * for an HTTP response. Same rules as the API: one subject, a case reference, audited as
 * `extract` before anything is written. Progress goes to stderr; the summary to stdout.
 *
 * Exit status: 0 written, 1 the extract failed, 2 usage or configuration.
 */

const USAGE = `usage: optin extract --subject ID --case REF --out DIR [--format ogg|wav] [--operator ID]

Writes the subject-access extract of one subject (their own voice tracks only, R12) to DIR:
one audio file per recording and manifest.json.

  --subject ID     pseudonymous subject id of the person asking
  --case REF       case reference of the subject-access request ([A-Za-z0-9_-]{1,64})
  --out DIR        output folder (created; existing files are never overwritten)
  --format F       ogg (default) or wav
  --operator ID    pseudonymous id of the operator, for the audit trail
                   (default $OPTIN_OPERATOR_ID, else "cli-operator")

Environment: as the worker (OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY,
OPTIN_S3_BUCKET_PREFIX, OPTIN_KEYRING, ...), OPTIN_AUDIT_HMAC_KEY when the trail uses one.`;

const BAR_WIDTH = 30;

/** A one-line progress bar: `[#########.....................]  30%  54/180 segments`. */
export function progressLine(p: ExtractProgress): string {
  const frac = p.total === 0 ? 1 : Math.min(1, p.done / p.total);
  const filled = Math.round(frac * BAR_WIDTH);
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.round(frac * 100)).padStart(3)}%  ${p.done}/${p.total} segments`;
}

export async function runExtract(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  let values: { subject?: string; case?: string; out?: string; format?: string; operator?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        subject: { type: 'string' },
        case: { type: 'string' },
        out: { type: 'string' },
        format: { type: 'string' },
        operator: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.out(`${USAGE}\n`);
    return 0;
  }
  const operator = values.operator ?? env.OPTIN_OPERATOR_ID ?? 'cli-operator';
  const format = values.format ?? 'ogg';
  const problems: string[] = [];
  if (!values.subject) problems.push('--subject is required');
  if (!values.case) problems.push('--case is required (the reference of the subject-access request)');
  if (!values.out) problems.push('--out is required');
  if (format !== 'ogg' && format !== 'wav') problems.push('--format must be ogg or wav');
  if (!ID_PATTERN.test(operator)) problems.push('--operator must be a pseudonymous id ([A-Za-z0-9_-]{1,64})');
  if (problems.length > 0) {
    io.err(`optin extract: ${problems.join('; ')}\n${USAGE}\n`);
    return 2;
  }

  try {
    const config = loadConfig(env);
    const { s3 } = config;
    if (!s3.endpoint || !s3.accessKey || !s3.secretKey) {
      throw new OptinError('CONFIG_INVALID', 'set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY (as for the worker)');
    }
    if (!config.keyring) throw new OptinError('CONFIG_INVALID', 'set OPTIN_KEYRING (the same keyring as the worker: the tracks are sealed under it)');
    const s3cfg = { endpoint: s3.endpoint, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region };
    await assertS3Reachable(s3cfg);
    const client = createS3Client(s3cfg);
    const buckets = bucketNames({ prefix: s3.bucketPrefix, media: s3.mediaBucket, keys: s3.keysBucket, audit: s3.auditBucket });
    // Logs (warnings and worse) go to stderr, apart from the summary on stdout.
    const logger = pino({ level: 'warn', base: { svc: 'optin-cli' } }, pino.destination(2));
    const hmacKey = requireAuditKey(config.audit);
    const audit = await AuditTrail.open({
      client: createS3Client({ ...s3cfg, ...auditCredentials(config) }),
      bucket: buckets.audit,
      writerId: `cli-${config.workerId}`.slice(0, 64),
      logger,
      createBucket: true,
      hmacKey,
      retention: { mode: config.audit.lockMode, days: config.audit.lockDays },
    });
    // Read only: no spool, no uploader, no sweeper (the workers own expiry and crash repair), and
    // nothing created or changed in the buckets.
    const store = new RecordingReader({ client, buckets, keyring: Keyring.fromConfig(config.keyring) });

    let lastStep = -1;
    const onProgress = (p: ExtractProgress): void => {
      if (io.errIsTty) {
        io.err(`\r${progressLine(p)}`);
        return;
      }
      // Not a terminal (a log file): one line per 10% instead of redrawing.
      const step = p.total === 0 ? 10 : Math.floor((p.done / p.total) * 10);
      if (step !== lastStep) {
        lastStep = step;
        io.err(`${progressLine(p)}\n`);
      }
    };
    const pkg = await createExtract(
      { store, audit },
      { subjectId: values.subject!, caseRef: values.case!, format: format as 'ogg' | 'wav', actor: operator },
      { onProgress },
    );
    if (io.errIsTty) io.err('\n');

    // Personal data: a private folder and private files, never overwriting anything.
    const out = path.resolve(values.out!);
    await mkdir(out, { recursive: true, mode: 0o700 });
    if (pkg.files.some((f) => existsSync(path.join(out, f.name)))) {
      throw Object.assign(new Error('exists'), { code: 'EEXIST' });
    }
    for (const f of pkg.files) await writeFile(path.join(out, f.name), f.bytes, { flag: 'wx', mode: 0o600 });
    io.out(
      `extract ${pkg.extractId} for case ${pkg.caseRef}: ${pkg.manifest.recordings.length} recording(s), ${pkg.files.length} file(s), ${pkg.totalBytes} bytes in ${out}\n` +
        pkg.files.map((f) => `  ${f.name}  ${f.bytes.length} bytes  sha256 ${f.sha256}\n`).join(''),
    );
    return 0;
  } catch (err) {
    if (io.errIsTty) io.err('\n');
    const usage = isOptinError(err) && (err.code === 'CONFIG_INVALID' || err.code === 'S3_CONFIG' || err.code === 'CASE_REF_REQUIRED' || err.code === 'INVALID_INPUT');
    const code = (err as NodeJS.ErrnoException).code;
    const message = code === 'EEXIST' ? 'the output folder already holds a file of this extract; choose an empty folder' : (err as Error).message;
    io.err(`optin extract: ${message}\n`);
    return usage ? 2 : 1;
  }
}
