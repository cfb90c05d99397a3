import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from 'minio';
import { DEMO_USERS, startDevIdp, type DevIdp, type DevUser } from '../../scripts/devIdp/devIdp.ts';
import { upsertEntry, type CatalogueEntry } from '../../src/catalogue/Catalogue.ts';
import { Keyring } from '../../src/crypto/Keyring.ts';
import { createLogger } from '../../src/log/logger.ts';
import { bucketNames, type BucketNames } from '../../src/storage/layout.ts';
import type { RecordingManifest, RecordingPolicy } from '../../src/storage/manifest.ts';
import { RecordingStore } from '../../src/storage/RecordingStore.ts';
import { startTestControlPlane, type TestControlPlane } from './controlPlane.ts';
import { fixturePath } from './fixtures.ts';
import { createTestDatabase, type TestDatabase } from './pg.ts';
import { freshBucketPrefix, makeMinioClient, removeBucketDeep, s3Config } from './s3.ts';
import { synthSegments } from './synthRecording.ts';
import { fetchSignIn, type WebSession } from './oidcSignIn.ts';

/**
 * The people's side under test, all real: PostgreSQL (a database per file), the S3 server, a
 * local OpenID provider (scripts/devIdp, oidc-provider), the control plane with its store, the
 * access API and the web app. Recordings are made through a RecordingStore of their own (the
 * "recorder") with real Opus audio (agent tone 523 Hz, customer tone 1230 Hz), their calls and
 * consent posted through the IVR API, and their catalogue rows written by the control plane's
 * catalogue upsert (as a worker's `recording.report` would). Until the recorder speaks policy
 * stream v2 (issue 13, in progress elsewhere), that stands in for recorder-made recordings.
 */

export const AGENT_HZ = 523;
export const CUSTOMER_HZ = 1230;
export const CLIENT_ID = 'optin-web';
export const EXTRACT_SERVICE = { clientId: 'extract-service', clientSecret: `svc-${randomBytes(12).toString('hex')}` };

/** The demo users (agent, lead, dpo, extract) plus a second agent, team lead and extract operator. */
export const TEST_USERS: readonly DevUser[] = [
  ...DEMO_USERS,
  { sub: 'agent-a2', login: 'agent2', name: 'Second Agent', roles: ['agent'] },
  { sub: 'lead-l2', login: 'lead2', name: 'Second Lead', roles: ['team-lead'] },
  { sub: 'xop-2', login: 'extract2', name: 'Second Operator', roles: ['extract-operator'] },
  { sub: 'two-hats', login: 'twohats', name: 'Two Hats', roles: ['agent', 'team-lead'] },
  { sub: 'nobody-1', login: 'norole', name: 'No Role', roles: [] },
];

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface WebStack {
  t: TestControlPlane;
  idp: DevIdp;
  /** http://localhost:<port>: what browsers open. */
  url: string;
  writer: RecordingStore;
  client: Client;
  buckets: BucketNames;
  addRecording(o: RecordingSpec): Promise<{ recordingId: string; callId: string; manifest: RecordingManifest }>;
  /** Signs in through the provider with fetch (no browser): the session cookie and its CSRF token. */
  signIn(login: string): Promise<WebSession>;
  serviceToken(): Promise<string>;
  close(): Promise<void>;
}

export type { WebSession } from './oidcSignIn.ts';

export interface RecordingSpec {
  recordingId: string;
  agent: string;
  lead: string;
  customer: string;
  /** Default: 60 s ago. */
  startedAtMs?: number;
  seconds?: number;
  /** Consent evidence instant; default 1 s before the start. */
  consentAtMs?: number;
  /** The customer's track: a gap of this many ms after its first segment (run 1: a pause), and a concealed stretch in the last segment. */
  customerGapMs?: number;
  concealedMs?: number;
  policy?: RecordingPolicy;
  /** Post the call and consent through the IVR API (default true). */
  postCall?: boolean;
  /** Write through this store instead of the stack's (another retention, say). */
  store?: RecordingStore;
}

