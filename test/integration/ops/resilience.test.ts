/**
 * Resilience (issue 7): one mediasoup worker per core with calls spread across them; a worker
 * crash ends only its calls' recordings (their open segments sealed and stored), is reported and
 * the worker replaced, while the other worker's call keeps recording. Admission control refuses
 * recording above the ceiling (reason `overloaded`) instead of degrading the calls it has.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { useStack } from '../../support/stack.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { sendRtp, type FfmpegRun } from '../../../src/media/ffmpeg.ts';
import { readTrack } from '../../support/storageFixtures.ts';

const stack = useStack({ 'mediasoup.workers': 2, 'admission.maxStreams': 4, segmentSeconds: 2 }, { agents: ['agent-r1'] });
const senders: FfmpegRun[] = [];

afterAll(() => {
  for (const s of senders) s.stop();
});

async function call(callId: string, ssrcBase: number) {
  await stack.policy.startCall(callId, [
    { participantId: `${callId}-a`, role: 'agent', subjectId: 'agent-r1', teamLeadId: 'lead-r1' },
    { participantId: `${callId}-c`, role: 'customer', subjectId: `cust-${callId}` },
  ]);
  const room = await stack.app.openCall(callId);
  for (const [suffix, codec, file, ssrc] of [
    ['a', 'opus', 'agent-tone.wav', ssrcBase + 1],
    ['c', 'opus', 'customer-tone.wav', ssrcBase + 2],
  ] as const) {
    const leg = await room.addPlainLeg(`${callId}-${suffix}`, codec, ssrc);
    senders.push(sendRtp({ file: fixturePath(file), codec, ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc, seconds: 25 }));
  }
  await stack.policy.grantConsent(callId, `${callId}-c`, { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' });
  return room;
}

describe('worker crash and admission', () => {
  it('spreads calls across workers, survives a worker crash, and refuses overload at admission', async () => {
    const roomA = await call('call-ra', 0x4000);
    const roomB = await call('call-rb', 0x4100);
    expect(stack.app.pool.workers.length).toBe(2);
    // One Router per call, on different workers (least loaded first).
    expect(roomA.workerPid).not.toBe(roomB.workerPid);

    // A third call exceeds the ceiling of 4 streams: not recorded, and says why.
    await stack.policy.startCall('call-rc', [
      { participantId: 'rc-a', role: 'agent', subjectId: 'agent-r1', teamLeadId: 'lead-r1' },
      { participantId: 'rc-c', role: 'customer', subjectId: 'cust-rc' },
    ]);
    await stack.policy.grantConsent('call-rc', 'rc-c', { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' });
    await stack.app.openCall('call-rc');
    await new Promise((r) => setTimeout(r, 3000));
    expect(stack.relay.lastRecordingState('call-rc')).toMatchObject({ recording: false, reasons: expect.arrayContaining(['overloaded']) });
    expect(stack.app.recorder.calls.get('call-ra')!.writing).toBe(true);
    expect(stack.app.recorder.calls.get('call-rb')!.writing).toBe(true);
    const overloadMetric = (await stack.app.metrics.registry.getSingleMetricAsString('optin_admission_rejections_total'));
    expect(overloadMetric).toMatch(/limit="streams"} 1/);

    // Kill the worker carrying call A.
    const idA = stack.app.recorder.calls.get('call-ra')!.recordingId!;
    const idB = stack.app.recorder.calls.get('call-rb')!.recordingId!;
    const died = new Promise((r) => stack.app.pool.once('workerdied', r));
    process.kill(roomA.workerPid, 'SIGKILL');
    await died;
    await new Promise((r) => setTimeout(r, 1500));
    expect(roomA.closed).toBe(true);
    expect(stack.app.recorder.calls.has('call-ra')).toBe(false);
    expect(stack.app.pool.workers.length).toBe(2); // replaced
    expect(stack.app.recorder.calls.get('call-rb')!.writing).toBe(true); // the other call goes on
    expect(await stack.app.metrics.registry.getSingleMetricAsString('optin_mediasoup_worker_deaths_total')).toMatch(/ 1$/m);

    // Call A's recording ended at the crash with its segments stored; B is still growing.
    await stack.app.store.drained(20_000);
    const manifestA = await stack.app.store.getManifest(idA);
    expect(manifestA.state).toBe('ended');
    const segsA = manifestA.segments.filter((s) => s.participantId === 'call-ra-a');
    expect(segsA.length).toBeGreaterThanOrEqual(1);
    for (const pid of ['call-ra-a', 'call-ra-c']) {
      const n = (await readTrack(stack.app.store, idA, pid)).filter((s) => s.ogg.length > 0).length;
      expect(n).toBe(manifestA.segments.filter((s) => s.participantId === pid).length);
    }
    const before = (await stack.app.store.getManifest(idB)).segments.length;
    await new Promise((r) => setTimeout(r, 2500));
    expect((await stack.app.store.getManifest(idB)).segments.length).toBeGreaterThan(before);
  }, 90_000);
});
