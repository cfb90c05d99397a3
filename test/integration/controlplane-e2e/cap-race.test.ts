import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capCount } from '../../../src/caps/capDecision.ts';
import { ControlClient } from '../../../src/control/ControlClient.ts';
import { monthKey } from '../../../src/gate/month.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';
import { ControlAdmitter } from '../../../src/recorder/ControlAdmitter.ts';
import { startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { PolicyFacts } from '../../support/policyFacts.ts';
import { seeded } from '../../support/property.ts';
import { until } from '../../support/recorderNode.ts';

/**
 * The monthly cap under a race (issue 13, "must show"): four workers (each its own policy state,
 * control client and admitter, as four recorder processes have) admit recordings of ONE agent at
 * the same moment, through two control-plane replicas on one PostgreSQL database. A property
 * over random caps, numbers of calls per worker, start offsets and retries (the same recording
 * asked again, as after a lost answer): never more admissions than the cap; exactly
 * min(cap, recordings) admitted (nothing refused while room was left); the database's counter
 * equals the admissions; a retry never counts twice. The seed is printed (test/support/property.ts).
 */

const WORKERS = 4;
const RUNS = Number(process.env.CAP_RACE_RUNS ?? 25);
let db: TestDatabase;
const replicas: TestControlPlane[] = [];
const workers: { client: ControlClient; state: PolicyState; admitter: ControlAdmitter }[] = [];
let policy: PolicyFacts;

beforeAll(async () => {
  db = await createTestDatabase();
  for (let r = 0; r < 2; r++) replicas.push(await startTestControlPlane({ databaseUrl: db.url, overrides: { replicaId: `cp-race-${r}`, 'stream.heartbeatMs': 200 }, createTokens: r === 0 }));
  policy = new PolicyFacts({ url: replicas[0]!.cp.url, tokens: replicas[0]!.tokens });
  for (let i = 0; i < WORKERS; i++) {
    const state = new PolicyState();
    const client = new ControlClient({ url: replicas[i % 2]!.cp.streamUrl, workerId: `w-race-${i}`, secret: replicas[0]!.secret, state, capTimeoutMs: 10_000 });
    client.start();
    workers.push({ client, state, admitter: new ControlAdmitter(client) });
  }
  await Promise.all(workers.map((w) => w.client.waitFresh(10_000)));
}, 60_000);

afterAll(async () => {
  for (const w of workers) w.client.close();
  for (const r of replicas) await r.close();
  await db?.drop();
});

interface Race {
  cap: number;
  /** Recordings per worker. */
  calls: number[];
  /** Start offset of each admission, ms. */
  delays: number[];
  /** Which admissions are asked twice (a retry after a lost answer). */
  retries: boolean[];
}

const raceArb: fc.Arbitrary<Race> = fc
  .record({ cap: fc.integer({ min: 0, max: 6 }), calls: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: WORKERS, maxLength: WORKERS }) })
  .chain(({ cap, calls }) => {
    const n = calls.reduce((a, b) => a + b, 0);
    return fc.record({
      cap: fc.constant(cap),
      calls: fc.constant(calls),
      delays: fc.array(fc.integer({ min: 0, max: 15 }), { minLength: n, maxLength: n }),
      retries: fc.array(fc.boolean(), { minLength: n, maxLength: n }),
    });
  });

let run = 0;

describe('monthly cap: four workers, two replicas, one agent', () => {
  it(`never admits over the cap (${RUNS} races)`, async () => {
    const totals = { races: 0, asked: 0, admitted: 0, refused: 0, retries: 0 };
    const params = seeded({ numRuns: RUNS });
    await fc.assert(
      fc.asyncProperty(raceArb, async (race) => {
        const tag = `r${++run}${randomBytes(2).toString('hex')}`;
        const agent = `ag-${tag}`;
        await policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], race.cap);
        // The calls, announced at the control plane; every worker learns them from its stream.
        const jobs: { worker: number; callId: string; recordingId: string }[] = [];
        race.calls.forEach((n, w) => {
          for (let k = 0; k < n; k++) jobs.push({ worker: w, callId: `${tag}w${w}c${k}`, recordingId: `r_${tag}w${w}c${k}` });
        });
        for (const j of jobs) {
          await policy.startCall(j.callId, [
            { participantId: `${j.callId}-a`, role: 'agent', subjectId: agent },
            { participantId: `${j.callId}-c`, role: 'customer', subjectId: `${j.callId}-s` },
          ]);
        }
        await until(() => jobs.every((j) => workers[j.worker]!.state.call(j.callId) !== undefined && workers[j.worker]!.state.schedule(agent) !== undefined), 10_000, 'calls known to the workers');

        const now = Date.now();
        const outcomes = await Promise.all(
          jobs.map(async (j, i) => {
            await sleep(race.delays[i]!);
            const w = workers[j.worker]!;
            const first = await w.admitter.admitCall(w.state, j.callId, j.recordingId, now);
            if (!race.retries[i]) return { first, again: first };
            totals.retries++;
            // Asked again for the same recording (its answer lost): the same answer, counted once.
            const again = await w.client.requestCap({ recordingId: j.recordingId, callId: j.callId, agentIds: [agent], at: now });
            return { first, again: again.admitted };
          }),
        );
        const admitted = outcomes.filter((o) => o.first).length;
        totals.races++;
        totals.asked += jobs.length;
        totals.admitted += admitted;
        totals.refused += jobs.length - admitted;
        expect(admitted).toBeLessThanOrEqual(race.cap);
        expect(admitted).toBe(Math.min(race.cap, jobs.length));
        for (const o of outcomes) if (o.first) expect(o.again).toBe(true);
        expect(await capCount(replicas[0]!.cp.db, agent, monthKey(now))).toBe(admitted);
      }),
      params,
    );
    console.log(`cap race: ${totals.races} races, ${totals.asked} admissions asked by ${WORKERS} workers over 2 replicas (${totals.retries} asked twice): ${totals.admitted} admitted, ${totals.refused} refused, never over the cap`);
  }, 300_000);
});
