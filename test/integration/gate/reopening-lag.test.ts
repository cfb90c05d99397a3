/**
 * R4 at a reopening under event-loop lag (issue 17): the gate decides in Node, but packets reach
 * the mediasoup worker first. While Node is blocked, packets the worker receives with the gate
 * closed queue up in its channel; if the gate reopens before Node reads them, they must still be
 * dropped. Here the loop is blocked for 300 ms while both legs keep talking through the real
 * worker, and the gate is reopened in that same turn (a resume processed late): not one of those
 * packets may be in the recording, and what is sent after the reopening must be.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { useStack } from '../../support/stack.ts';
import { PacedSender, RtpLeg, readTaggedTrack } from '../../support/gateHarness.ts';

const stack = useStack({ segmentSeconds: 1, 'admission.maxEventLoopLagMs': 60_000 }, { agents: ['agent-lag1'] });

describe('a reopening during event-loop lag', () => {
  it('keeps none of the packets the worker received while the gate was closed', async () => {
    const callId = 'call-lag';
    await stack.policy.startCall(callId, [
      { participantId: 'lag-a', role: 'agent', subjectId: 'agent-lag1', teamLeadId: 'lead-lag1' },
      { participantId: 'lag-c', role: 'customer', subjectId: 'cust-lag1' },
    ]);
    const room = await stack.app.openCall(callId);
    const legs = [await RtpLeg.create(room, 'lag-a', 0x7001), await RtpLeg.create(room, 'lag-c', 0x7002)];
    const rec = stack.app.recorder.calls.get(callId)!;
    const before = new PacedSender(legs, 1);
    before.start();
    let after: PacedSender | undefined;
    try {
      await expect.poll(() => rec.tracks.size === 2 && [...rec.tracks.values()].every((t) => t.counters.received > 0), { timeout: 10_000 }).toBe(true);
      await stack.policy.grantConsent(callId, 'lag-c', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      await expect.poll(() => rec.writing, { timeout: 10_000 }).toBe(true);
      await sleep(1200);
      await stack.policy.pause(callId);
      await expect.poll(() => rec.phase.name, { timeout: 5_000 }).toBe('admitted');
      await sleep(300);
      before.stop();

      // Node blocked for 300 ms; the legs go on talking through the worker, gate closed.
      const closedIds = new Set<number>();
      let id = 500_000;
      const blockedUntil = Date.now() + 300;
      for (let next = Date.now(); Date.now() < blockedUntil; ) {
        if (Date.now() < next) continue;
        for (const leg of legs) {
          leg.send(id);
          closedIds.add(id++);
        }
        next += 20;
      }
      // The reopening is decided in this same turn, before Node has read any of those packets.
      const resumed = stack.app.state.applyFact({ type: 'call.resumed', callId });
      expect(resumed.ok).toBe(true);
      stack.app.recorder.evaluate(callId);
      expect(rec.phase.name).toBe('recording');
      after = new PacedSender(legs, 600_000);
      after.start();
      await sleep(2000);
      after.stop();
      await sleep(100);

      const recordingId = rec.recordingId!;
      await stack.app.recorder.detachCall(callId);
      await stack.app.store.drained(20_000);
      for (const leg of legs) {
        const ids = (await readTaggedTrack(stack.app.store, recordingId, leg.participantId)).flatMap((s) => s.ids);
        const leaked = ids.filter((i) => closedIds.has(i));
        expect(leaked, `${leg.participantId}: packets received with the gate closed were recorded`).toEqual([]);
        // Recorded before the pause and after the reopening: the fence costs no more than a few packets.
        expect(ids.filter((i) => i < 500_000).length).toBeGreaterThan(10);
        const resumedIds = ids.filter((i) => i >= 600_000);
        expect(resumedIds.length).toBeGreaterThan(50);
        expect(resumedIds).toEqual(after.idsOf(leg.participantId).slice(-resumedIds.length));
      }
      expect(closedIds.size).toBeGreaterThan(20);
    } finally {
      before.stop();
      after?.stop();
      for (const leg of legs) leg.close();
      room.close();
    }
  }, 60_000);
});
