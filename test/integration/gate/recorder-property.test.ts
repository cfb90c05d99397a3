/**
 * "Not one packet recorded without explicit consent", as a property over random interleavings
 * of packets and control events, through the real parts: a mediasoup worker (packets are
 * injected on a DirectTransport producer and reach the recorder through its own tap consumer),
 * the control plane on real PostgreSQL (facts posted to its ingest API; the monthly cap decided
 * by it; erasures kept in its ledger) and the ControlClient over a real WebSocket (policy stream
 * v2, every frame MAC'd), and the Recorder with its CallRecorders and TrackRecorders. Only the
 * object store is in memory (it keeps every segment it was ever handed: what the RecordingStore
 * would have uploaded OR spooled; test/support/gateHarness.ts). A relay on each lane's stream
 * (test/support/streamRelay.ts) drops the link, loses a fact, silences heartbeats, and injects
 * frames: authentic bad ones (sealed with the session key) that must get an error reply, and
 * forged ones (no valid MAC) that must make the stream stale.
 *
 * This file is the property and its checks. What it draws is test/support/gateScenario.ts, the
 * independent model test/support/gateModel.ts, and the lanes that turn a drawn scenario into
 * facts, faults, injected frames and packets test/support/policyDriver.ts.
 *
 * Ground truth. Each step performs one control action, then waits until the worker has applied
 * everything the control plane accepted (client live, lastSeq at the seq of the last accepted
 * fact, no cap admission waiting for its answer) or, for faults that make the stream stale
 * (dropped connection, sequence gap, heartbeat loss, forged frame), until the client reports
 * stale; facts posted while it is stale (the link held down) reach it in the next snapshot,
 * erasures among them, whatever follows them (the end of the call, another act). The expected gate of every call is then computed by an independent model from
 * the server's facts, the worker's freshness and the cap bookkeeping, and only then is a batch
 * of tagged packets sent (each packet carries a unique id in its Opus payload). A batch during
 * which the worker's freshness changed on its own (a spurious heartbeat timeout on a loaded
 * machine) is "ambiguous" and excluded from the exact checks (counted and printed). The exclusion
 * is bounded: if more than MAX_AMBIGUOUS_FRACTION of the packets (or of the steps) are ambiguous,
 * the property has not been shown and the test fails, whatever else held.
 *
 * Properties:
 *  - every packet id found in any segment the store received arrived while the model said open
 *    (and was handed over by the recorder as writable), on the right call and participant, once;
 *  - no packet that arrived while closed was written anywhere, and after every closing each
 *    track holds no run (no jitter buffer: nothing kept in memory "in case");
 *  - every packet that arrived while open was written exactly once (calls not erased);
 *  - a withdrawal with erase deletes the call's recording and nothing is stored for it after,
 *    also when it was made while the worker was away and the call then ended or the customer
 *    acted again;
 *  - the gate state and the R7 report (recording + reasons) match the model after every step.
 *
 * How interleavings are counted: a fast-check run drives CALLS_PER_RUN calls at once through
 * one random schedule of steps (per-call facts, global schedule/cap changes, faults that hit
 * every call, admission races between calls of the same agent). Each call's history in a run is
 * one interleaving; LANES independent lanes (own control plane and database, relay, control
 * client, recorder; one shared mediasoup worker) run their fast-check properties concurrently.
 * interleavings = LANES x RUNS_PER_LANE x CALLS_PER_RUN >= TARGET_INTERLEAVINGS (5,000 in the suite; 10,000 on demand).
 *
 * The threaded path (issue 16): the last lane's calls are direct streams (as SIPREC's) whose
 * sockets and tracks live in media threads; its packets go over UDP to those sockets, and each
 * packet's verdict is the gate word its thread read in shared memory. Same scenarios, same model,
 * same checks: a quarter of the interleavings (with 4 lanes) run through the threads.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../../src/log/logger.ts';
import { WorkerPool } from '../../../src/sfu/WorkerPool.ts';
import { settleTurns } from '../../support/gateHarness.ts';
import { scenarioArbitrary, type Scenario } from '../../support/gateScenario.ts';
import { Lane, addStats, newStats, type GateRun, type PacketRecord } from '../../support/policyDriver.ts';
import { seeded } from '../../support/property.ts';

const LANES = Number(process.env.GATE_PROPERTY_LANES ?? 4);
const CALLS_PER_RUN = Number(process.env.GATE_PROPERTY_CALLS ?? 8);
// Every lane drives a real control plane on its own PostgreSQL database, so a run costs database
// round trips the in-memory reference server never had: 10,000 interleavings no longer fit the
// suite's budget on two cores (measured alone: 2,528 in 87 s). The suite runs 5,000; the
// thorough run is `GATE_PROPERTY_INTERLEAVINGS=10000 npx vitest run test/integration/gate/recorder-property.test.ts`.
const TARGET_INTERLEAVINGS = Number(process.env.GATE_PROPERTY_INTERLEAVINGS ?? 5_000);
const RUNS_PER_LANE = Math.ceil(TARGET_INTERLEAVINGS / (LANES * CALLS_PER_RUN));
// The control plane sends a heartbeat only after a successful database read (protocol v2), so on
// two loaded cores a 50 ms period (150 ms timeout) flaps the stream without any fault injected,
// and 100 ms (300 ms timeout) still did at load average 10-18 (a run that never settles: cap
// questions are re-asked after every stale period). 250 ms (750 ms timeout) keeps the faults'
// detection quick enough for the step budget.
const HEARTBEAT_MS = Number(process.env.GATE_PROPERTY_HEARTBEAT_MS ?? 250);
const AGENTS_PER_RUN = 3;
// Long enough for a cap decision slowed by a loaded database (2 s timeout, a 1 s retry, again).
const SETTLE_TIMEOUT_MS = 10_000;
/**
 * The most of the packets (and of the steps) that may be excluded as ambiguous: 2%. A run on the
 * two-core test machine excluded 54 of 57,995 packets (0.09%) and 13 of 20,817 steps; beyond 2%
 * the exact checks would rest on too small a part of what was drawn, or the machine is too loaded
 * for the property to mean anything (GATE_PROPERTY_MAX_AMBIGUOUS overrides, for a diagnosis).
 */
