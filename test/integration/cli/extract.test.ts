/**
 * `optin extract` and `optin audit verify` as a user runs them: `node bin/optin.mjs ...` in a
 * child process, configured by environment like the worker, against the real S3 server.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'minio';
import { storeSynthRecording } from '../../support/synthRecording.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { decodeToPcm } from '../../../src/media/ffmpeg.ts';
import type { BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { useBuckets } from '../../support/buckets.ts';
import { s3Config } from '../../support/s3.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { toneAdvantageDb } from '../../support/audio.ts';
import { TEST_AUDIT_KEY_HEX } from '../../support/auditKey.ts';

const BIN = fileURLToPath(new URL('../../../bin/optin.mjs', import.meta.url));
const keyringConfig = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
const s3Buckets = useBuckets();
let client: Client;
let prefix: string;
let buckets: BucketNames;
let env: NodeJS.ProcessEnv;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'optin-cli-test-'));
  dirs.push(d);
  return d;
}

function optin(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  const s3 = s3Config();
  client = s3Buckets.client;
  prefix = s3Buckets.prefix();
  buckets = s3Buckets.layout(prefix);
  const store = await RecordingStore.open({
    client,
    buckets,
    keyring: Keyring.fromConfig(keyringConfig),
    spoolDir: tempDir(),
    spoolMaxBytes: 64 << 20,
    logger: createLogger('silent'),
    sweep: false,
  });
  const start = Date.now() - 60_000;
  for (const [rid, customer] of [
    ['r_c11aaaaaaaaaaaaa', 'cust-cli-1'],
    ['r_c12aaaaaaaaaaaaa', 'cust-cli-2'],
  ] as const) {
    await storeSynthRecording(store, {
      recordingId: rid,
      callId: `call-${rid.slice(2, 7)}`,
      startedAtMs: start,
      seconds: 4,
      segmentSeconds: 2,
      consentEvidence: [{ method: 'dtmf', at: start - 500, infoVersion: 'v7' }],
      participants: [
        { participantId: 'leg-agent-q', role: 'agent', subjectId: 'agent-cli', teamLeadId: 'lead-cli', source: readFileSync(fixturePath('agent-tone.opus')) },
        { participantId: 'leg-cust-q', role: 'customer', subjectId: customer, source: readFileSync(fixturePath('customer-tone.opus')) },
      ],
    });
  }
  await store.drained(30_000);
  await store.close();
  env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    OPTIN_S3_ENDPOINT: s3.endpoint,
    OPTIN_S3_ACCESS_KEY: s3.accessKey,
    OPTIN_S3_SECRET_KEY: s3.secretKey,
    OPTIN_S3_BUCKET_PREFIX: prefix,
    OPTIN_KEYRING: JSON.stringify(keyringConfig),
    OPTIN_OPERATOR_ID: 'xop-cli',
    OPTIN_WORKER_ID: 'cli-test',
    // The audit key every writer and the verifier share; a removable test bucket (GOVERNANCE).
    OPTIN_AUDIT_HMAC_KEY: TEST_AUDIT_KEY_HEX,
    OPTIN_AUDIT_LOCK_MODE: 'GOVERNANCE',
    OPTIN_AUDIT_LOCK_DAYS: '1',
  };
}, 120_000);

afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('optin extract', () => {
  it("writes the subject's own voice and the manifest to a private folder, with progress on stderr", async () => {
    const out = path.join(tempDir(), 'sar-17');
    const r = await optin(['extract', '--subject', 'cust-cli-1', '--case', 'SAR-17', '--out', out]);
    expect(r.stderr).toContain('100%');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('SAR-17');
    expect(readdirSync(out).sort()).toEqual(['manifest.json', 'r_c11aaaaaaaaaaaaa.ogg']);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(out, 'manifest.json')).mode & 0o777).toBe(0o600);

    const manifest = readFileSync(path.join(out, 'manifest.json'), 'utf8');
    for (const other of ['agent-cli', 'lead-cli', 'leg-agent-q', 'cust-cli-2', 'call-c11aa']) expect(manifest, other).not.toContain(other);
    expect(JSON.parse(manifest)).toMatchObject({ caseRef: 'SAR-17', subjectId: 'cust-cli-1', recordings: [{ recordingId: 'r_c11aaaaaaaaaaaaa', yourRole: 'customer' }] });
    const { pcm } = await decodeToPcm(readFileSync(path.join(out, 'r_c11aaaaaaaaaaaaa.ogg')));
    expect(pcm.length / 48_000).toBeGreaterThan(3.9);
    expect(toneAdvantageDb(pcm, 1230, 523)).toBeGreaterThanOrEqual(40);

    // Never overwrites: the same folder again is refused.
    const again = await optin(['extract', '--subject', 'cust-cli-1', '--case', 'SAR-17', '--out', out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already holds');
  });

  it('writes WAV on request', async () => {
    const out = path.join(tempDir(), 'sar-18');
    const r = await optin(['extract', '--subject', 'agent-cli', '--case', 'SAR-18', '--out', out, '--format', 'wav']);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['manifest.json', 'r_c11aaaaaaaaaaaaa.wav', 'r_c12aaaaaaaaaaaaa.wav']);
    const wav = readFileSync(path.join(out, 'r_c12aaaaaaaaaaaaa.wav'));
    expect(wav.subarray(0, 4).toString()).toBe('RIFF');
    const { pcm } = await decodeToPcm(wav);
    expect(toneAdvantageDb(pcm, 523, 1230)).toBeGreaterThanOrEqual(40);
  });

  it('refuses a missing case reference or subject (exit 2), and says why', async () => {
    const r = await optin(['extract', '--subject', 'cust-cli-1', '--out', tempDir()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--case is required');
    const bad = await optin(['extract', '--subject', 'cust-cli-1', '--case', 'has space', '--out', tempDir()]);
    expect(bad.code).toBe(2);
  });
});

describe('optin audit verify', () => {
  it('verifies the trail the extracts were written to', async () => {
    // No control plane in this test: the bucket alone, said explicitly.
    const r = await optin(['audit', 'verify', '--bucket-only']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('VERIFIED');
    expect(r.stdout).toContain('cli-cli-test');
  });

  it('prints usage for an unknown command', async () => {
    const r = await optin(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: optin');
  });
});
