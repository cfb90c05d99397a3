/**
 * The DPO's compliance report against the real S3 server: recordings made to break each rule
 * (through the RecordingStore where it allows it, by writing the manifest object directly where
 * the store rightly refuses, e.g. a 31-day expiry) are each reported with their evidence, and
 * the clean recording is not.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'minio';
import { rolesForAuditType } from '../../../src/access/policy.ts';
import { storeSynthRecording, type SynthParticipant } from '../../support/synthRecording.ts';
import { AuditTrail } from '../../../src/audit/AuditTrail.ts';
import { TEST_AUDIT_KEY, TEST_RETENTION } from '../../support/auditKey.ts';
import { complianceReport, type ComplianceReport } from '../../../src/compliance/report.ts';
import { reportByRule } from '../../../src/compliance/byRule.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { manifestObjectKey, type BucketNames } from '../../../src/storage/layout.ts';
import { RecordingStore } from '../../../src/storage/RecordingStore.ts';
import { sealManifest, unsealManifestJson, type RecordingManifest } from '../../../src/storage/manifest.ts';
import { useBuckets } from '../../support/buckets.ts';
import { fixturePath } from '../../support/fixtures.ts';

const DAY = 86_400_000;
const logger = createLogger('silent');
const keyring = Keyring.fromConfig({ activeKeyId: 'c1', keys: { c1: Keyring.generateKeyBase64() } });

const s3Buckets = useBuckets();
let client: Client;
let buckets: BucketNames;
let store: RecordingStore;
let pastStore: RecordingStore;
let audit: AuditTrail;
let report: ComplianceReport;
const spools: string[] = [];
const now = Date.now();
/** Every recording starts a little in the past; windows are around it. */
const T = now - 120_000;
const WINDOW = { start: T - 60_000, end: T + 60_000 };

async function openStore(clock?: () => number): Promise<RecordingStore> {
  const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-compliance-'));
  spools.push(spoolDir);
  return RecordingStore.open({ client, buckets, keyring, spoolDir, spoolMaxBytes: 64 << 20, logger, sweep: false, ...(clock ? { now: clock } : {}), nodeId: `n${spools.length}` });
}

function people(agent: string, customer: string): SynthParticipant[] {
  return [
    { participantId: 'leg-a', role: 'agent', subjectId: agent, teamLeadId: 'lead-1', source: readFileSync(fixturePath('agent-tone.opus')) },
    { participantId: 'leg-c', role: 'customer', subjectId: customer, source: readFileSync(fixturePath('customer-tone.opus')) },
  ];
}

async function record(
  s: RecordingStore,
  id: string,
  o: { startedAtMs?: number; agent?: string; consentAt?: number | null; policy?: { agentWindows: Array<{ start: number; end: number }>; monthlyCap: number } | null } = {},
): Promise<void> {
  const startedAtMs = o.startedAtMs ?? T;
  const consentAt = o.consentAt === undefined ? startedAtMs - 1000 : o.consentAt;
  const policy = o.policy === undefined ? { agentWindows: [WINDOW], monthlyCap: 5 } : o.policy;
  await storeSynthRecording(s, {
    recordingId: id,
    callId: `c-${id}`,
    startedAtMs,
    seconds: 2,
    segmentSeconds: 2,
    // One agent per recording unless said otherwise, so only the planted cap case shares a month.
    participants: people(o.agent ?? `agent-${id.slice(2)}`, `cust-${id}`),
    consentEvidence: consentAt === null ? [] : [{ method: 'dtmf', at: consentAt, infoVersion: 'v1' }],
    ...(policy === null ? {} : { policy }),
  });
}

/**
 * Rewrites a manifest object in place (what the store itself refuses to write). `resign`: as an
 * insider holding the keyring would (the manifest then opens, and the rules judge its content);
 * otherwise as someone with only the store's credentials (its MAC then fails).
 */
async function patchManifest(id: string, patch: (m: RecordingManifest) => void, resign = true): Promise<void> {
  const key = manifestObjectKey(id);
  const stored = Buffer.concat(await (await client.getObject(buckets.keys, key)).toArray());
  const m = JSON.parse(unsealManifestJson(stored, id, keyring).toString()) as RecordingManifest & { mac?: unknown };
  patch(m);
  m.revision += 1;
  const body = resign ? sealManifest(m, keyring) : Buffer.from(JSON.stringify(m));
  await client.putObject(buckets.keys, key, body, body.length);
}

