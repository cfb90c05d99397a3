/**
 * The consent and schedule gate, scenario by scenario, through the whole worker: a RecorderApp
 * (mediasoup, RecordingStore with its spool, audit trail, control client) against the run's real
 * S3 server and the real control plane on PostgreSQL (facts posted to its API; the monthly cap
 * decided by it; test/support/stack.ts). Media is injected
 * as live-paced RTP (one 20 ms Opus packet per leg every 20 ms) through the call's own mediasoup
 * Router; each packet carries an id in its Opus payload, so what is read back from the store
 * (decrypted, decoded) tells exactly which packets were recorded and when they were sent.
 *
 * The app's S3 traffic goes through a TCP proxy that can cut the store (spool scenarios).
 * The last test measures gate and R7 report latencies and prints them.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { Client } from 'minio';
import type { types } from 'mediasoup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorderApp, type RecorderApp } from '../../../src/app/RecorderApp.ts';
import { OptinError } from '../../../src/errors/OptinError.ts';
import { capCount } from '../../../src/caps/capDecision.ts';
import { monthKey } from '../../../src/gate/month.ts';
import type { RecordingStateV2 as RecordingState } from '../../../src/control/protocolV2.ts';
import type { Participant } from '../../../src/gate/facts.ts';
import type { CallRecorder } from '../../../src/recorder/CallRecorder.ts';
import type { RecordingStateEvent } from '../../../src/recorder/Recorder.ts';
import type { CallRoom } from '../../../src/sfu/CallRoom.ts';
import { bucketNames, dataKeyPrefix, manifestObjectKey, mediaPrefix, type BucketNames } from '../../../src/storage/layout.ts';
import type { DeletionReceipt } from '../../../src/storage/types.ts';
import { PacedSender, RtpLeg, describeLatencies, readTaggedTrack } from '../../support/gateHarness.ts';
import { listNames, makeMinioClient, s3Config } from '../../support/s3.ts';
import { TcpProxy } from '../../support/tcpProxy.ts';
import { useStack } from '../../support/stack.ts';

const HEARTBEAT_MS = 100;
const HEARTBEAT_TIMEOUT_MS = 3 * HEARTBEAT_MS;
const LATENCY_CYCLES = Number(process.env.GATE_LATENCY_CYCLES ?? 300);

// The app reaches S3 through a proxy the spool scenarios cut (started before the stack, closed after it).
let proxy: TcpProxy;
beforeAll(async () => {
  proxy = await TcpProxy.toEndpoint(s3Config().endpoint);
});
afterAll(async () => {
  await proxy?.close();
});
const stack = useStack(
  () => ({
    's3.endpoint': proxy.endpointFor(s3Config().endpoint),
    segmentSeconds: 1,
    'admission.maxEventLoopLagMs': 60_000, // a loaded CI machine must not turn calls away here
  }),
  { heartbeatMs: HEARTBEAT_MS },
);
let direct: Client;
let buckets: BucketNames;
let ssrc = 0x5000;
let nextId = 1;
/** Every recording-state report the control plane received, with the reporting worker (seen on the relay in front of it). */
const reports: { state: RecordingState; workerId: string; atPerf: number }[] = [];
const senders: PacedSender[] = [];

const evidence = (at = Date.now()) => ({ method: 'dtmf' as const, at, infoVersion: 'training-notice-v4' });

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** Spool items (sidecars) that belong to a recording. */
function spoolItemsOf(spoolDir: string, recordingId: string): string[] {
  const dir = path.join(spoolDir, 'items');
  return readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .filter((n) => (JSON.parse(readFileSync(path.join(dir, n), 'utf8')) as { recordingId?: string }).recordingId === recordingId);
}

interface LiveCall {
  callId: string;
  room: CallRoom;
  rec: CallRecorder;
  legs: RtpLeg[];
  sender: PacedSender;
  /** Recorder 'state' events for this call, with performance.now(). */
  states: (RecordingStateEvent & { perf: number })[];
  app: RecorderApp;
  /** Index into `states` where the last fact posted by the test began (waitState's default start). */
  since: number;
  end(): Promise<void>;
}