export async function startWebStack(o: { overrides?: Record<string, unknown> } = {}): Promise<WebStack> {
  const logger = createLogger('silent');
  const db: TestDatabase = await createTestDatabase();
  const client = makeMinioClient();
  const prefix = `${freshBucketPrefix()}-`;
  const buckets = bucketNames({ prefix });
  const keyring = { activeKeyId: 'k1', keys: { k1: Keyring.generateKeyBase64() } };
  const dirs = [await mkdtemp(join(tmpdir(), 'optin-web-writer-')), await mkdtemp(join(tmpdir(), 'optin-web-cp-'))];
  const defaultWriter = await RecordingStore.open({ client, buckets, keyring: Keyring.fromConfig(keyring), spoolDir: dirs[0]!, spoolMaxBytes: 64 << 20, logger, nodeId: 'test-recorder', sweep: false });
  const port = await freePort();
  const url = `http://localhost:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startDevIdp({ users: TEST_USERS, clients: [{ clientId: CLIENT_ID, clientSecret, appUrl: url }], services: [{ ...EXTRACT_SERVICE, roles: ['extract-operator'] }] });
  const s3 = s3Config();
  const t = await startTestControlPlane({
    databaseUrl: db.url,
    overrides: {
      'http.port': port,
      dataDir: dirs[1],
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.region': s3.region,
      's3.bucketPrefix': prefix,
      keyring,
      'access.publicUrl': url,
      'access.oidc.issuer': idp.issuer,
      'access.oidc.clientId': CLIENT_ID,
      'access.oidc.clientSecret': clientSecret,
      'http.rateLimitPerMinute': 100_000,
      ...(o.overrides ?? {}),
    },
    deps: { store: undefined },
  });
  const agentOpus = readFileSync(fixturePath('agent-tone.opus'));
  const customerOpus = readFileSync(fixturePath('customer-tone.opus'));

  async function addRecording(spec: RecordingSpec): Promise<{ recordingId: string; callId: string; manifest: RecordingManifest }> {
    const writer = spec.store ?? defaultWriter;
    const callId = `call-${spec.recordingId}`;
    const startedAt = spec.startedAtMs ?? Date.now() - 60_000;
    const seconds = spec.seconds ?? 6;
    const consentAt = spec.consentAtMs ?? startedAt - 1000;
    const evidence = { method: 'dtmf' as const, at: consentAt, infoVersion: 'training-notice-v3', ref: `ivr-${spec.recordingId}` };
    const agentPid = `${callId}-a`;
    const customerPid = `${callId}-c`;
    if (spec.postCall ?? true) {
      const call = await t.api('POST', '/v1/calls', { token: t.tokens.ivr, body: { callId, participants: [{ participantId: agentPid, role: 'agent', subjectId: spec.agent, teamLeadId: spec.lead }, { participantId: customerPid, role: 'customer', subjectId: spec.customer }] } });
      if (call.status !== 201) throw new Error(`POST /v1/calls: ${call.status} ${JSON.stringify(call.body)}`);
      const c = await t.api('POST', `/v1/calls/${callId}/consent`, { token: t.tokens.ivr, body: { participantId: customerPid, decision: 'granted', evidence: { ...evidence, at: Math.min(evidence.at, Date.now()) } } });
      if (c.status !== 200) throw new Error(`consent: ${c.status} ${JSON.stringify(c.body)}`);
    }
    await writer.beginRecording({
      recordingId: spec.recordingId,
      callId,
      startedAt,
      participants: [
        { participantId: agentPid, role: 'agent', subjectId: spec.agent, teamLeadId: spec.lead },
        { participantId: customerPid, role: 'customer', subjectId: spec.customer },
      ],
      consentEvidence: [evidence],
      ...(spec.policy === undefined ? {} : { policy: spec.policy }),
    });
    for (const [pid, source] of [[agentPid, agentOpus], [customerPid, customerOpus]] as const) {
      const segs = synthSegments(source, { seconds, segmentSeconds: 2 });
      let run = 0;
      let shift = 0;
      for (const seg of segs) {
        const isCustomer = pid === customerPid;
        if (isCustomer && spec.customerGapMs !== undefined && seg.index === 1) {
          run = 1;
          shift = spec.customerGapMs;
        }
        const last = seg.index === segs.length - 1;
        await writer.putSegment(
          {
            recordingId: spec.recordingId,
            participantId: pid,
            segment: seg.index,
            run,
            startWallClockMs: startedAt + seg.startSample / 48 + shift,
            durationMs: seg.samples / 48,
            opusPayloadBytes: seg.opusPayloadBytes,
            quality: { gate: 'open', run, concealedMs: isCustomer && last ? (spec.concealedMs ?? 0) : 0, silenceFilledMs: 0, lost: isCustomer && last && (spec.concealedMs ?? 0) > 0 ? Math.round((spec.concealedMs ?? 0) / 20) : 0 },
          },
          seg.ogg,
        );
      }
    }
    await writer.endRecording(spec.recordingId);
    await writer.drained(30_000);
    const manifest = await writer.getManifest(spec.recordingId);
    const entry: CatalogueEntry = {
      recordingId: spec.recordingId,
      callId,
      participants: manifest.participants.map((p) => ({ participantId: p.participantId, role: p.role, ...(p.subjectId === undefined ? {} : { subjectId: p.subjectId }), ...(p.teamLeadId === undefined ? {} : { teamLeadId: p.teamLeadId }) })),
      startedAt: manifest.startedAtMs,
      ...(manifest.endedAtMs === undefined ? {} : { endedAt: manifest.endedAtMs }),
      tracks: 2,
      segments: manifest.segments.length,
      bytes: manifest.segments.reduce((n, s) => n + s.sealedBytes, 0),
      expiresAt: manifest.expiresAtMs,
      state: 'complete',
      workerId: 'test-recorder',
    };
    await t.cp.db.transaction((tx) => upsertEntry(tx, entry, Date.now(), 'report'));
    return { recordingId: spec.recordingId, callId, manifest };
  }

  return {
    t,
    idp,
    url,
    writer: defaultWriter,
    client,
    buckets,
    addRecording,
    signIn: (login) => fetchSignIn(url, login, 'demo'),
    serviceToken: () => idp.serviceToken(EXTRACT_SERVICE.clientId, EXTRACT_SERVICE.clientSecret),
    async close() {
      await t.close().catch(() => undefined);
      await idp.close().catch(() => undefined);
      await defaultWriter.close().catch(() => undefined);
      await db.drop().catch(() => undefined);
      for (const b of Object.values(buckets)) await removeBucketDeep(client, b).catch(() => undefined);
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until `until` holds (usable in hooks, where expect.poll is not). */
export async function waitFor<T>(fn: () => Promise<T>, until: (v: T) => boolean, o: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (o.timeoutMs ?? 30_000);
  for (;;) {
    const v = await fn();
    if (until(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${o.what ?? 'a condition'}; last: ${JSON.stringify(v).slice(0, 300)}`);
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 100));
  }
}
