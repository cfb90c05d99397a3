/**
 * `npm run demo`: records one real call end to end on local defaults.
 *
 * Starts the local S3 server (Ceph RGW, or OPTIN_S3_ENDPOINT / a minio binary when available),
 * the control plane on its embedded database (PGlite, under var/demo-control; no server needed)
 * with an integration token for the demo's IVR, and a recorder worker with its mediasoup
 * workers on the control plane's policy stream; plays a fixture call (agent over Opus, customer
 * over G.711 PCMU, both sent as RTP by ffmpeg); the IVR posts the customer's DTMF consent to the
 * control plane's fact-ingest API a few seconds in; ends the call; then prints what was stored
 * and writes each speaker's decrypted track to demo-output/.
 *
 * The people's side: a local OpenID provider with one demo user per role (workers/webDemo.ts) in
 * front of the control plane's web app, which reads the same store; the recorder reports the
 * recording to the control plane's catalogue. At the end the demo prints where to sign in as each
 * role and, in a terminal, keeps serving until Ctrl-C.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureS3Server } from '../scripts/s3/devServer.ts';
import { loadConfig } from '../src/config/config.ts';
import { startRecorderApp } from '../src/app/RecorderApp.ts';
import { requestJson } from '../src/cli/http.ts';
import { routeOf } from '../src/cli/facts.ts';
import { ControlPlane } from '../src/controlplane/ControlPlane.ts';
import { loadControlPlaneConfig } from '../src/controlplane/config.ts';
import { createToken, upsertIntegration } from '../src/facts/integrations.ts';
import { MAX_MONTHLY_CAP, type ConsentEvidence, type Participant } from '../src/gate/facts.ts';
import { playFixtureCall, type CallFacts } from './fixtureCall.ts';
import { joinOggOpus } from '../src/media/OggOpusReader.ts';
import { probeDurationSeconds, decodeToPcm } from '../src/media/ffmpeg.ts';
import { createLogger } from '../src/log/logger.ts';
import { Keyring } from '../src/crypto/Keyring.ts';
import { isOptinError } from '../src/errors/OptinError.ts';
import { startRecorderHttp } from '../src/app/recorderHttp.ts';
import { signCallToken } from '../src/callcontrol/callToken.ts';
import type { RecorderApp } from '../src/app/RecorderApp.ts';
import { serveWebDemo, startWebDemo, waitForCatalogue } from './webDemo.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = path.join(ROOT, 'demo-output');
const say = (msg: string) => console.log(`[demo] ${msg}`);

/** The demo's audit HMAC key: var/demo-audit-key (0600), made once, reused so its trail stays verifiable. */
function demoAuditKey(): string {
  const file = path.join(ROOT, 'var', 'demo-audit-key');
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex'), { mode: 0o600 });
  return readFileSync(file, 'utf8').trim();
}

/**
 * The demo's IVR: posts facts to the control plane's ingest API with its integration token, one
 * Idempotency-Key per fact, as a contact-centre platform would (docs/control-plane.md "The API").
 */
class DemoIvr implements CallFacts {
  readonly #url: string;
  readonly #token: string;

  constructor(url: string, token: string) {
    this.#url = url;
    this.#token = token;
  }

  async post(fact: Record<string, unknown>): Promise<Record<string, unknown>> {
    const route = routeOf(fact);
    const res = await requestJson(`${this.#url}${route.path}`, {
      method: route.method,
      headers: { authorization: `Bearer ${this.#token}`, 'idempotency-key': `demo-${randomBytes(9).toString('hex')}` },
      ...(route.body === undefined ? {} : { body: route.body }),
    });
    const body = (typeof res.body === 'object' && res.body !== null ? res.body : {}) as Record<string, unknown>;
    if (res.status >= 300) throw new Error(`the control plane refused ${String(fact.type)}: ${res.status} ${String(body.error ?? '')} ${String(body.message ?? '')}`);
    return body;
  }

  startCall(callId: string, participants: Participant[]): Promise<unknown> {
    return this.post({ type: 'call.started', callId, participants });
  }

  grantConsent(callId: string, participantId: string, evidence: ConsentEvidence): Promise<unknown> {
    return this.post({ type: 'consent.granted', callId, participantId, evidence });
  }

  endCall(callId: string): Promise<unknown> {
    return this.post({ type: 'call.ended', callId });
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.env.OPTIN_DEMO_SECONDS ?? 20);
  const consentAfterMs = Number(process.env.OPTIN_DEMO_CONSENT_MS ?? 5000);
  const logger = createLogger(process.env.OPTIN_LOG_LEVEL ?? 'warn');

  say('starting the local S3 server (first start takes ~15 s)');
  const s3 = await ensureS3Server({ logger });
  say(`S3: ${s3.kind} at ${s3.endpoint}`);