const MAX_AMBIGUOUS_FRACTION = Number(process.env.GATE_PROPERTY_MAX_AMBIGUOUS ?? 0.02);

const logger = createLogger(process.env.OPTIN_TEST_LOG_LEVEL ?? 'silent');

const scenarioArb = scenarioArbitrary({ calls: CALLS_PER_RUN, agents: AGENTS_PER_RUN });

/** One fast-check run: drives `sc` through the lane's real parts and checks every step against the model. */
async function runScenario(lane: Lane, sc: Scenario): Promise<void> {
  const run: GateRun = await lane.beginRun(sc);
  const { tag, model, calls, fail } = run;

  /** Compares the recorder with the model; returns the expected gate per call. */
  const checkGates = (where: string): boolean[] => {
    const fresh = lane.client.fresh;
    lane.stats.gateChecks++;
    return calls.map((c) => {
      const open = model.expectedOpen(c, fresh);
      if (c.rec.writing !== open) fail(`${where}: ${c.callId} writing=${c.rec.writing} (phase ${c.rec.phase.name}), model says ${open ? 'open' : 'closed'} (${model.reasons(c, fresh).join(',') || (c.erased ? 'erased' : c.admission)})`);
      for (const t of c.rec.tracks.values()) {
        if (t.recording !== open) fail(`${where}: ${c.callId}/${t.participantId} has${t.recording ? '' : ' no'} open run while the gate is ${open ? 'open' : 'closed'}`);
      }
      if (c.wasOpen && !open) lane.stats.closings++;
      c.wasOpen = open;
      const last = lane.recorder.lastState(c.callId) ?? lane.reported.get(c.callId);
      const reasons = model.reasons(c, fresh);
      if (reasons.includes('cap-reached')) lane.stats.capBlocked++;
      const want = open ? [] : reasons.length > 0 ? reasons : c.erased ? ['consent-withdrawn'] : undefined;
      // A call the recorder let go (call.ended detaches it at once) reported `call-ended` when it
      // went; later changes (a stale stream) are not reported for a call that no longer exists.
      const gone = !lane.recorder.calls.has(c.callId);
      if (gone && last !== undefined && (last.recording || !last.reasons.some((r) => r === 'call-ended' || r === 'unknown-call'))) {
        fail(`${where}: ${c.callId} was let go by the recorder without reporting call-ended (last ${last.recording}|${last.reasons.join(',')})`);
      }
      if (want !== undefined && !gone) {
        const got = last === undefined ? 'none' : `${last.recording}|${last.reasons.join(',')}`;
        const endedAlt = want.map((r) => (r === 'unknown-call' ? 'call-ended' : r === 'call-ended' ? 'unknown-call' : r));
        if (got !== `${open}|${want.join(',')}` && got !== `${open}|${endedAlt.join(',')}`) fail(`${where}: ${c.callId} reported ${got}, model ${open}|${want.join(',')}`);
      }
      return open;
    });
  };

  /** Sends a batch; every packet must be handed over writable exactly when the model says open. */
  const sendBatch = async (where: string, batch: [number, number][], expected: boolean[], epoch: number): Promise<void> => {
    const records: PacketRecord[] = await run.sendBatch(where, batch, expected, epoch);
    for (const p of records) {
      if (!p.ambiguous && p.arrived && p.writable !== p.expectedOpen) fail(`${where}: packet ${p.id} handed over writable=${p.writable}, model ${p.expectedOpen}`);
    }
  };

  // ---- steps
  // (A spurious stale period during the setup delays admissions to the next snapshot; wait for it.)
  if (!(await run.settleLive(`${tag} start`))) throw new Error(`${tag}: control stream not fresh after the setup: ${run.violations.join('; ')}`);
  run.absorb(lane.client.fresh);
  run.recordHistory();
  let expected = checkGates('start');
  for (let s = 0; s < sc.steps.length && run.violations.length === 0; s++) {
    const step = sc.steps[s]!;
    const a = step.action;
    const where = `${tag} step ${s} (${a.kind}${a.kind === 'fault' ? `:${a.fault}` : ''})`;
    lane.stats.steps++;
    const key = a.kind === 'fault' ? a.fault : a.kind;
    lane.stats.actions[key] = (lane.stats.actions[key] ?? 0) + 1;
    // A spurious stale period (heartbeat timeout on a loaded machine) during the last batch must
    // be over before the next action, or the action would hit a disconnected worker.
    if (!lane.caughtUp() && !(await run.settleLive(`${where} (resync)`))) break;

    if (a.kind === 'fault') {
      run.startFault(a.fault);
      if (!(await lane.waiter.until(() => !lane.client.fresh, SETTLE_TIMEOUT_MS))) {
        fail(`${where}: the worker did not go stale`);
        break;
      }
      const epoch = lane.epoch;
      await settleTurns(1);
      if (lane.epoch === epoch) {
        expected = checkGates(`${where} stale`);
        for (const [i, open] of expected.entries()) if (open) fail(`${where}: ${calls[i]!.callId} open while the control stream is stale`);
        await sendBatch(`${where} stale`, step.packets, expected, epoch);
        await run.applyStaleFacts(a.staleFacts, epoch);
        if (a.staleFacts.length > 0 && lane.epoch === epoch) await sendBatch(`${where} stale+facts`, step.packets, expected, epoch);
      } else {
        lane.stats.ambiguousSteps++;
      }
      run.endFault();
      if (!(await run.settleLive(where))) break;
      run.absorb(true);
      run.recordHistory();
      expected = checkGates(where);
      await sendBatch(where, step.packets, expected, lane.epoch);
      continue;
    }

    const eventsBefore = lane.events.length;
    const seqBefore = lane.client.lastSeq;
    const { injected, expectCode } = await run.perform(a);
    if (injected) {
      // A rejected frame gets an error reply and changes nothing: the first thing the worker
      // does after it must be that reply (not a state change, not a snapshot applied).
      if (!(await lane.waiter.until(() => lane.events.length > eventsBefore, SETTLE_TIMEOUT_MS))) fail(`${where}: no reply to the injected frame`);
      await settleTurns(2);
      const seen = lane.events.slice(eventsBefore);
      if (seen[0] === 'stale' || (seen[0]?.startsWith('error:') === true && seen.includes('stale') && !seen.some((e) => e.startsWith('stale:')))) {
        // A heartbeat timeout of the loaded machine (before or after the reply): not this frame's
        // doing. A stale for any other reason (`stale:<reason>`) is the frame's, and fails below.
        lane.stats.ambiguousSteps++;
      } else {
        if (seen[0] !== `error:${expectCode}`) fail(`${where}: the worker answered ${seen.join(' ') || 'nothing'}, expected error:${expectCode} and no change`);
        if (seen.includes('change') || seen.includes('fresh')) fail(`${where}: injected frame changed the worker's state (${seen.join(' ')})`);
        if (lane.client.lastSeq !== seqBefore) fail(`${where}: injected frame moved lastSeq to ${lane.client.lastSeq} (was ${seqBefore})`);
        if (!lane.client.fresh) fail(`${where}: injected frame made the worker stale (${seen.join(' ')})`);
      }
      if (!(await run.settleLive(where))) break;
    } else if (!(await run.settleLive(where))) break;
    const epoch = lane.epoch;
    run.absorb(lane.client.fresh);
    run.recordHistory();
    expected = checkGates(where);
    await sendBatch(where, step.packets, expected, epoch);
  }

  // ---- end of the run: end the calls, detach, collect
  await run.endCalls();
  checkGates(`${tag} end`);
  await run.detachCalls();

  // ---- the properties
  const byRecording = new Map(calls.filter((c) => c.rec.recordingId !== undefined).map((c) => [c.rec.recordingId!, c]));
  const written = new Map<number, string>();
  for (const e of lane.store.errors.splice(0)) fail(`store: ${e}`);
  for (const put of lane.store.puts) {
    const c = byRecording.get(put.meta.recordingId);
    if (c === undefined) continue; // another run of this lane
    lane.stats.segments++;
    if (put.afterDelete) fail(`segment ${put.meta.segment} of erased recording ${put.meta.recordingId} stored after the deletion`);
    for (const id of put.ids) {
      const p = lane.packets.get(id);
      const at = `${put.meta.recordingId}/${put.meta.participantId}/seg ${put.meta.segment} (run ${put.meta.run})`;
      if (p === undefined) {
        fail(`${at}: holds unknown packet ${id}`);
        continue;
      }
      if (written.has(id)) fail(`packet ${id} written twice (${written.get(id)} and ${at})`);
      written.set(id, at);
      if (p.run !== run.run || p.call !== c.index || p.pid !== put.meta.participantId) fail(`${at}: holds packet ${id} of ${p.run}/${p.call}/${p.pid}`);
      if (p.writable !== true) fail(`${at}: holds packet ${id} that arrived while the recorder's gate was closed`);
      if (!p.ambiguous && !p.expectedOpen) fail(`${at}: holds packet ${id} that arrived while the gate had to be closed`);
      lane.stats.writtenVerified++;
    }
  }
  for (const p of lane.packets.values()) {
    if (p.run !== run.run) continue;
    const c = calls[p.call]!;
    if (!p.ambiguous && p.expectedOpen && !c.erased && !written.has(p.id)) fail(`packet ${p.id} of ${c.callId}/${p.pid} arrived while open but was never written`);
  }
  for (const c of calls) {
    if (!c.erased) continue;
    if (!c.rec.erased) fail(`${c.callId}: consent withdrawn with erase, but the recorder did not erase`);
    const rid = c.rec.recordingId;
    if (rid !== undefined) {
      if (!lane.store.deleted.has(rid)) fail(`${c.callId}: recording ${rid} not deleted after withdrawal with erase`);
      if ((lane.store.current.get(rid)?.length ?? 0) > 0) fail(`${c.callId}: recording ${rid} still has segments after erase`);
    }
  }
  run.forget(byRecording.keys());
  if (run.violations.length > 0) throw new Error(`${tag}: ${run.violations.length} violation(s):\n  ${run.violations.join('\n  ')}`);
}

