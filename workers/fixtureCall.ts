import type { PolicyServer } from '../src/control/PolicyServer.ts';
import type { RecorderApp } from '../src/app/RecorderApp.ts';
import { sendRtp, type FfmpegRun } from '../src/media/ffmpeg.ts';
import type { AudioCodec } from '../src/sfu/mediaCodecs.ts';

export interface FixtureLeg {
  participantId: string;
  subjectId: string;
  role: 'agent' | 'customer';
  teamLeadId?: string;
  file: string;
  codec: AudioCodec;
}

export interface FixtureCallResult {
  callId: string;
  recordingId: string | undefined;
  consentAtMs: number | undefined;
  /** Packets each leg delivered to the recorder while the gate was closed (dropped) and in total. */
  legs: { participantId: string; received: number; droppedClosed: number; written: number; timelineMs: number }[];
  /** Every recording-state report the policy server received for the call (R7). */
  reports: { recording: boolean; reasons: string[]; at: number }[];
}

/**
 * Plays one call through the real stack: the policy server announces it, ffmpeg sends each
 * leg's fixture as RTP into a PlainTransport, consent is granted by DTMF after `consentAfterMs`
 * (an explicit act with evidence, R3), and the call ends when the senders finish.
 *
 * Not an entry point: the call `npm run demo` (workers/demo.ts) plays. It sits beside the demo
 * rather than in src/ because nothing in the worker uses it, and rather than in test/support
 * because the image ships workers/ (not test/); the tests that play the demo's call import it
 * from here.
 */
export async function playFixtureCall(
  app: RecorderApp,
  policy: PolicyServer,
  o: { callId: string; legs: FixtureLeg[]; seconds: number; consentAfterMs?: number; log?: (msg: string) => void },
): Promise<FixtureCallResult> {
  const log = o.log ?? (() => undefined);
  const reports: FixtureCallResult['reports'] = [];
  const onState = (s: { callId: string; recording: boolean; reasons: string[]; at: number }) => {
    if (s.callId === o.callId) reports.push({ recording: s.recording, reasons: [...s.reasons], at: s.at });
  };
  policy.on('recording-state', onState as never);

  policy.startCall(
    o.callId,
    o.legs.map((l) =>
      l.role === 'agent'
        ? { participantId: l.participantId, role: 'agent' as const, subjectId: l.subjectId, ...(l.teamLeadId ? { teamLeadId: l.teamLeadId } : {}) }
        : { participantId: l.participantId, role: 'customer' as const, subjectId: l.subjectId },
    ),
  );
  const room = await app.openCall(o.callId);
  const senders: FfmpegRun[] = [];
  let consentAtMs: number | undefined;
  try {
    let ssrc = 0x10000;
    for (const leg of o.legs) {
      const plain = await room.addPlainLeg(leg.participantId, leg.codec, ++ssrc);
      senders.push(sendRtp({ file: leg.file, codec: leg.codec, ip: plain.ip, rtpPort: plain.rtpPort, rtcpPort: plain.rtcpPort, ssrc, seconds: o.seconds }));
    }
    log(`call ${o.callId}: ${o.legs.length} legs sending ${o.seconds} s of audio; recording is off until consent`);
    let consentTimer: NodeJS.Timeout | undefined;
    if (o.consentAfterMs !== undefined) {
      // "A few seconds into the call" counts from the first media the recorder sees: ffmpeg takes
      // a moment to start, and the point is to prove the media before consent is dropped.
      const grant = () => {
        for (const leg of o.legs.filter((l) => l.role === 'customer')) {
          consentAtMs = Date.now();
          policy.grantConsent(o.callId, leg.participantId, { method: 'dtmf', at: consentAtMs, infoVersion: 'training-notice-v1' });
        }
        log(`customer pressed 1 (DTMF): consent granted ${o.consentAfterMs} ms into the call`);
      };
      const firstMedia = setInterval(() => {
        const call = app.recorder.calls.get(o.callId);
        if (!call || ![...call.tracks.values()].some((t) => t.counters.received > 0)) return;
        clearInterval(firstMedia);
        consentTimer = setTimeout(grant, o.consentAfterMs);
      }, 10);
      senders.forEach((s) => void s.done.finally(() => clearInterval(firstMedia)).catch(() => undefined));
    }
    await Promise.all(senders.map((s) => s.done));
    clearTimeout(consentTimer);
    // Let the last packets clear the jitter buffer before the call ends.
    await new Promise((r) => setTimeout(r, 300));
    const call = app.recorder.calls.get(o.callId);
    const legs = call
      ? [...call.tracks.values()].map((t) => ({ participantId: t.participantId, received: t.counters.received, droppedClosed: t.counters.droppedClosed, written: t.counters.written, timelineMs: t.counters.timelineMs }))
      : [];
    const recordingId = call?.recordingId;
    policy.endCall(o.callId);
    room.close();
    await app.recorder.detachCall(o.callId);
    await new Promise((r) => setTimeout(r, 100));
    return { callId: o.callId, recordingId, consentAtMs, legs, reports };
  } finally {
    for (const s of senders) s.stop();
    policy.off('recording-state', onState as never);
    room.close();
  }
}