  // A demo keyring kept beside the output, so the stored tracks can be opened again later.
  mkdirSync(path.join(ROOT, 'var'), { recursive: true });
  const keyringFile = path.join(ROOT, 'var', 'demo-keyring.json');
  if (!existsSync(keyringFile)) {
    writeFileSync(keyringFile, JSON.stringify({ activeKeyId: 'demo-k1', keys: { 'demo-k1': Keyring.generateKeyBase64() } }), { mode: 0o600 });
  }
  const secret = randomBytes(32).toString('base64url');
  const web = await startWebDemo({ port: Number(process.env.OPTIN_DEMO_WEB_PORT ?? 0) || undefined, agentSubject: 'agent-7f3a', leadSubject: 'lead-21c9' });
  say(`local OpenID provider (demo users per role) at ${web.idp.issuer}`);
  say('starting the control plane on its embedded database (first start takes a few seconds)');
  const cpConfig = loadControlPlaneConfig(
    { OPTIN_LOG_LEVEL: process.env.OPTIN_LOG_LEVEL ?? 'warn' },
    {
      dataDir: path.join(ROOT, 'var', 'demo-control'),
      'stream.secret': secret,
      'http.port': 0,
      replicaId: 'demo-control',
      // The store (the people's side reads recordings; deletions no worker can carry out).
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.bucketPrefix': 'demo-',
      keyring: JSON.parse(readFileSync(keyringFile, 'utf8')),
      // The recorders' audit key: this replica writes access entries and anchors every stream.
      'audit.hmacKey': demoAuditKey(),
      'audit.lockMode': 'GOVERNANCE',
      'audit.lockDays': 1,
      // The web app's port, public URL and the local OpenID provider.
      ...web.controlPlaneOverrides,
    },
  );
  const cp = await ControlPlane.start(cpConfig, { logger });
  // One credential for the demo's IVR (and its WFM: the agent's schedule), created at start; the token is never printed.
  const ivrToken = createToken('demo-ivr');
  await upsertIntegration(cp.db, { id: 'demo-ivr', secretHash: ivrToken.secretHash, scopes: ['ivr', 'wfm'] }, Date.now());
  const ivr = new DemoIvr(cp.url, ivrToken.token);
  say(`control plane on ${cp.url} (${cp.db.kind} database), policy stream ${cp.streamUrl}; web app on ${web.appUrl}`);

  const config = loadConfig(
    { ...process.env, OPTIN_LOG_LEVEL: process.env.OPTIN_LOG_LEVEL ?? 'warn' },
    {
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.bucketPrefix': 'demo-',
      keyring: JSON.parse(readFileSync(keyringFile, 'utf8')),
      'control.url': cp.streamUrl,
      'control.secret': secret,
      'spool.dir': path.join(ROOT, 'var', 'demo-spool'),
      segmentSeconds: 5,
      workerId: 'demo-worker',
      'callControl.joinSecret': randomBytes(32).toString('base64url'),
      'callControl.sipLegSecret': randomBytes(32).toString('base64url'),
      // Softphone links are printed once and opened by hand: give them the longest lifetime allowed.
      'callControl.maxTokenLifetimeSeconds': 3600,
      // The demo's own audit key, kept beside its keyring (same key for the writer and `optin audit verify`).
      'audit.hmacKey': demoAuditKey(),
      // A demo bucket must stay removable: GOVERNANCE retention, one day.
      'audit.lockMode': 'GOVERNANCE',
      'audit.lockDays': 1,
    },
  );
  const app = await startRecorderApp(config, { logger });
  try {
    await app.control.waitFresh(10_000);
    say(`recorder up: ${app.pool.workers.length} mediasoup worker(s), control stream fresh`);
    // The demo runs the control plane in the recorder's process, and its embedded database
    // (PGlite) works on this event loop: for a few seconds after start (the stream's snapshot, the
    // people's side catching up) the loop lags beyond the admission bound, and a call arriving
    // then is refused as overloaded. A production recorder shares its loop with no database; here
    // the demo's call waits (at most 20 s) until the recorder would admit it.
    const settleUntil = Date.now() + 20_000;
    let calm = 0;
    while (calm < 2 && Date.now() < settleUntil) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      calm = app.recorder.eventLoopLagP99Ms < config.admission.maxEventLoopLagMs / 2 ? calm + 1 : 0;
    }
    if (calm < 2) say(`the event loop still lags (p99 ${app.recorder.eventLoopLagP99Ms.toFixed(0)} ms): the call may be refused as overloaded`);

    const now = Date.now();
    // The demo's database keeps its recordings across runs (the web app shows them), and the cap
    // counts this month's calls: a cap of 20 stopped the 21st demo of the month as `cap-reached`.
    await ivr.post({ type: 'schedule.set', agentId: 'agent-7f3a', windows: [{ start: now - 60_000, end: now + 3_600_000 }], monthlyCap: MAX_MONTHLY_CAP });
    const fixtures = path.join(ROOT, 'media-fixtures', 'generated');
    const callId = `demo-${randomBytes(4).toString('hex')}`;
    const result = await playFixtureCall(app, ivr, {
      callId,
      seconds,
      consentAfterMs,
      log: say,
      legs: [
        { participantId: 'p-agent', subjectId: 'agent-7f3a', role: 'agent', teamLeadId: 'lead-21c9', file: path.join(fixtures, 'agent-speech.wav'), codec: 'opus' },
        { participantId: 'p-customer', subjectId: 'cust-c0de', role: 'customer', file: path.join(fixtures, 'customer-speech.wav'), codec: 'pcmu' },
      ],
    });
    for (const r of result.reports) say(`recording state: ${r.recording ? 'RECORDING' : `not recording (${r.reasons.join(', ')})`}`);
    if (!result.recordingId) throw new Error('nothing was recorded: the gate never opened');