/** The recording rules violated by a recording (access violations are checked on their own). */
function violationsOf(id: string): string[] {
  return report.violations.filter((v) => v.recordingId === id && v.rule !== 'access-by-allowed-role').map((v) => v.rule);
}

beforeAll(async () => {
  client = s3Buckets.client;
  buckets = s3Buckets.layout();
  store = await openStore();
  // A store whose clock is 40 days back: its recordings are past their 30-day expiry today.
  pastStore = await openStore(() => Date.now() - 40 * DAY);
  audit = await AuditTrail.open({ client, bucket: buckets.audit, writerId: 'compliance-test', createBucket: true, hmacKey: TEST_AUDIT_KEY, retention: TEST_RETENTION });

  await record(store, 'r_clean');
  await record(store, 'r_consent_late', { consentAt: T + 1500 }); // the first packet at T, consent 1.5 s later
  await record(store, 'r_no_consent', { consentAt: null });
  await record(store, 'r_outside', { policy: { agentWindows: [{ start: T - 60_000, end: T + 1000 }], monthlyCap: 5 } }); // window closes 1 s in
  await record(store, 'r_no_policy', { policy: null });
  for (const [i, id] of ['r_cap_1', 'r_cap_2', 'r_cap_3'].entries()) {
    await record(store, id, { agent: 'agent-capped', startedAtMs: T + i * 1000, policy: { agentWindows: [WINDOW], monthlyCap: 2 } });
  }
  await record(store, 'r_long_retention');
  await patchManifest('r_long_retention', (m) => {
    m.expiresAtMs = m.startedAtMs + 31 * DAY;
    m.expiresAt = new Date(m.expiresAtMs).toISOString();
  });
  // Someone with the store's credentials but not the keyring makes a stranger this agent's team
  // lead (R10 decides access by it): the manifest no longer matches its MAC.
  await record(store, 'r_tampered');
  await patchManifest('r_tampered', (m) => {
    m.participants.find((p) => p.role === 'agent')!.teamLeadId = 'lead-stranger';
  }, false);
  const past = Date.now() - 40 * DAY;
  await record(pastStore, 'r_expired_left', { startedAtMs: past - 60_000, consentAt: past - 61_000, policy: { agentWindows: [{ start: past - 120_000, end: past + 60_000 }], monthlyCap: 5 } });
  // Media of a recording whose manifest is gone, tagged as expired yesterday.
  const orphan = 'rec/r_orphan/leg-a/000000.ogg.sealed';
  await client.putObject(buckets.media, orphan, Buffer.from('OPTN-not-really'), 15);
  await client.setObjectTagging(buckets.media, orphan, { 'expires-at': new Date(now - DAY).toISOString().replace(/\.\d{3}Z$/, 'Z') });
  await store.drained(30_000);
  await pastStore.drained(30_000);

  // The audit trail: a lawful play, a play by the DPO (never allowed audio), a play by an agent
  // of another recording, an extract by a team lead.
  const play = { type: 'access.play', purpose: 'coaching', refs: { recordingId: 'r_clean' } };
  await audit.append({ ...play, actor: 'agent-clean', role: 'agent' });
  await audit.append({ ...play, actor: 'lead-1', role: 'team-lead' });
  await audit.append({ ...play, actor: 'dpo-9', role: 'dpo' });
  await audit.append({ ...play, actor: 'agent-stranger', role: 'agent' });
  await audit.append({ type: 'extract', actor: 'lead-1', role: 'team-lead', purpose: 'subject-access', refs: { subjectId: 'cust-r_clean' }, details: { caseRef: 'X' } });
  await audit.append({ type: 'access.denied', actor: 'agent-x', role: 'agent', purpose: 'access-control', details: { status: 404 } });

  report = await complianceReport({ store, s3: client, audit, rolesForAuditType });
}, 120_000);

afterAll(async () => {
  await store?.close();
  await pastStore?.close();
  for (const d of spools) rmSync(d, { recursive: true, force: true });
});

