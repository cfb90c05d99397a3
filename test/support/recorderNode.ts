import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRecorderApp, type RecorderApp } from '../../src/app/RecorderApp.ts';
import { loadConfig, type OptinConfig } from '../../src/config/config.ts';
import type { Participant } from '../../src/gate/facts.ts';
import { createLogger, type Logger } from '../../src/log/logger.ts';
import type { CallRecorder } from '../../src/recorder/CallRecorder.ts';
import type { RecordingStateEvent } from '../../src/recorder/Recorder.ts';
import type { CallRoom } from '../../src/sfu/CallRoom.ts';
import { PacedSender, RtpLeg } from './gateHarness.ts';
import type { PolicyFacts } from './policyFacts.ts';
import { s3Config } from './s3.ts';
import { TEST_AUDIT_KEY_HEX } from './auditKey.ts';

/**
 * A recorder worker (RecorderApp, in this process) against a control plane the test runs
 * elsewhere (its own process, replicas, a relay in front), on buckets the test names: for the
 * control-plane end-to-end tests, where the stack's in-process control plane will not do. And
 * live calls on it: tagged, live-paced RTP per leg (test/support/gateHarness.ts), so what is
 * read back from the store tells exactly which packets were recorded and when they were sent.
 */

export interface RecorderNode {
  app: RecorderApp;
  config: OptinConfig;
  spoolDir: string;
  close(options?: { keepSpool?: boolean }): Promise<void>;
}

export async function startRecorderNode(o: {
  controlUrl: string;
  secret: string;
  bucketPrefix: string;
  keyring: NonNullable<OptinConfig['keyring']>;
  workerId?: string;
  spoolDir?: string;
  heartbeatTimeoutMs?: number;
  overrides?: Record<string, unknown>;
  logger?: Logger;
}): Promise<RecorderNode> {
  const s3 = s3Config();
  const spoolDir = o.spoolDir ?? mkdtempSync(path.join(tmpdir(), 'optin-node-spool-'));
  const config = loadConfig(
    {},
    {
      's3.endpoint': s3.endpoint,
      's3.accessKey': s3.accessKey,
      's3.secretKey': s3.secretKey,
      's3.bucketPrefix': o.bucketPrefix,
      keyring: o.keyring,
      'control.url': o.controlUrl,
      'control.secret': o.secret,
      'control.heartbeatTimeoutMs': o.heartbeatTimeoutMs ?? 300,
      'callControl.joinSecret': randomBytes(32).toString('base64url'),
      'callControl.sipLegSecret': randomBytes(32).toString('base64url'),
      'audit.hmacKey': TEST_AUDIT_KEY_HEX,
      'audit.lockMode': 'GOVERNANCE',
      'audit.lockDays': 1,
      'spool.dir': spoolDir,
      'mediasoup.workers': 1,
      segmentSeconds: 1,
      'admission.maxEventLoopLagMs': 60_000,
      workerId: o.workerId ?? `n-${randomBytes(3).toString('hex')}`,
      ...(o.overrides ?? {}),
    },
  );
  const app = await startRecorderApp(config, { logger: o.logger ?? createLogger(process.env.OPTIN_TEST_LOG_LEVEL ?? 'silent') });
  return {
    app,
    config,
    spoolDir,
    async close(options = {}) {
      await app.close();
      if (!options.keepSpool && o.spoolDir === undefined) rmSync(spoolDir, { recursive: true, force: true });
    },
  };
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

export interface LiveCall {
  callId: string;
  room: CallRoom;
  rec: CallRecorder;
  legs: RtpLeg[];
  sender: PacedSender;
  participants: Participant[];
  /** Recorder 'state' events for this call, with performance.now(). */
  states: (RecordingStateEvent & { perf: number })[];
  /** Stops the media and detaches the call from the recorder (the call's facts are the test's). */
  stop(): Promise<void>;
}

let ssrc = 0x7000;
let nextId = 1;

/**
 * Announces a call (an agent and one customer) at the control plane, waits until the worker
 * knows it, opens it on `app` and starts live-paced tagged RTP on both legs.
 */
export async function startLiveCall(app: RecorderApp, policy: PolicyFacts, callId: string, agentId: string, teamLeadId = 'lead-1'): Promise<LiveCall> {
  const participants: Participant[] = [
    { participantId: `${callId}-a`, role: 'agent', subjectId: agentId, teamLeadId },
    { participantId: `${callId}-c`, role: 'customer', subjectId: `${callId}-subj` },
  ];
  await policy.startCall(callId, participants);
  await until(() => app.state.call(callId) !== undefined, 5000, `${callId} known to the worker`);
  const states: LiveCall['states'] = [];
  const onState = (id: string, s: RecordingStateEvent): void => {
    if (id === callId) states.push({ ...s, perf: performance.now() });
  };
  app.recorder.on('state', onState);
  const room = await app.openCall(callId);
  const legs: RtpLeg[] = [];
  for (const p of participants) legs.push(await RtpLeg.create(room, p.participantId, ssrc++));
  const rec = app.recorder.calls.get(callId)!;
  const sender = new PacedSender(legs, nextId);
  nextId += 1_000_000;
  sender.start();
  await until(() => rec.tracks.size === 2 && [...rec.tracks.values()].every((t) => t.counters.received > 0), 5000, `first media of ${callId}`);
  return {
    callId,
    room,
    rec,
    legs,
    sender,
    participants,
    states,
    async stop() {
      sender.stop();
      await sleep(100); // the last packets clear the jitter buffer
      await app.recorder.detachCall(callId);
      for (const l of legs) l.close();
      room.close();
      app.recorder.off('state', onState);
    },
  };
}

/** The first state event matching `pred` at or after index `from`. */
export async function waitState(
  call: LiveCall,
  pred: (s: RecordingStateEvent) => boolean,
  timeoutMs: number,
  what: string,
  from = 0,
): Promise<RecordingStateEvent & { perf: number }> {
  await until(() => call.states.slice(from).some(pred), timeoutMs, `${call.callId}: ${what}`);
  return call.states.slice(from).find(pred)!;
}