    await app.store.drained(60_000);
    const manifest = await app.store.getManifest(result.recordingId);
    say(`recording ${result.recordingId}: ${manifest.participants.length} tracks, expires ${manifest.expiresAt}`);

    const outDir = path.join(OUT, result.recordingId);
    mkdirSync(outDir, { recursive: true });
    for (const leg of result.legs) {
      const segments: Buffer[] = [];
      let sealedBytes = 0;
      let firstSampleAt = Number.POSITIVE_INFINITY;
      for await (const seg of app.store.openTrack(result.recordingId, leg.participantId)) {
        segments.push(seg.ogg);
        sealedBytes += seg.meta.sealedBytes ?? 0;
        firstSampleAt = Math.min(firstSampleAt, seg.meta.startWallClockMs);
      }
      const file = path.join(outDir, `${leg.participantId}.opus`);
      writeFileSync(file, joinOggOpus(segments));
      const duration = await probeDurationSeconds(file);
      const { stderr } = await decodeToPcm(file);
      const consentedMs = leg.timelineMs; // media time of what arrived after consent, gaps included
      say(
        `${leg.participantId}: ${segments.length} sealed segments (${sealedBytes} bytes), decoded ${duration.toFixed(3)} s ` +
          `${stderr.trim() ? `WITH DECODER WARNINGS: ${stderr.trim()}` : 'cleanly'}; packets before consent dropped: ${leg.droppedClosed}, ` +
          `consented media ${(consentedMs / 1000).toFixed(3)} s (difference ${(duration * 1000 - consentedMs).toFixed(0)} ms)`,
      );
      say(`  first recorded sample ${firstSampleAt - (result.consentAtMs ?? 0)} ms after the consent; -> ${path.relative(process.cwd(), file)}`);
    }
    const listed = await app.store.listRecordings();
    say(`store holds ${listed.length} demo recording(s); audit chain: ${(await app.audit.verify()).ok ? 'verified unbroken' : 'BROKEN'}`);
    say(`catalogue: ${(await waitForCatalogue(cp, result.recordingId, 10_000)) ? 'the recorder reported the recording' : 'the recording is NOT listed yet (the web app will not show it)'}`);
    const softphone = process.argv.includes('--softphone');
    await serveWebDemo(web, say, { wait: !softphone, holdSeconds: Number(process.env.OPTIN_DEMO_WEB_HOLD_SECONDS ?? 0) });
    if (softphone) await softphoneSession(app, ivr);
  } finally {
    await app.close();
    await cp.close();
    await web.close();
    await s3.stop();
  }
}

/** Keeps the stack up with two softphone links (agent, customer) until Ctrl-C. */
async function softphoneSession(app: RecorderApp, ivr: DemoIvr): Promise<void> {
  const http = await startRecorderHttp(app, {
    port: Number(process.env.OPTIN_HTTP_PORT ?? 7800),
    // The customer's "Press 1" stands in for the IVR's DTMF prompt: an explicit act with evidence,
    // posted to the control plane like the IVR's webhook.
    onDtmf: (callId, participantId, digit) => {
      if (digit !== '1') return;
      ivr.grantConsent(callId, participantId, { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' }).catch((err: Error) => say(`consent not posted: ${err.message}`));
    },
  });
  const callId = `web-${randomBytes(4).toString('hex')}`;
  await ivr.startCall(callId, [
    { participantId: 'p-agent', role: 'agent', subjectId: 'agent-7f3a', teamLeadId: 'lead-21c9' },
    { participantId: 'p-customer', role: 'customer', subjectId: 'cust-b33f' },
  ]);
  const secret = app.config.callControl.joinSecret!;
  // Single-use tokens in the URL fragment (never sent to a server); a reload needs a new link.
  const link = (participantId: string) =>
    `${http.url}/softphone/#name=${participantId}&token=${encodeURIComponent(signCallToken(secret, { aud: 'softphone-join', callId, participantId, lifetimeSeconds: 3600 }))}`;
  say('softphone call ready; open both links (Chromium or Firefox), then press 1 on the customer page:');
  say(`  agent:    ${link('p-agent')}`);
  say(`  customer: ${link('p-customer')}`);
  say(`  dashboard: ${http.url}/dashboard`);
  say('Ctrl-C to stop');
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await ivr.endCall(callId);
  await http.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`[demo] failed: ${isOptinError(err) ? `${err.code}: ${err.message}` : (err as Error).stack}`);
    process.exit(1);
  },
);
