import { rmSync } from 'node:fs';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ControlClient } from '../../../src/control/ControlClient.ts';
import { TEST_SECRET } from '../../support/controlPlane.ts';
import { controlProcessSetup, spawnControlPlane, type ControlProcess } from '../../support/controlProcess.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';

/**
 * The control plane's deadlines are about the control plane, not the worker's own loop. A recorder
 * whose main thread was held up past a deadline (a burst of call setups) while the answer or the
 * heartbeats came takes them: the cap question is answered, the stream stays fresh. A control
 * plane that truly does not answer still makes the cap unknown and the stream stale (both fail
 * closed). The control plane runs in its own process, so it answers while this one is busy.
 */

let db: TestDatabase;
let dir: string;
let port: number;
let token: string;
let proc: ControlProcess | undefined;
let client: ControlClient | undefined;
const hour = 3600_000;

beforeAll(async () => {
  db = await createTestDatabase();
  const setup = await controlProcessSetup(db.url, TEST_SECRET, 'optin-own-stall-', { OPTIN_CONTROL_HEARTBEAT_MS: '100' });
  ({ dir, port, token } = setup);
  proc = spawnControlPlane(setup.env);
  await proc.ready;
  const res = await fetch(`http://127.0.0.1:${port}/v1/agents/agent-dl/schedule`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'idempotency-key': `k-${Date.now()}`, 'content-type': 'application/json' },
    body: JSON.stringify({ windows: [{ start: Date.now() - hour, end: Date.now() + hour }], monthlyCap: 10 }),
  });
  expect(res.status).toBe(200);
  // A short deadline; heartbeats are not what this test is about.
  client = new ControlClient({ url: `ws://127.0.0.1:${port}/v1/stream`, workerId: 'w-deadline', secret: TEST_SECRET, capTimeoutMs: 200, heartbeatTimeoutMs: 30_000 });
  client.start();
  await client.waitFresh();
}, 90_000);

afterAll(async () => {
  client?.close();
  if (proc && proc.child.exitCode === null) {
    proc.child.kill('SIGCONT');
    proc.child.kill('SIGKILL');
  }
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

/** Holds this thread for `ms`, as a burst of synchronous work does. */
function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // spin
  }
}

describe("a worker's own stall is not the control plane's silence", () => {
  it('an answer that came while this thread was held up past the deadline is taken, not counted as late', async () => {
    const answer = client!.requestCap({ recordingId: 'r_deadline_1', callId: 'c-dl-1', agentIds: ['agent-dl'], at: Date.now() });
    await nextTurn(); // the question is on the wire; held up from the check phase, as above
    busy(2500); // the control plane (its own process) answers meanwhile; the deadline (200 ms) passes
    await expect(answer).resolves.toMatchObject({ admitted: true });
  });

  it('heartbeats that came while this thread was held up past the stale deadline keep the stream fresh', async () => {
    const watched = new ControlClient({ url: `ws://127.0.0.1:${port}/v1/stream`, workerId: 'w-stall', secret: TEST_SECRET, heartbeatTimeoutMs: 300 });
    const stale: string[] = [];
    watched.on('stale', (reason) => stale.push(reason));
    try {
      watched.start();
      await watched.waitFresh();
      await sleep(250); // a heartbeat or two, as usual
      // Held up from the loop's check phase, as after a burst of work: the next turn runs due
      // timers before it reads the socket. (From a timer callback, libuv's cached clock would
      // read the socket first and hide the difference.)
      await nextTurn();
      busy(1500); // heartbeats every 100 ms pile up unread; the 300 ms deadline passes
      await sleep(50);
      expect(stale).toEqual([]);
      expect(watched.state.fresh).toBe(true);
      // The control plane silent for real: stale within the deadline (and a little).
      proc!.child.kill('SIGSTOP');
      try {
        await vi.waitFor(() => expect(stale).toEqual(['heartbeat-missed']), { timeout: 5000, interval: 20 });
      } finally {
        proc!.child.kill('SIGCONT');
      }
    } finally {
      watched.close();
    }
  });

  it('a control plane that does not answer in time: the cap is unknown, the recording does not start', async () => {
    proc!.child.kill('SIGSTOP');
    try {
      const answer = client!.requestCap({ recordingId: 'r_deadline_2', callId: 'c-dl-2', agentIds: ['agent-dl'], at: Date.now() });
      await expect(answer).rejects.toMatchObject({ code: 'CONTROL_CAP_UNKNOWN' });
    } finally {
      proc!.child.kill('SIGCONT');
    }
  });
});