describe('compliance report', () => {
  it('finds nothing wrong with the clean recording', () => {
    expect(violationsOf('r_clean')).toEqual([]);
    expect(report.unverifiable.filter((u) => u.recordingId === 'r_clean')).toEqual([]);
    expect(report.scope.recordings).toBe(10);
  });

  it('consent after the first packet, or no consent evidence at all (R3/R4)', () => {
    expect(violationsOf('r_consent_late')).toEqual(['consent-before-first-packet']);
    const v = report.violations.find((x) => x.recordingId === 'r_consent_late')!;
    expect(v.evidence).toMatchObject({ consentAt: new Date(T + 1500).toISOString(), firstPacketAt: new Date(T).toISOString() });
    expect(violationsOf('r_no_consent')).toEqual(['consent-before-first-packet']);
  });

  it('recorded outside the agent window (R6), and "unverifiable" without a policy', () => {
    expect(violationsOf('r_outside')).toEqual(['inside-agent-window']);
    const v = report.violations.find((x) => x.recordingId === 'r_outside')!;
    expect((v.evidence.segments as unknown[]).length).toBeGreaterThan(0);
    expect(violationsOf('r_no_policy')).toEqual([]);
    expect(report.unverifiable.filter((u) => u.recordingId === 'r_no_policy').map((u) => u.rule).sort()).toEqual(['inside-agent-window', 'monthly-cap']);
  });

  it('the monthly cap exceeded (R6): the recording past the cap', () => {
    expect(violationsOf('r_cap_1')).toEqual([]);
    expect(violationsOf('r_cap_2')).toEqual([]);
    expect(violationsOf('r_cap_3')).toEqual(['monthly-cap']);
    expect(report.violations.find((x) => x.recordingId === 'r_cap_3')!.evidence).toMatchObject({ agentId: 'agent-capped', position: 3, cap: 2 });
  });

  it('expiry more than 30 days after the start (R8)', () => {
    expect(violationsOf('r_long_retention')).toEqual(['retention-at-most-30-days']);
  });

  it('objects of an expired recording left in the store (R8/R9), with or without a manifest', () => {
    expect(violationsOf('r_expired_left')).toEqual(['no-expired-object']);
    const v = report.violations.find((x) => x.recordingId === 'r_expired_left')!;
    expect(v.evidence.mediaObjectCount).toBe(2);
    expect((v.evidence.dataKeys as string[]).length).toBe(2);
    expect(violationsOf('r_orphan')).toEqual(['no-expired-object']);
    expect(report.violations.find((x) => x.recordingId === 'r_orphan')!.evidence).toMatchObject({ manifest: false, mediaObjectCount: 1 });
  });

  it('accesses by a role that may not make them, or playback by an unrelated agent (R10/R11)', () => {
    const roleViolations = report.violations.filter((v) => v.rule === 'access-by-allowed-role');
    expect(roleViolations.map((v) => [v.evidence.actor, v.evidence.role, v.evidence.type])).toEqual([
      ['dpo-9', 'dpo', 'access.play'],
      ['agent-stranger', 'agent', 'access.play'],
      ['lead-1', 'team-lead', 'extract'],
    ]);
    expect(roleViolations[0]!.evidence).toMatchObject({ stream: 'compliance-test', seq: 3 });
  });

  it('a manifest changed outside optin is refused and reported, not trusted (R10/R11)', () => {
    expect(violationsOf('r_tampered')).toEqual(['manifest-authentic']);
    const v = report.violations.find((x) => x.recordingId === 'r_tampered')!;
    expect(v.message).toMatch(/does not match its MAC/);
  });

  it('nothing else: every violation is one of the planted ones', () => {
    const planted = new Set(['r_consent_late', 'r_no_consent', 'r_outside', 'r_cap_3', 'r_long_retention', 'r_expired_left', 'r_orphan', 'r_clean', 'r_tampered']);
    expect(report.violations.filter((v) => !planted.has(v.recordingId ?? 'r_clean'))).toEqual([]);
    expect(report.ok).toBe(false);
    expect(report.rules.every((r) => r.violations > 0)).toBe(true);
  });

  it('samples N recordings on request, and arranges the findings per rule R3-R11 for the DPO\'s page', async () => {
    const sampled = await complianceReport({ store, s3: client, audit, rolesForAuditType }, { sample: 3 });
    expect(sampled.scope).toMatchObject({ recordings: 10, checked: 3, sample: 3 });
    // The page (and GET /api/compliance on the control plane, test/integration/access) shows one section per rule.
    const sections = reportByRule(report);
    const by = Object.fromEntries(sections.map((x) => [x.rule, x]));
    for (const rule of ['R3', 'R4', 'R6', 'R8', 'R9', 'R10', 'R11']) expect(by[rule]!.status, rule).toBe('violated');
    expect(by.R3!.checks[0]!.violations.map((v) => v.recordingId).sort()).toEqual(['r_consent_late', 'r_no_consent']);
    expect(by.R5!.status).toBe('not-checked');
    expect(by.R7!.status).toBe('not-checked');
  });
});