// ---------------------------------------------------------------------------------------------

let pool: WorkerPool;
const lanes: Lane[] = [];

beforeAll(async () => {
  pool = await WorkerPool.create({ size: 1, logger });
  for (let i = 0; i < LANES; i++) {
    // The last lane runs the threaded path (issue 16): its calls are direct streams recorded in media
    // threads, each packet's verdict the gate word its thread read; the others tap mediasoup legs.
    const lane = new Lane(i, pool, { logger, heartbeatMs: HEARTBEAT_MS, settleTimeoutMs: SETTLE_TIMEOUT_MS, threaded: i === LANES - 1 });
    await lane.start();
    lanes.push(lane);
  }
}, 60_000);

afterAll(async () => {
  for (const lane of lanes) await lane.stop().catch(() => undefined);
  pool?.close();
});

describe('gate + recorder over the real control stream and mediasoup', () => {
  it(
    `no packet is written outside consent, schedule and cap (${LANES} lanes x ${RUNS_PER_LANE} runs x ${CALLS_PER_RUN} calls)`,
    async () => {
      const t0 = Date.now();
      // Lane i runs with seed + i; OPTIN_PROPERTY_SEED=seed replays every lane.
      const params = seeded({ numRuns: RUNS_PER_LANE, endOnFailure: true });
      const seed = params.seed!;
      const results = await Promise.allSettled(
        lanes.map((lane) =>
          fc.assert(
            fc.asyncProperty(scenarioArb, (sc) => runScenario(lane, sc)),
            { ...params, seed: seed + lane.index },
          ),
        ),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      const total = newStats();
      for (const lane of lanes) addStats(total, lane.stats);
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      console.log(
        [
          `gate property (seed ${seed}, lanes ${LANES}): ${total.interleavings} call interleavings in ${total.runs} fast-check runs, ${total.steps} steps, ${secs} s`,
          `  actions: ${Object.entries(total.actions).sort().map(([k, n]) => `${k} ${n}`).join(', ')}`,
          `  packets checked: ${total.packets} (${total.packetsOpen} while open, ${total.packetsClosed} while closed, ${total.packetsAmbiguous} ambiguous excluded); ${total.writtenVerified} written packets traced to an open gate in ${total.segments} segments`,
          `  gate checks ${total.gateChecks}, closings ${total.closings}, admissions ${total.admissions}, calls held by the cap ${total.capBlocked}, erasures ${total.erasures}, ambiguous steps ${total.ambiguousSteps}`,
        ].join('\n'),
      );
      expect(total.interleavings).toBeGreaterThanOrEqual(TARGET_INTERLEAVINGS);
      expect(total.packetsClosed).toBeGreaterThan(0);
      expect(total.packetsOpen).toBeGreaterThan(0);
      // Exclusions are bounded: the checks above must cover nearly everything that was drawn.
      expect(total.packetsAmbiguous / total.packets, `${total.packetsAmbiguous} of ${total.packets} packets ambiguous`).toBeLessThanOrEqual(MAX_AMBIGUOUS_FRACTION);
      expect(total.ambiguousSteps / total.steps, `${total.ambiguousSteps} of ${total.steps} steps ambiguous`).toBeLessThanOrEqual(MAX_AMBIGUOUS_FRACTION);
    },
    // A ceiling that grows with the interleavings asked for (the suite's 5,000 take about three minutes alone).
    Math.max(600_000, TARGET_INTERLEAVINGS * 120),
  );
});