/** Starts a call at the control plane, opens it on `app`, and starts live-paced RTP on every leg. */
async function startCall(app: RecorderApp, callId: string, agentId: string, teamLead = 'lead-1'): Promise<LiveCall> {
  const participants: Participant[] = [
    { participantId: `${callId}-a`, role: 'agent', subjectId: agentId, teamLeadId: teamLead },
    { participantId: `${callId}-c`, role: 'customer', subjectId: `${callId}-subj` },
  ];
  await stack.policy.startCall(callId, participants);
  // The IVR announced the call; its media reaches the recorder once the worker knows it too.
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
  senders.push(sender);
  nextId += 1_000_000;
  sender.start();
  await until(() => rec.tracks.size === 2 && [...rec.tracks.values()].every((t) => t.counters.received > 0), 5000, `first media of ${callId}`);
  return {
    callId, room, rec, legs, sender, states, app, since: 0,
    async end() {
      sender.stop();
      await sleep(100); // the last packets clear the jitter buffer
      await stack.policy.endCall(callId).catch(() => undefined); // already ended
      await app.recorder.detachCall(callId);
      for (const l of legs) l.close();
      room.close();
      app.recorder.off('state', onState);
    },
  };
}

/** Posts the customer's consent; `since` is where the call's state events stood before (the worker may act before the API answers). */
async function grant(call: LiveCall): Promise<number> {
  const at = Date.now();
  call.since = call.states.length;
  await stack.policy.grantConsent(call.callId, `${call.callId}-c`, evidence(at));
  return at;
}

/** The first state event matching `pred` from index `from` on (default: from now on). */
async function waitState(
  call: LiveCall,
  pred: (s: RecordingStateEvent) => boolean,
  timeoutMs: number,
  what: string,
  from = call.since,
): Promise<RecordingStateEvent & { perf: number }> {
  await until(() => call.states.slice(from).some(pred), timeoutMs, `${call.callId}: ${what}`);
  return call.states.slice(from).find(pred)!;
}

function serverReports(callId: string, workerId = stack.app.config.workerId): RecordingState[] {
  return reports.filter((r) => r.state.callId === callId && r.workerId === workerId).map((r) => r.state);
}

/**
 * The report that closed a call's recording before it ended. Whether the hang-up adds a last
 * report ('call-ended') depends on whether the fact reaches the call before the recorder lets it
 * go, so that one is looked past; nothing after the closing report may say recording.
 */
function closingReport(callId: string, workerId = stack.app.config.workerId): RecordingState | undefined {
  const mine = serverReports(callId, workerId);
  const at = mine.findLastIndex((r) => !r.reasons.includes('call-ended'));
  expect(mine.slice(at + 1).every((r) => !r.recording)).toBe(true);
  return mine[at];
}

beforeAll(() => {
  direct = makeMinioClient();
  const c = stack.config.s3;
  buckets = bucketNames({ prefix: c.bucketPrefix, media: c.mediaBucket, keys: c.keysBucket, audit: c.auditBucket });
  stack.relay.on('worker-frame', (f) => {
    if (f.message.type === 'recording-state') reports.push({ state: f.message, workerId: f.workerId, atPerf: f.atPerf });
  });
});

afterAll(() => {
  for (const s of senders) s.stop();
});

