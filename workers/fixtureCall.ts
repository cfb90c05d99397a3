import type { RecorderApp } from '../src/app/RecorderApp.ts';
import type { ConsentEvidence, Participant } from '../src/gate/facts.ts';
import type { RecordingStateEvent } from '../src/recorder/Recorder.ts';
import { sendRtpStreams, type FfmpegRun, type RtpSenderOptions } from '../src/media/ffmpeg.ts';
import type { AudioCodec } from '../src/sfu/mediaCodecs.ts';

export interface FixtureLeg {
  participantId: string;
  subjectId: string;
  role: 'agent' | 'customer';
  teamLeadId?: string;
  file: string;
  codec: AudioCodec;
}

/**
 * Where the call's facts go: the control plane's ingest API, as the IVR posts them (the demo's
 * client, test/support/policyFacts.ts in tests). Each resolves once the fact is committed.
 */
export interface CallFacts {
  startCall(callId: string, participants: Participant[]): Promise<unknown>;
  grantConsent(callId: string, participantId: string, evidence: ConsentEvidence): Promise<unknown>;
  endCall(callId: string): Promise<unknown>;
}

export interface FixtureCallResult {
  callId: string;
  recordingId: string | undefined;
  consentAtMs: number | undefined;
  /** Packets each leg delivered to the recorder while the gate was closed (dropped) and in total. */
  legs: { participantId: string; received: number; droppedClosed: number; written: number; timelineMs: number }[];
  /** Every recording-state report the worker made for the call (R7; each also sent to the control plane). */
  reports: { recording: boolean; reasons: string[]; at: number }[];
}

/**
 * Plays one call through the real stack: the IVR announces it to the control plane, one ffmpeg
 * sends every leg's fixture as RTP into its PlainTransport, consent is granted by DTMF after
 * `consentAfterMs` (an explicit act with evidence, R3, posted to the control plane's API), and
 * the call ends when the senders finish.
 *
 * Not an entry point: the call `npm run demo` (workers/demo.ts) plays. It sits beside the demo
 * rather than in src/ because nothing in the worker uses it, and rather than in test/support
 * because the image ships workers/ (not test/); the tests that play the demo's call import it
 * from here.
 */
export async function playFixtureCall(
  app: RecorderApp,
  policy: CallFacts,
  o: { callId: string; legs: FixtureLeg[]; seconds: number; consentAfterMs?: number; log?: (msg: string) => void },
): Promise<FixtureCallResult> {
  const log = o.log ?? (() => undefined);
  const reports: FixtureCallResult['reports'] = [];
  const onState = (callId: string, s: RecordingStateEvent): void => {
    if (callId === o.callId) reports.push({ recording: s.recording, reasons: [...s.reasons], at: s.at });
  };
  app.recorder.on('state', onState);

  await policy.startCall(
    o.callId,
    o.legs.map((l) =>
      l.role === 'agent'
        ? { participantId: l.participantId, role: 'agent' as const, subjectId: l.subjectId, ...(l.teamLeadId ? { teamLeadId: l.teamLeadId } : {}) }
        : { participantId: l.participantId, role: 'customer' as const, subjectId: l.subjectId },
    ),
  );
  // The worker learns of the call over the policy stream (a delta, milliseconds after the API's
  // answer); media that arrives before that is dropped as `unknown-call`, so wait for it.
  for (const deadline = Date.now() + 5000; app.state.call(o.callId) === undefined; ) {
    if (Date.now() > deadline) throw new Error(`the worker did not learn of call ${o.callId} within 5 s: is its policy stream fresh?`);
    await new Promise((r) => setTimeout(r, 5));
  }
  const room = await app.openCall(o.callId);
  const senders: FfmpegRun[] = [];
  const granted: Promise<unknown>[] = [];
  let consentAtMs: number | undefined;
  try {
    // Every leg is opened first, then one ffmpeg sends them all on one clock (as one SBC forks
    // both sides of a call): the speakers' timelines start together.
    const streams: RtpSenderOptions[] = [];
    let ssrc = 0x10000;
    for (const leg of o.legs) {
      const plain = await room.addPlainLeg(leg.participantId, leg.codec, ++ssrc);
      streams.push({ file: leg.file, codec: leg.codec, ip: plain.ip, rtpPort: plain.rtpPort, rtcpPort: plain.rtcpPort, ssrc, seconds: o.seconds });
    }
    senders.push(sendRtpStreams(streams));
    log(`call ${o.callId}: ${o.legs.length} legs sending ${o.seconds} s of audio; recording is off until consent`);
    let consentTimer: NodeJS.Timeout | undefined;
    if (o.consentAfterMs !== undefined) {
      // "A few seconds into the call" counts from the first media the recorder sees: ffmpeg takes
      // a moment to start, and the point is to prove the media before consent is dropped.
      const grant = () => {
        for (const leg of o.legs.filter((l) => l.role === 'customer')) {
          consentAtMs = Date.now();
          const posted = policy.grantConsent(o.callId, leg.participantId, { method: 'dtmf', at: consentAtMs, infoVersion: 'training-notice-v1' });
          posted.catch(() => undefined); // awaited (and rethrown) below
          granted.push(posted);
        }
        log(`customer pressed 1 (DTMF): consent posted to the control plane ${o.consentAfterMs} ms into the call`);
      };
      // Tracks in media threads report their counters once a second: ask for them now.
      let asking = false;
      let sendersDone = false;
      const firstMedia = setInterval(() => {
        if (asking) return;
        asking = true;
        void (app.mediaThreads?.refreshStats() ?? Promise.resolve())
          .then(() => {
            const call = app.recorder.calls.get(o.callId);
            if (!call || ![...call.tracks.values()].some((t) => t.counters.received > 0) || consentTimer !== undefined || sendersDone) return;
            clearInterval(firstMedia);
            consentTimer = setTimeout(grant, o.consentAfterMs);
          })
          .finally(() => (asking = false));
      }, 10);
      senders.forEach((s) => void s.done.finally(() => {
        sendersDone = true;
        clearInterval(firstMedia);
      }).catch(() => undefined));
    }
    await Promise.all(senders.map((s) => s.done));
    clearTimeout(consentTimer);
    // Let the last packets clear the jitter buffer before the call ends.
    await new Promise((r) => setTimeout(r, 300));
    await app.mediaThreads?.refreshStats();
    const call = app.recorder.calls.get(o.callId);
    const legs = call
      ? [...call.tracks.values()].map((t) => ({ participantId: t.participantId, received: t.counters.received, droppedClosed: t.counters.droppedClosed, written: t.counters.written, timelineMs: t.counters.timelineMs }))
      : [];
    const recordingId = call?.recordingId;
    // A refused consent post is the test's or the demo's failure to see, not a silent "no recording".
    await Promise.all(granted);
    await policy.endCall(o.callId);
    room.close();
    await app.recorder.detachCall(o.callId);
    await new Promise((r) => setTimeout(r, 100));
    return { callId: o.callId, recordingId, consentAtMs, legs, reports };
  } finally {
    for (const s of senders) s.stop();
    app.recorder.off('state', onState);
    room.close();
  }
}