describe('consent and schedule gate, end to end with S3', () => {
  it('decline: nothing recorded, no recording id, no objects; the media still flows between the legs (R5)', async () => {
    const agent = 'ag-decline';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-decline', agent);
    // The other side of the call: a consumer of each leg on another transport of the same Router.
    const other = await call.room.router.createDirectTransport();
    const received = new Map<string, number>();
    const consumers: types.Consumer[] = [];
    for (const leg of call.legs) {
      const consumer = await other.consume({ producerId: leg.producer.id, rtpCapabilities: call.room.router.rtpCapabilities });
      consumer.on('rtp', () => received.set(leg.participantId, (received.get(leg.participantId) ?? 0) + 1));
      consumers.push(consumer);
    }
    await sleep(300);
    const from = call.states.length; // the state may change before the API's answer arrives
    await stack.policy.declineConsent(call.callId, `${call.callId}-c`, evidence());
    await waitState(call, (s) => s.reasons.includes('consent-declined'), 3000, 'declined', from);
    const sentBefore = call.sender.sentAt.size;
    const receivedBefore = [...received.values()].reduce((a, b) => a + b, 0);
    await sleep(1500);
    const sentDuring = call.sender.sentAt.size - sentBefore;
    const receivedDuring = [...received.values()].reduce((a, b) => a + b, 0) - receivedBefore;
    const tracks = [...call.rec.tracks.values()].map((t) => ({ ...t.counters }));
    const recordingId = call.rec.recordingId;
    await call.end();
    other.close();

    expect(recordingId).toBeUndefined();
    for (const t of tracks) {
      expect(t.written).toBe(0);
      expect(t.droppedClosed).toBeGreaterThan(50);
    }
    // R5: the other leg kept receiving the media after the decline (tolerate a couple in flight).
    expect(receivedDuring).toBeGreaterThanOrEqual(sentDuring - 4);
    // R7: the control plane was told, with the reason.
    const mine = serverReports(call.callId);
    expect(mine.some((r) => r.recording)).toBe(false);
    expect(mine.some((r) => !r.recording && r.reasons.includes('consent-declined'))).toBe(true);
    // Nothing anywhere: no media, no data keys, no cap admission, no manifest, no spool item.
    expect(await listNames(direct, buckets.media, '')).toEqual([]);
    expect(await listNames(direct, buckets.keys, 'keys/')).toEqual([]);
    expect(await listNames(direct, buckets.keys, 'manifests/')).toEqual([]);
    expect(await listNames(direct, buckets.keys, 'caps/')).toEqual([]);
    expect(await capCount(stack.control.cp.db, agent, monthKey(Date.now()))).toBe(0);
    expect(readdirSync(path.join(stack.spoolDir, 'items'))).toEqual([]);
    expect(await stack.app.store.listRecordings()).toEqual([]);
  }, 30_000);

  it('consent mid-call: only what follows the consent is recorded; first segment at or after it, duration = the consented part (R3, R4)', async () => {
    const agent = 'ag-mid';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-mid', agent);
    await sleep(1000);
    const consentAt = await grant(call);
    const opened = await waitState(call, (s) => s.recording, 5000, 'recording');
    await sleep(2500);
    call.sender.stop();
    const stopAt = Date.now();
    const recordingId = call.rec.recordingId!;
    await call.end();

    expect(recordingId).toMatch(/^r_[0-9a-f]{16}$/);
    expect(opened.at).toBeGreaterThanOrEqual(consentAt);
    const admissionMs: number[] = [];
    for (const leg of call.legs) {
      const segs = await readTaggedTrack(stack.app.store, recordingId, leg.participantId);
      const ids = segs.flatMap((s) => s.ids);
      expect(ids.length).toBeGreaterThan(100);
      // R4: not one packet sent before the consent.
      for (const id of ids) expect(call.sender.sentAt.get(id)!.ms).toBeGreaterThanOrEqual(consentAt);
      // Everything after the first recorded packet is there, in order, to the end of the call.
      const sent = call.sender.idsOf(leg.participantId);
      expect(ids).toEqual(sent.slice(sent.indexOf(ids[0]!)));
      const firstSentAt = call.sender.sentAt.get(ids[0]!)!.ms;
      admissionMs.push(firstSentAt - consentAt);
      expect(segs[0]!.startWallClockMs).toBeGreaterThanOrEqual(consentAt - 25);
      expect(segs[0]!.startWallClockMs).toBeLessThan(consentAt + 1000);
      const durationMs = segs.reduce((a, s) => a + s.durationMs, 0);
      expect(Math.abs(durationMs - ids.length * 20)).toBeLessThanOrEqual(segs.length * 2);
      // The consented part of the call: consent to stop, less the cap admission (one round trip to the control plane).
      expect(durationMs).toBeLessThanOrEqual(stopAt - consentAt + 40);
      expect(durationMs).toBeGreaterThanOrEqual(stopAt - consentAt - 600);
    }
    console.log(`consent mid-call: recording started ${admissionMs.join(' / ')} ms after the consent was posted (cap admission by the control plane)`);
    const mine = serverReports(call.callId);
    expect(mine[0]).toMatchObject({ recording: false, reasons: ['no-consent'] });
    const on = mine.find((r) => r.recording)!;
    expect(on.recordingId).toBe(recordingId);
    expect(on.at).toBeGreaterThanOrEqual(consentAt);
  }, 30_000);

  it('withdrawal without erase: recording stops at once, what was recorded is kept (R5)', async () => {
    const agent = 'ag-keep';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-keep', agent);
    const consentAt = await grant(call);
    await waitState(call, (s) => s.recording, 5000, 'recording');
    await sleep(2200);
    const withdrawAt = Date.now();
    call.since = call.states.length;
    await stack.policy.withdrawConsent(call.callId, `${call.callId}-c`, { erase: false, evidence: evidence(withdrawAt) });
    const closed = await waitState(call, (s) => !s.recording, 3000, 'closed');
    expect(closed.reasons).toEqual(['consent-withdrawn']);
    expect(call.rec.writing).toBe(false);
    await sleep(1000);
    const recordingId = call.rec.recordingId!;
    await call.end();

    for (const leg of call.legs) {
      const segs = await readTaggedTrack(stack.app.store, recordingId, leg.participantId);
      const ids = segs.flatMap((s) => s.ids);
      expect(ids.length).toBeGreaterThan(80);
      for (const id of ids) {
        const sentAt = call.sender.sentAt.get(id)!.ms;
        expect(sentAt).toBeGreaterThanOrEqual(consentAt);
        expect(sentAt).toBeLessThanOrEqual(closed.at);
      }
      // Nothing of the second after the withdrawal.
      const after = call.sender.idsOf(leg.participantId).filter((id) => call.sender.sentAt.get(id)!.ms > closed.at + 2);
      // (~50 were sent in that second; a loaded machine's timers send fewer, which is not the point)
      expect(after.length).toBeGreaterThan(20);
      expect(ids.filter((id) => after.includes(id))).toEqual([]);
    }
    const media = await listNames(direct, buckets.media, mediaPrefix(recordingId));
    expect(media.length).toBeGreaterThanOrEqual(4);
    const summary = (await stack.app.store.listRecordings()).find((r) => r.recordingId === recordingId)!;
    expect(summary.state).toBe('ended');
    expect(summary.segments).toBe(media.length);
    expect(summary.participants.every((p) => !p.erased && p.segments > 0)).toBe(true);
    expect(closingReport(call.callId)).toMatchObject({ recording: false, reasons: ['consent-withdrawn'], recordingId });
  }, 30_000);

  it('withdrawal with erase: both tracks, data keys and spool copies deleted, and the deletion audited (R5, R9, R11)', async () => {
    const agent = 'ag-erase';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-erase', agent);
    await grant(call);
    await waitState(call, (s) => s.recording, 5000, 'recording');
    const recordingId = call.rec.recordingId!;
    await sleep(2300); // two segments per track uploaded
    const uploaded = await listNames(direct, buckets.media, mediaPrefix(recordingId));
    expect(uploaded.length).toBeGreaterThanOrEqual(2);
    // The store goes away: the next segments (and nothing else) land in the local spool.
    proxy.down();
    await until(() => spoolItemsOf(stack.spoolDir, recordingId).length >= 2, 8000, 'segments spooled');
    const deleted = new Promise<DeletionReceipt>((resolve) => {
      const on = (r: DeletionReceipt): void => {
        if (r.recordingId !== recordingId) return;
        stack.app.store.off('deleted', on);
        resolve(r);
      };
      stack.app.store.on('deleted', on);
    });
    const spooledBefore = spoolItemsOf(stack.spoolDir, recordingId).length;
    call.since = call.states.length;
    const erasure = await stack.policy.withdrawConsent(call.callId, `${call.callId}-c`, { erase: true, evidence: evidence() });
    const closed = await waitState(call, (s) => !s.recording, 3000, 'closed');
    expect(closed.reasons).toEqual(['consent-withdrawn']);
    const receipt = await deleted;
    expect(call.rec.erased).toBe(true);
    // The local part happens at once, outage or not: no spool copy of the recording is left.
    expect(spoolItemsOf(stack.spoolDir, recordingId)).toEqual([]);
    expect(receipt.spool.itemsRemoved).toBeGreaterThanOrEqual(spooledBefore);
    expect(receipt.complete).toBe(false);
    await sleep(300);
    await call.end();

    // The store returns; the pending deletion completes remotely.
    proxy.up();
    await stack.app.store.drained(30_000);
    expect(await listNames(direct, buckets.media, mediaPrefix(recordingId))).toEqual([]);
    expect(await listNames(direct, buckets.keys, dataKeyPrefix(recordingId))).toEqual([]);
    expect(await listNames(direct, buckets.keys, manifestObjectKey(recordingId))).toEqual([]);
    expect(spoolItemsOf(stack.spoolDir, recordingId)).toEqual([]);
    for (const leg of call.legs) {
      await expect(readTaggedTrack(stack.app.store, recordingId, leg.participantId)).rejects.toBeInstanceOf(OptinError);
    }
    expect(closingReport(call.callId)).toMatchObject({ recording: false, reasons: ['consent-withdrawn'] });
    // R11: the deletion is in the audit trail.
    await stack.app.recorder.flushAudit();
    const entries = (await stack.app.audit.list()).filter((e) => e.refs.recordingId === recordingId);
    const types = [...new Set(entries.map((e) => e.type))].sort();
    console.log(`erase during a store outage: audit entries for the recording: ${types.join(', ')}`);
    expect(types).toContain('recording.deletion-completed');
    const completed = entries.find((e) => e.type === 'recording.deletion-completed')!;
    expect(completed.details).toMatchObject({ recordingId, complete: true });
    // The erasure ledger: completed with this worker's confirmation and the store's receipt.
    const erasureId = String(erasure.erasureId);
    let status: Record<string, unknown> = {};
    for (let i = 0; i < 200 && status.state !== 'done'; i++) {
      status = await stack.policy.erasure(erasureId);
      if (status.state !== 'done') await sleep(50);
    }
    expect(status).toMatchObject({ state: 'done' });
    expect(JSON.stringify(status)).toContain(stack.app.config.workerId);
    expect(JSON.stringify(status)).toContain(receipt.receiptId);
  }, 60_000);

  it('control link loss mid-recording: the gate closes within the heartbeat timeout (control-stale) and reopens after the snapshot with a new run', async () => {
    const agent = 'ag-stale';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-stale', agent);
    await grant(call);
    await waitState(call, (s) => s.recording, 5000, 'recording');
    const recordingId = call.rec.recordingId!;
    const runBefore = call.rec.gate.runIndex;

    // 1. Heartbeat loss.
    await sleep(1200);
    const stoppedAt = performance.now();
    call.since = call.states.length;
    // The worker's staleness timer runs in this process's event loop: a loop stalled by the loaded
    // machine (the whole suite, two cores) fires it late; the bound is the timeout plus that stall
    // (failed CI at 903 ms in the full suite; 222 ms alone).
    const loopDelay = monitorEventLoopDelay({ resolution: 5 });
    loopDelay.enable();
    stack.relay.stopHeartbeats();
    const stale = await waitState(call, (s) => !s.recording, HEARTBEAT_TIMEOUT_MS + 2000, 'stale');
    loopDelay.disable();
    const stallMs = Math.max(0, loopDelay.max / 1e6 - 5);
    const staleIndex = call.states.indexOf(stale);
    expect(stale.reasons).toContain('control-stale');
    const closeMs = stale.perf - stoppedAt;
    expect(closeMs).toBeLessThanOrEqual(HEARTBEAT_TIMEOUT_MS + 100 + stallMs);
    expect(call.rec.writing).toBe(false);
    // Heartbeats back before a reconnected worker could miss them again (no flapping). The worker
    // may already have reconnected (backoff 0..200 ms): a snapshot makes it fresh by itself.
    await sleep(150);
    stack.relay.startHeartbeats();
    const reopened = await waitState(call, (s) => s.recording, 5000, 'reopened', staleIndex + 1);
    const runAfterHeartbeatLoss = call.rec.gate.runIndex;
    expect(runAfterHeartbeatLoss).toBeGreaterThan(runBefore);
    expect(reopened.recordingId).toBe(recordingId);

    // 2. The connection dies.
    await sleep(1200);
    const droppedAt = performance.now();
    call.since = call.states.length;
    stack.relay.dropConnections();
    const stale2 = await waitState(call, (s) => !s.recording, 3000, 'stale after drop');
    expect(stale2.reasons).toContain('control-stale');
    await waitState(call, (s) => s.recording, 5000, 'reopened after drop', call.states.indexOf(stale2) + 1);
    const runAfterDrop = call.rec.gate.runIndex;
    expect(runAfterDrop).toBeGreaterThan(runAfterHeartbeatLoss);
    await sleep(1200);
    await call.end();

    // The gate's closed periods, from the recorder's own state events (reconnects can repeat them).
    const closedIntervals: [number, number][] = [];
    let closedFrom: number | undefined;
    for (const s of call.states) {
      if (!s.recording && closedFrom === undefined && s.reasons.includes('control-stale')) closedFrom = s.at;
      if (s.recording && closedFrom !== undefined) {
        closedIntervals.push([closedFrom, s.at]);
        closedFrom = undefined;
      }
    }
    console.log(
      `control link loss: gate closed ${closeMs.toFixed(1)} ms after the heartbeats stopped (timeout ${HEARTBEAT_TIMEOUT_MS} ms, longest event-loop stall ${Math.round(stallMs)} ms), ` +
        `${(stale2.perf - droppedAt).toFixed(1)} ms after the connection drop; closed for ${closedIntervals.map(([a, b]) => b - a).join(' / ')} ms; runs ${runBefore} -> ${runAfterHeartbeatLoss} -> ${runAfterDrop}`,
    );
    expect(closedIntervals.length).toBe(runAfterDrop - runBefore);
    for (const leg of call.legs) {
      const segs = await readTaggedTrack(stack.app.store, recordingId, leg.participantId);
      const runs = [...new Set(segs.map((s) => s.run))];
      expect(runs[0]).toBe(runBefore);
      expect(runs.at(-1)).toBe(runAfterDrop);
      for (const s of segs) {
        for (const id of s.ids) {
          const sentAt = call.sender.sentAt.get(id)!.ms;
          for (const [from, to] of closedIntervals) {
            // sentAt is when the test sent it; what counts is its arrival at the worker, a few ms
            // later through mediasoup (tens under load), so the reopening edge gets 30 ms of slack.
            if (sentAt >= from && sentAt < to - 30) throw new Error(`packet ${id} sent at ${sentAt} while the gate was closed (${from}..${to}) is in run ${s.run}`);
          }
        }
      }
      // Each new run starts after its reopening (runs with no packet at all leave no segment).
      for (const [i, [, to]] of closedIntervals.entries()) {
        const first = segs.find((s) => s.run === runBefore + i + 1);
        if (first) expect(first.startWallClockMs).toBeGreaterThanOrEqual(to - 25);
      }
    }
    // R7: the control plane was told "not recording: control-stale" (re-sent after the reconnect), then "recording" again.
    const mine = serverReports(call.callId);
    const staleIdx = mine.findIndex((r) => !r.recording && r.reasons.includes('control-stale'));
    expect(staleIdx).toBeGreaterThan(0);
    expect(mine.slice(staleIdx).some((r) => r.recording)).toBe(true);
  }, 40_000);

  it('cap reached mid-month: cap 1, the first call is recorded, the second refused with cap-reached on another worker sharing the store (R6)', async () => {
    const agent = `ag-cap-${randomBytes(3).toString('hex')}`;
    const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-spool-b-'));
    const appB = await startRecorderApp({ ...stack.config, workerId: `${stack.config.workerId}-b`, spool: { ...stack.config.spool, dir: spoolDir } }, { logger: stack.app.logger });
    try {
      await appB.control.waitFresh(10_000);
      await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 1);
      const first = await startCall(stack.app, 'call-cap-1', agent);
      await grant(first);
      await waitState(first, (s) => s.recording, 5000, 'first call recording');
      const second = await startCall(appB, 'call-cap-2', agent);
      await grant(second);
      const refused = await waitState(second, (s) => s.reasons.includes('cap-reached'), 5000, 'second call refused');
      expect(refused.recording).toBe(false);
      expect(second.rec.recordingId).toBeUndefined();
      expect(second.rec.writing).toBe(false);
      // A third call on the first worker is refused as well: the cap counts the month, not concurrency.
      const third = await startCall(stack.app, 'call-cap-3', agent);
      await grant(third);
      await waitState(third, (s) => s.reasons.includes('cap-reached'), 5000, 'third call refused');
      await sleep(1000);
      const firstId = first.rec.recordingId!;
      for (const c of [first, second, third]) await c.end();

      expect((await readTaggedTrack(stack.app.store, firstId, 'call-cap-1-a')).length).toBeGreaterThan(0);
      // Counted once, by the control plane, in one transaction: no marker in the store.
      expect(await capCount(stack.control.cp.db, agent, monthKey(Date.now()))).toBe(1);
      expect(await listNames(direct, buckets.keys, 'caps/')).toEqual([]);
      expect(closingReport('call-cap-2', appB.config.workerId)).toMatchObject({ recording: false, reasons: ['cap-reached'] });
      expect(closingReport('call-cap-3')).toMatchObject({ recording: false, reasons: ['cap-reached'] });
      expect(second.legs.every((l) => second.sender.idsOf(l.participantId).length > 50)).toBe(true);
      expect([...second.rec.tracks.values()].every((t) => t.counters.written === 0)).toBe(true);
    } finally {
      await appB.close();
      rmSync(spoolDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('schedule validation: the control plane refuses each R6 violation with an error naming the rule, and sends nothing', async () => {
    const now = Date.now();
    const H = 3_600_000;
    const D = 24 * H;
    const cases: { name: string; windows: { start: number; end: number }[]; status: number; error: string; rule?: string; message: RegExp }[] = [
      { name: 'overlap', windows: [{ start: now + H, end: now + 3 * H }, { start: now + 2 * H, end: now + 4 * H }], status: 422, error: 'schedule-rejected', rule: 'window-overlap', message: /window 1 overlaps window 0/ },
      { name: 'in the past', windows: [{ start: now - 3 * H, end: now - 2 * H }], status: 422, error: 'schedule-rejected', rule: 'window-in-past', message: /ended in the past/ },
      { name: 'one window of 7 days', windows: [{ start: now, end: now + 7 * D }], status: 422, error: 'schedule-rejected', rule: 'window-too-long', message: /seven days or more/ },
      { name: 'touching windows covering 7 days', windows: [{ start: now, end: now + 4 * D }, { start: now + 4 * D + 30 * 60_000, end: now + 7 * D + H }], status: 422, error: 'schedule-rejected', rule: 'continuous-recording', message: /contiguous period of seven days/ },
      { name: 'end = start', windows: [{ start: now + H, end: now + H }], status: 400, error: 'invalid-input', message: /end must be after start/ },
      { name: 'end < start', windows: [{ start: now + 2 * H, end: now + H }], status: 400, error: 'invalid-input', message: /end must be after start/ },
    ];
    const seq = Number((await stack.policy.setSchedule('ag-sched', [{ start: now - H, end: now + H }], 5)).seq);
    const schedulesSince = async (): Promise<number> =>
      (await stack.control.cp.db.query<{ n: number }>("SELECT count(*)::int AS n FROM facts WHERE seq > $1 AND type = 'schedule.set'", [seq])).rows[0]!.n;
    for (const c of cases) {
      const answer = await stack.policy.tryFact({ type: 'schedule.set', agentId: 'ag-sched', windows: c.windows, monthlyCap: 5 });
      expect(answer.status, c.name).toBe(c.status);
      expect(answer.body.error, c.name).toBe(c.error);
      if (c.rule) expect(answer.body.rule, c.name).toBe(c.rule);
      expect(String(answer.body.message), c.name).toMatch(c.message);
    }
    expect(await schedulesSince()).toBe(0); // nothing was sent
    // Just under the limits is accepted: 6 days 23 h in one window, or two windows an hour apart.
    await stack.policy.setSchedule('ag-sched', [{ start: now, end: now + 7 * D - H }], 5);
    await stack.policy.setSchedule('ag-sched', [{ start: now, end: now + 4 * D }, { start: now + 4 * D + H, end: now + 7 * D + H }], 5);
  });

  it('schedule validation on the worker too: a schedule breaking R6 that reaches it anyway is refused and clears the agent (closes the gate)', async () => {
    const agent = 'ag-forged';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-forged', agent);
    await grant(call);
    await waitState(call, (s) => s.recording, 5000, 'recording');
    const errors: string[] = [];
    const onFrame = (f: { message: { type: string; code?: string } }): void => {
      if (f.message.type === 'error') errors.push(f.message.code!);
    };
    stack.relay.on('worker-frame', onFrame);
    // A delta the control plane would never send (one window of 8 days), in sequence, authentic
    // (the relay holds the session key: think of a control plane with a bug).
    const now = Date.now();
    const seq = stack.control.cp.stream.follower.head + 1;
    stack.relay.inject(JSON.stringify({ v: 2, type: 'delta', seq, at: now, fact: { type: 'schedule.set', agentId: agent, windows: [{ start: now - 60_000, end: now + 8 * 86_400_000 }], monthlyCap: 50 } }));
    stack.relay.skipSeq(); // keep the control plane's later seqs in step with the injected delta
    const closed = await waitState(call, (s) => !s.recording, 3000, 'closed by the refused schedule', call.states.findIndex((s) => s.recording));
    expect(closed.reasons).toEqual(['outside-window']);
    await until(() => errors.includes('schedule-rejected'), 3000, 'schedule-rejected reply');
    expect(stack.app.state.schedule(agent)?.windows).toEqual([]);
    stack.relay.off('worker-frame', onFrame);
    await call.end();
    expect(stack.app.control.fresh).toBe(true);
  }, 30_000);

  it(`measures closing fact POST -> gate closed and state change -> R7 report at the control plane (${LATENCY_CYCLES} pause/resume cycles)`, async () => {
    const agent = 'ag-latency';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startCall(stack.app, 'call-latency', agent);
    await grant(call);
    await waitState(call, (s) => s.recording, 5000, 'recording');
    const gateClose: number[] = [];
    const gateOpen: number[] = [];
    const reportLat: number[] = [];
    const workerId = stack.app.config.workerId;
    for (let i = 0; i < LATENCY_CYCLES + 20; i++) {
      for (const closing of [true, false]) {
        const fromState = call.states.length;
        const fromReport = reports.length;
        const t0 = performance.now();
        const posted = closing ? stack.policy.pause(call.callId) : stack.policy.resume(call.callId);
        await until(() => call.states.slice(fromState).some((s) => s.recording === !closing), 3000, closing ? 'closed' : 'open');
        const st = call.states.slice(fromState).find((s) => s.recording === !closing)!;
        if (closing) {
          expect(st.reasons).toEqual(['paused']);
          expect(call.rec.writing).toBe(false);
        }
        await until(
          () => reports.slice(fromReport).some((r) => r.workerId === workerId && r.state.callId === call.callId && r.state.recording === !closing),
          3000,
          'report',
        );
        const rep = reports.slice(fromReport).find((r) => r.workerId === workerId && r.state.callId === call.callId && r.state.recording === !closing)!;
        await posted;
        if (i >= 20) {
          (closing ? gateClose : gateOpen).push(st.perf - t0);
          reportLat.push(rep.atPerf - st.perf);
        }
      }
    }
    await call.end();
    const lines = [
      describeLatencies('closing fact POSTed to the control plane -> gate closed at the worker (Recorder state event, CallRecorder.writing false), loopback, PostgreSQL', gateClose),
      describeLatencies('opening fact (resume) -> gate open again (new run started)', gateOpen),
      describeLatencies('state change -> recording-state report reaching the control plane (at the relay in front of it)', reportLat),
    ];
    console.log(lines.join('\n'));
    // Loose bounds for a shared machine; the printed figures are the measurement.
    expect(gateClose.length).toBe(LATENCY_CYCLES);
    expect([...gateClose].sort((a, b) => a - b)[Math.floor(gateClose.length / 2)]!).toBeLessThan(50);
  }, 120_000);
});
