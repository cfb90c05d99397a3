import { randomBytes } from 'node:crypto';
import type { types } from 'mediasoup';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { GateMachine, type GateTransition } from '../gate/GateMachine.ts';
import type { CallState, PolicyState } from '../gate/PolicyState.ts';
import type { RecorderReason, RecordingReason } from '../gate/reasons.ts';
import type { CallRoom, AudioLeg } from '../sfu/CallRoom.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import { summarizeManifest, type ManifestSummary } from '../storage/manifestSummary.ts';
import type { DeletionReceipt } from '../storage/types.ts';
import { oggBytesOf } from '../storage/inputs.ts';
import { TrackRecorder, type OpusEncoderPool, type SegmentStore } from './TrackRecorder.ts';
import type { DirectTrackFactory, GatedTrack, RecorderTrack, ThreadTaps } from './RecorderTrack.ts';
import { assertCanEnter, isErased, recordingIdOf, reportOf, type ErasureCause, type RecordingPhase, type RecordingStopReason } from './RecordingPhase.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';

/** A participant's stream received directly (CallRecorder.openDirectTrack). */
export interface DirectTrack {
  /** One RTP packet at its arrival time; the per-packet gate decides whether it is kept. */
  push(packet: Buffer, arrivalMs: number): void;
  /** The stream was (or may have been) held and resumes now: the hold is silence of its wall-clock length, never compressed. */
  resumed(atMs: number): void;
  /** The stream ended or now carries someone else: ends its run (the segment is sealed). */
  close(): Promise<void>;
}

/** What the call needs from storage (RecordingStore satisfies it). */
export interface CallStore extends SegmentStore {
  /** Resolves with the recording's expiry (the manifest's), or nothing (stores that do not say). */
  beginRecording(input: {
    recordingId: string;
    callId: string;
    startedAt: number;
    participants: { participantId: string; role: 'agent' | 'customer'; subjectId: string; teamLeadId?: string }[];
    consentEvidence: Record<string, string | number | boolean | null>[];
    policy?: { agentWindows: { start: number; end: number }[]; monthlyCap: number };
  }): Promise<{ expiresAtMs: number } | void>;
  /** Resolves with the final manifest (a store that keeps none resolves with nothing). */
  endRecording(recordingId: string): Promise<RecordingManifest | undefined>;
  /** Resolves with the store's receipt (RecordingStore), or nothing (stores that keep none). */
  deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<DeletionReceipt | void>;
}

/**
 * Admits a recording under the agents' monthly caps (ControlAdmitter asks the control plane).
 * Resolves true (admitted, recorded with `state.markAdmitted`) or false (refused,
 * `state.markCapRefused`); rejects with CONTROL_NOT_FRESH when the policy stream was lost before
 * the answer, and with anything else when the cap could not be decided (`cap-unknown`).
 */
export interface Admitter {
  admitCall(state: PolicyState, callId: string, recordingId: string, now?: number): Promise<boolean>;
}

/** What a call tells the catalogue about its recording (the Recorder reports it upstream). */
export type RecordingEvent =
  | { type: 'begun'; recordingId: string; startedAt: number; expiresAt: number | undefined; participants: { participantId: string; role: 'agent' | 'customer'; subjectId: string; teamLeadId?: string }[] }
  | { type: 'segment'; recordingId: string; participantId: string; sealedBytes: number }
  | { type: 'ended' | 'interrupted'; recordingId: string; at: number; /** The final manifest's figures: the report says exactly what the store says. */ final?: ManifestSummary };

/** How long a call waits before asking again for a cap the control plane did not decide in time. */
export const CAP_RETRY_MS = 1000;

export interface CallRecorderDeps {
  state: PolicyState;
  store: CallStore;
  admitter: Admitter;
  encoder?: OpusEncoderPool;
  /**
   * Where direct tracks (SIPREC streams) live when not in this thread: the media threads, whose
   * per-packet gate this call writes (`#syncGates`). Without it they are TrackRecorders here.
   */
  directTracks?: DirectTrackFactory;
  /**
   * SFU legs tapped into the media threads (with `directTracks`): a PlainTransport consumer per
   * leg sends to its call's thread; no packet of the leg reaches this thread.
   */
  threadTaps?: ThreadTaps;
  segmentSamples: number;
  logger: Logger;
  metrics?: Metrics;
  /** Called on every change of what the call reports (R7); the Recorder sends it upstream. */
  onReport: (callId: string, report: { recording: boolean; reasons: RecordingReason[]; recordingId?: string }) => void;
  /** The recording's life for the catalogue (begun, segments stored, ended). */
  onRecording?: (event: RecordingEvent) => void;
  /** Recording starts and stops (`gate.transition`), cap refusals and erasures, for the audit trail. */
  onAudit: (entry: { type: string; callId: string; recordingId?: string; details: Record<string, unknown> }) => void;
  /** Asks the Recorder to re-evaluate this call soon (admission finished, storage error). */
  requestEvaluate: (callId: string) => void;
}

/** One participant's producer under the tap; `live` false once a newer producer replaced it. */
interface Tap {
  producerId: string;
  consumer: types.Consumer | undefined;
  live: boolean;
  /** A tap into a media thread: closes its transport and the thread's socket. */
  close?: (() => void) | undefined;
}

/**
 * One call under the recorder: its gate, its participants' tracks, and its recording. The gate
 * is evaluated synchronously on every control change and on the shared tick; a closing decision
 * ends every track's run before the event loop delivers the next packet.
 *
 * Whether packets are kept is the recording phase (src/recorder/RecordingPhase.ts), never the
 * gate alone: every phase change goes through `#enter`, which starts and ends the track runs and
 * writes the `gate.transition` audit entry when recording actually starts or stops.
 */
export class CallRecorder {
  readonly callId: string;
  /** The call's mediasoup Router (WebRTC and plain legs); none for a call whose media arrives directly (SIPREC). */
  readonly room: CallRoom | undefined;
  readonly gate: GateMachine;
  readonly tracks = new Map<string, RecorderTrack>();
  /** Direct tracks in media threads, and whether their stream is still open: their gate words follow `#syncGates`. */
  readonly #gated = new Map<string, { track: GatedTrack; open: boolean }>();
  readonly #d: CallRecorderDeps;
  readonly #log: Logger;
  #tap: types.DirectTransport | undefined;
  #phase: RecordingPhase = { name: 'closed' };
  /** The manifest write of the admitted recording (segments wait for it). */
  #begun: Promise<unknown> | undefined;
  /** An admission of agents who joined the admitted call is in flight / may be asked again from. */
  #joinAdmitting = false;
  #joinRetryAtMs = 0;
  /** The recording's start and the participants its manifest lists (set by `#begin`). */
  #startedAtMs = 0;
  #inManifest = new Set<string>();
  /** The last R7 report sent (a report equal to it is not sent again). */
  #lastReported: { recording: boolean; reasons: readonly RecordingReason[]; recordingId: string | undefined } | undefined;
  readonly #ending = new Set<Promise<void>>();
  /**
   * Raised at every opening until the mediasoup worker answers a request sent at that instant:
   * packets it delivers before the answer may have reached it while the gate was still closed
   * (see `#raiseFence`), so they are dropped like any packet of a closed gate.
   */
  #fence: object | undefined;
  /** When the gate last opened (the `recording` phase began): audio from before it is never kept (R4). */
  #openedAtMs = Number.POSITIVE_INFINITY;
  /** The producer tapped for each participant (the newest one: a reconnect replaces it). */
  readonly #taps = new Map<string, Tap>();

  constructor(callId: string, room: CallRoom | undefined, deps: CallRecorderDeps) {
    this.callId = callId;
    this.room = room;
    this.#d = deps;
    this.#log = deps.logger.child({ callId });
    this.gate = new GateMachine(deps.state, callId);
  }

  async start(): Promise<void> {
    const room = this.room;
    if (!room) return;
    const taps = this.#d.threadTaps;
    if (taps && this.#d.directTracks) {
      room.on('audioproducer', (leg) => void this.#tapLegInThread(leg, taps));
      for (const leg of room.legs) await this.#tapLegInThread(leg, taps);
      return;
    }
    this.#tap = await room.router.createDirectTransport();
    room.on('audioproducer', (leg) => void this.#tapLeg(leg));
    for (const leg of room.legs) await this.#tapLeg(leg);
  }

  get phase(): RecordingPhase {
    return this.#phase;
  }

  get recordingId(): string | undefined {
    return recordingIdOf(this.#phase);
  }

  /** True while packets arriving now are kept. */
  get writing(): boolean {
    return this.#keeping();
  }

  /**
   * Hot path: recording, no fence up, and no agent in the call still to be admitted under their
   * cap (a transfer into a recording call: nothing is kept until the new agent is admitted).
   */
  #keeping(): boolean {
    return this.#phase.name === 'recording' && this.#fence === undefined && this.gate.decision?.needsAdmission !== true;
  }

  /**
   * True from an opening until the worker confirmed the packets before it were delivered (see
   * `#raiseFence`), and until every media thread holding a track of the call has its run.
   */
  get fenced(): boolean {
    if (this.#fence !== undefined) return true;
    for (const g of this.#gated.values()) if (g.track.opening) return true;
    return false;
  }

  get erased(): boolean {
    return isErased(this.#phase);
  }

  /**
   * Re-decides the gate at `nowMs` and applies the result before returning: runs end (segments
   * flushed) on closing, begin on opening. Returns the gate's transition for tests; the audit
   * and the metrics follow the recording phase, not the gate's flips.
   */
  evaluate(nowMs: number, recorderReasons: RecorderReason[]): GateTransition | undefined {
    if (this.#phase.name === 'ended') return undefined;
    const transition = this.gate.evaluate(nowMs, recorderReasons);
    if (transition) this.#log.debug({ gate: transition.to, reasons: transition.reasons, run: transition.runIndex }, 'gate decision changed');
    const phase = this.#phase;
    const open = this.gate.isOpen;
    switch (phase.name) {
      case 'closed':
        if (open && this.gate.decision?.needsAdmission) this.#admit(nowMs, phase.candidateId);
        break;
      case 'cap-unknown':
        if (open && this.gate.decision?.needsAdmission && nowMs >= phase.retryAtMs) this.#admit(nowMs, phase.candidateId);
        break;
      case 'admitted':
        if (open && this.gate.decision?.needsAdmission) this.#admitJoined(nowMs, phase.recordingId);
        else if (open) this.#enter({ name: 'recording', recordingId: phase.recordingId, run: this.gate.runIndex }, nowMs);
        break;
      case 'recording':
        if (!open) this.#enter({ name: 'admitted', recordingId: phase.recordingId }, nowMs, this.gate.reasons);
        else if (this.gate.decision?.needsAdmission) this.#admitJoined(nowMs, phase.recordingId);
        break;
      default:
        // admitting: waits for the ledger; refused and erased never record again in this call.
        break;
    }
    this.#syncGates();
    this.#report();
    return transition;
  }

  flushMetrics(): void {
    for (const t of this.tracks.values()) t.flushMetrics();
  }

  tick(nowMs: number): void {
    if (this.#phase.name !== 'recording') return;
    for (const t of this.tracks.values()) t.tick(nowMs);
  }

  /**
   * Consent withdrawn with `erase` (R5, R9): stop at once, discard what is in flight, and delete
   * everything this call recorded, every participant's track (the agent's side can hold the
   * customer's words too), keys and spool copies included. Resolves with the store's receipt
   * (undefined when nothing was recorded).
   */
  erase(reason: string): Promise<DeletionReceipt | undefined> {
    return this.#stopAndDelete('erasure', reason);
  }

  /**
   * A deletion of this call's recording (team lead, operator, expiry; R7 `deleted`): stop at
   * once, discard what is in flight, delete the recording (or only `participantId`'s part, the
   * rest then finalised as it is) through the store, keys first. Never records again in this call.
   */
  deleteRecording(reason: string, participantId?: string): Promise<DeletionReceipt | undefined> {
    return this.#stopAndDelete('deletion', reason, participantId);
  }

  async #stopAndDelete(cause: ErasureCause, reason: string, participantId?: string): Promise<DeletionReceipt | undefined> {
    const phase = this.#phase;
    const recordingId = recordingIdOf(phase);
    if (phase.name === 'ended') this.#enter({ ...phase, erased: true }, Date.now());
    else {
      // A second stop keeps the first cause: a deletion after an erasure still reports the customer's act.
      const keptCause = phase.name === 'erased' ? phase.cause : cause;
      this.#enter({ name: 'erased', recordingId, refused: phase.name === 'refused' || (phase.name === 'erased' && phase.refused), cause: keptCause }, Date.now(), ['erased']);
    }
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.settled()));
    this.#report();
    if (!recordingId) return undefined;
    await this.#begun?.catch(() => undefined);
    const receipt = await this.#d.store.deleteRecording(recordingId, { ...(participantId === undefined ? {} : { participantId }), reason, actor: 'system' });
    if (participantId !== undefined) {
      // The other participants' parts stay: their recording ends here, as it is.
      await this.#d.store.endRecording(recordingId).catch((err: Error) => this.#log.debug({ err: err.message }, 'rest of the recording not finalised after a participant deletion'));
    }
    this.#d.metrics?.erasures.inc({ cause: cause === 'erasure' ? 'consent-withdrawn' : 'deletion' });
    this.#d.onAudit({ type: cause === 'erasure' ? 'recording.erased' : 'recording.deleted-on-request', callId: this.callId, recordingId, details: { reason, ...(participantId === undefined ? {} : { participantId }) } });
    return receipt ?? undefined;
  }

  /**
   * Ends the call's recording: seals open segments and waits until each is stored or spooled.
   * `reportEnded`: the call's media ended, and R7 says so (`call-ended`) if nothing has yet.
   */
  async close(nowMs: number, options: { reportEnded?: boolean } = {}): Promise<void> {
    const phase = this.#phase;
    if (phase.name === 'ended') return;
    this.#enter({ name: 'ended', recordingId: recordingIdOf(phase), erased: phase.name === 'erased' }, nowMs, ['ended']);
    // R7's last word on the call. A `call.ended` fact has said it already (the gate closed with
    // `call-ended`); a call whose last leg went (the gateway hung up, the last page left) has not.
    const last = this.#lastReported;
    if (options.reportEnded === true && (last === undefined || last.recording || !last.reasons.includes('call-ended'))) {
      this.#sendReport({ recording: false, reasons: ['call-ended'] });
    }
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.close(nowMs)));
    // Read again: an erasure may have arrived while the runs were sealed.
    const ended = this.#phase;
    if (ended.name === 'ended' && ended.recordingId && !ended.erased) {
      const recordingId = ended.recordingId;
      await this.#begun?.catch(() => undefined);
      await this.#d.store.endRecording(recordingId).then(
        (manifest) => this.#d.onRecording?.({ type: 'ended', recordingId, at: Date.now(), ...(manifest === undefined ? {} : { final: summarizeManifest(manifest) }) }),
        (err: Error) => {
          if (isOptinError(err, 'RECORDING_DELETED')) return; // deleted elsewhere meanwhile: nothing to finalise
          this.#log.warn({ err: err.message }, 'manifest not finalised (the store repairs it on the next start)');
          this.#d.onRecording?.({ type: 'interrupted', recordingId, at: Date.now() });
        },
      );
    }
    this.#tap?.close();
    for (const t of this.#taps.values()) t.close?.();
  }

  /**
   * The one place the phase changes. Entering `recording` starts every track's run; leaving it
   * ends them (or discards them, on erasure). Those two moments, and only they, are audited as
   * `gate.transition` and counted, with the reasons the recording stopped.
   */
  #enter(next: RecordingPhase, nowMs: number, stopReasons: readonly RecordingStopReason[] = []): void {
    const from = this.#phase;
    assertCanEnter(from.name, next.name);
    this.#phase = next;
    if (from.name !== next.name) this.#log.info({ phase: next.name, from: from.name, ...(stopReasons.length ? { reasons: stopReasons } : {}) }, 'recording phase');
    if (next.name === 'recording') {
      this.#openedAtMs = nowMs;
      this.#raiseFence();
      for (const t of this.tracks.values()) t.startRun(next.recordingId, next.run, nowMs);
      this.#auditRecording(nowMs, next.recordingId, next.run, []);
    } else if (from.name === 'recording') {
      if (next.name === 'erased') for (const t of this.tracks.values()) t.discardRun();
      else this.#endRuns(nowMs);
      this.#auditRecording(nowMs, from.recordingId, from.run, stopReasons);
    }
    this.#syncGates();
  }

  /**
   * The per-packet gate of the direct tracks in media threads, written to shared memory: the same
   * verdict a packet gets here (`#keeping`, and the speaker in the call as the control plane knows
   * it, and their stream open). Called after every change of any of those; a closing takes effect
   * on the next packet any thread reads.
   */
  #syncGates(): void {
    if (this.#gated.size === 0) return;
    const keeping = this.#keeping();
    const call = keeping ? this.#d.state.call(this.callId) : undefined;
    for (const [participantId, g] of this.#gated) g.track.setWritable(keeping && g.open && isPresent(call, participantId));
  }

  /** R11: a recording started (no reasons) or stopped (why), with the evidence an opening relied on. */
  #auditRecording(nowMs: number, recordingId: string, run: number, stopReasons: readonly RecordingStopReason[]): void {
    const started = stopReasons.length === 0;
    this.#d.metrics?.gateTransitions.inc({ to: started ? 'open' : 'closed', reason: stopReasons[0] ?? 'open' });
    this.#d.onAudit({
      type: 'gate.transition',
      callId: this.callId,
      recordingId,
      details: {
        from: started ? 'closed' : 'open',
        to: started ? 'open' : 'closed',
        reasons: [...stopReasons],
        run,
        at: new Date(nowMs).toISOString(),
        // The consent evidence the opening relied on (method, time, info version: no personal data).
        evidence: started ? (this.gate.decision?.evidence ?? []).map((e) => ({ ...e })) : undefined,
      },
    });
  }

  /**
   * R4 at a reopening, by the packet's receive time rather than its delivery to Node. The gate
   * decides in Node; packets the worker received before that instant but that were still queued
   * in its channel (event-loop lag: a GC pause, a burst of work) would be delivered after the
   * opening and kept. The worker writes the tap's packets and its answers to requests into one
   * ordered channel, so every packet it took before handling a request sent now is delivered
   * before the answer: until the answer (and the packets read with it), packets are dropped. The cost is the channel's round
   * trip of audio at each opening (well under a millisecond idle; the lag itself under load).
   * A packet still unread in the worker's UDP socket when it handles the request can pass: the
   * remaining window is the worker's own read latency, not Node's lag.
   */
  #raiseFence(): void {
    const tap = this.#tap;
    if (!tap) return;
    const fence = {};
    this.#fence = fence;
    tap.getStats().then(
      () => {
        // mediasoup's Channel emits notifications (the packets) from setImmediate but resolves
        // responses at once, so the packets read with the answer are still queued: lift the
        // fence from a setImmediate queued after theirs (FIFO), not here.
        setImmediate(() => {
          if (this.#fence === fence) this.#fence = undefined;
          this.#syncGates();
        });
      },
      (err: Error) => {
        // The tap is gone (the call is ending): the fence stays up, nothing more is kept.
        if (this.#fence === fence) this.#log.warn({ err: err.message }, 'gate fence not lifted: the tap did not answer');
      },
    );
  }

  #endRuns(nowMs: number): void {
    for (const t of this.tracks.values()) this.#trackEnding(t.endRun(nowMs));
  }

  /**
   * Asks the control plane to admit a recording under the monthly cap. The answer can land in any
   * phase: the call may have been erased or ended meanwhile, and then nothing is begun (no
   * manifest for a recording that will never hold audio, and none naming the participants of an
   * erased call). `candidateId`: the id asked for before, whose answer was lost; asking again
   * for it is idempotent at the control plane (never counted twice).
   */
  #admit(nowMs: number, previous?: string): void {
    const candidateId = previous ?? `r_${randomBytes(8).toString('hex')}`;
    this.#enter({ name: 'admitting', candidateId }, nowMs);
    const stillAdmitting = (): boolean => this.#phase.name === 'admitting' && this.#phase.candidateId === candidateId;
    this.#d.admitter.admitCall(this.#d.state, this.callId, candidateId, nowMs).then(
      (ok) => {
        const phase = this.#phase;
        if (!stillAdmitting()) {
          if (!ok && phase.name === 'erased' && !phase.refused) this.#enter({ ...phase, refused: true }, nowMs);
          this.#log.info({ admitted: ok, phase: phase.name }, 'cap admission answered after the call left admission; nothing begun');
        } else if (!ok) {
          this.#enter({ name: 'refused' }, nowMs);
          this.#log.info('recording refused: monthly cap reached');
          // R11: the gate was open and the cap decided against recording (no recording started).
          this.#d.onAudit({ type: 'recording.refused', callId: this.callId, details: { reasons: ['cap-reached'], at: new Date(nowMs).toISOString() } });
        } else {
          this.#enter({ name: 'admitted', recordingId: candidateId }, nowMs);
          this.#log.info({ recordingId: candidateId }, 'recording admitted under the monthly cap');
          this.#begun = this.#begin(candidateId, nowMs);
        }
        // Always: the admission moved the agents' monthly counts, which their other calls are judged by.
        this.#d.requestEvaluate(this.callId);
      },
      (err: Error) => {
        // Fail closed: without the control plane's decision we cannot know the cap holds.
        if (stillAdmitting()) {
          if (isOptinError(err, 'CONTROL_NOT_FRESH')) {
            // The stream went away: the gate is closed anyway; asked again (same id) once fresh.
            this.#enter({ name: 'closed', candidateId }, nowMs);
          } else {
            // Counted from the question (the recorder's clock): a timeout already waited its share.
            this.#enter({ name: 'cap-unknown', candidateId, retryAtMs: nowMs + CAP_RETRY_MS }, nowMs);
            this.#report();
            setTimeout(() => this.#d.requestEvaluate(this.callId), CAP_RETRY_MS).unref();
          }
        }
        this.#log.warn({ err: err.message }, 'cap admission not decided; the gate stays closed');
        this.#d.requestEvaluate(this.callId);
      },
    );
  }

  /**
   * An agent joined the admitted call (a transfer): the same recording is admitted for them under
   * their own monthly cap (R6; the control plane counts only the agents not yet admitted for it).
   * Until the answer nothing is kept (`#keeping`: packets are dropped at arrival and an open run
   * fills them as silence); a refusal closes the gate for the call (`cap-reached`); a question
   * left unanswered is asked again after CAP_RETRY_MS.
   */
  #admitJoined(nowMs: number, recordingId: string): void {
    if (this.#joinAdmitting || nowMs < this.#joinRetryAtMs) return;
    this.#joinAdmitting = true;
    this.#d.admitter
      .admitCall(this.#d.state, this.callId, recordingId, nowMs)
      .then(
        (ok) => {
          this.#log.info({ recordingId, admitted: ok }, 'agent who joined the call admitted under their cap');
          if (!ok) this.#d.onAudit({ type: 'recording.refused', callId: this.callId, recordingId, details: { reasons: ['cap-reached'], joined: true, at: new Date(nowMs).toISOString() } });
        },
        (err: Error) => {
          this.#joinRetryAtMs = nowMs + CAP_RETRY_MS;
          setTimeout(() => this.#d.requestEvaluate(this.callId), CAP_RETRY_MS).unref();
          this.#log.warn({ err: err.message }, 'cap admission of the agent who joined not decided; nothing kept meanwhile');
        },
      )
      .finally(() => {
        this.#joinAdmitting = false;
        this.#d.requestEvaluate(this.callId);
      });
  }

  async #begin(recordingId: string, nowMs: number): Promise<{ expiresAtMs: number } | void> {
    const call = this.#d.state.call(this.callId);
    const participants = call ? [...call.participants.values()] : [];
    // R6 evidence for the DPO: the windows around this recording and the cap it was admitted under.
    const DAY = 86_400_000;
    const schedules = participants.flatMap((p) => (p.role === 'agent' ? [this.#d.state.schedule(p.subjectId)] : [])).filter((s) => s !== undefined);
    const policy = {
      agentWindows: schedules.flatMap((s) => s.windows.filter((w) => w.end > nowMs - DAY && w.start < nowMs + DAY)).slice(0, 512),
      monthlyCap: schedules.length ? Math.min(...schedules.map((s) => s.monthlyCap)) : 0,
    };
    const stored = participants.map((p) => ({
      participantId: p.participantId,
      role: p.role,
      subjectId: p.subjectId,
      ...(p.role === 'agent' && p.teamLeadId ? { teamLeadId: p.teamLeadId } : {}),
    }));
    this.#startedAtMs = nowMs;
    for (const p of stored) this.#inManifest.add(p.participantId);
    return this.#d.store
      .beginRecording({
        recordingId,
        callId: this.callId,
        startedAt: nowMs,
        policy,
        participants: stored,
        consentEvidence: (this.gate.decision?.evidence ?? []).map((e) => ({ ...e }) as Record<string, string | number | boolean | null>),
      })
      .then(
        (result) => {
          // An erasure that overtook the manifest write: the ledger speaks for this recording now.
          if (!isErased(this.#phase)) this.#d.onRecording?.({ type: 'begun', recordingId, startedAt: nowMs, expiresAt: result ? result.expiresAtMs : undefined, participants: stored });
          return result;
        },
        (err: Error) => {
          this.#log.error({ err: err.message }, 'recording manifest not written');
          throw err;
        },
      );
  }

  /**
   * Taps a participant's audio producer. A participant seen before whose producer changed (the
   * speaker reconnected: a page reload, a new SIP leg) is tapped again as the same participant:
   * the old tap stops, and if the call is recording the track continues in a new run of the same
   * recording (new jitter buffer and timeline anchor for the new SSRC and RTP clock), so R7's
   * "recording" stays true of every speaker. A new codec continues the track in a new
   * TrackRecorder, its segment numbering carried over.
   */
  async #tapLeg(leg: AudioLeg): Promise<void> {
    const pid = leg.participantId;
    const room = this.room;
    if (this.#phase.name === 'ended' || !this.#tap || !room || this.#taps.get(pid)?.producerId === leg.producer.id) return;
    const directTap = this.#tap;
    const claimed = await this.#claimTap(
      pid,
      leg.producer.id,
      () => directTap.consume({ producerId: leg.producer.id, rtpCapabilities: room.router.rtpCapabilities }),
      (c) => c.close(),
    );
    if (!claimed) return;
    const { tap, value: consumer } = claimed;
    const nowMs = Date.now();
    const existing = this.tracks.get(pid);
    const current = this.#trackForTap(pid, leg.codec, nowMs, existing instanceof TrackRecorder ? existing : undefined, (ex) =>
      this.#newTrack(pid, leg.codec, ex ? this.#retire(ex, nowMs) : undefined),
    );
    tap.consumer = consumer;
    tap.live = true;
    // Hot path: the gate is read at arrival; a closed gate drops the packet here.
    consumer.on('rtp', (packet) => {
      if (tap.live) current.onRtp(packet, Date.now(), this.#keeping());
    });
    this.#d.metrics?.tracksActive.inc({ codec: leg.codec });
    consumer.observer.once('close', () => this.#d.metrics?.tracksActive.dec({ codec: leg.codec }));
  }

  /**
   * The track a newly tapped producer of `pid` feeds. `same`: the participant's track if it can
   * take this producer; in the same codec it continues (a reconnect: a new run of the same
   * recording). Otherwise `create` makes a new one from the participant's previous track, if any,
   * carrying on its numbering; recording, it starts a run at once.
   */
  #trackForTap<T extends RecorderTrack>(pid: string, codec: AudioCodec, nowMs: number, same: T | undefined, create: (previous: RecorderTrack | undefined) => T): T {
    const phase = this.#phase;
    if (same && same.codec === codec) {
      if (phase.name === 'recording') {
        const run = this.gate.reserveRun();
        if (same.recording) this.#trackEnding(same.restartRun(nowMs, run));
        else same.startRun(phase.recordingId, run, this.#openedAtMs);
        this.#log.info({ participantId: pid, run }, 'speaker reconnected: recording continues in a new run');
      }
      return same;
    }
    const previous = this.tracks.get(pid);
    const track = create(previous);
    if (phase.name === 'recording') {
      const run = previous ? this.gate.reserveRun() : phase.run;
      track.startRun(phase.recordingId, run, this.#openedAtMs);
      if (previous) this.#log.info({ participantId: pid, run, codec }, 'speaker reconnected with another codec: recording continues in a new run');
    }
    return track;
  }

  /**
   * Claims the participant's tap for `producerId` before the await (the start() loop and the
   * 'audioproducer' event may both offer it), makes it, and retires the previous tap. Resolves
   * with nothing when the producer closed first (the speaker left again at once), a newer
   * producer superseded it meanwhile, or the call ended.
   */
  async #claimTap<T>(pid: string, producerId: string, make: () => Promise<T>, dispose: (value: T) => void): Promise<{ tap: Tap; value: T } | undefined> {
    const tap: Tap = { producerId, live: false, consumer: undefined };
    const previous = this.#taps.get(pid);
    this.#taps.set(pid, tap);
    let value: T;
    try {
      value = await make();
    } catch (err) {
      if (this.#taps.get(pid) === tap) {
        if (previous) this.#taps.set(pid, previous);
        else this.#taps.delete(pid);
      }
      this.#log.warn({ participantId: pid, err: (err as Error).message }, 'audio producer not tapped');
      return undefined;
    }
    if (this.#taps.get(pid) !== tap || (this.#phase as RecordingPhase).name === 'ended') {
      dispose(value);
      return undefined;
    }
    if (previous) {
      previous.live = false;
      previous.consumer?.close();
      previous.close?.();
    }
    return { tap, value };
  }

  /**
   * `#tapLeg` with the leg tapped into a media thread: the same claims, reconnect and codec
   * rules; the track is the thread's (a GatedTrack, its gate word written by `#syncGates`), put in
   * place before the consumer starts sending.
   */
  async #tapLegInThread(leg: AudioLeg, taps: ThreadTaps): Promise<void> {
    const pid = leg.participantId;
    const room = this.room;
    if (this.#phase.name === 'ended' || !room || this.#taps.get(pid)?.producerId === leg.producer.id) return;
    const claimed = await this.#claimTap(
      pid,
      leg.producer.id,
      () => taps.tap(room.router, this.callId, pid, leg.producer.id, leg.codec),
      (p) => p.close(),
    );
    if (!claimed) return;
    const { tap, value: pending } = claimed;
    const nowMs = Date.now();
    const track = this.#trackForTap(pid, leg.codec, nowMs, this.tracks.get(pid), (ex) => {
      if (ex) this.#retire(ex, nowMs);
      return this.#newGatedTrack(pid, leg.codec, ex);
    });
    this.#gated.set(pid, { track: track as GatedTrack, open: true });
    this.#syncGates();
    tap.consumer = pending.consumer;
    tap.close = pending.close;
    tap.live = true;
    await pending.connect().catch((err: Error) => this.#log.warn({ participantId: pid, err: err.message }, 'tap not connected'));
    this.#d.metrics?.tracksActive.inc({ codec: leg.codec });
    pending.consumer.observer.once('close', () => this.#d.metrics?.tracksActive.dec({ codec: leg.codec }));
  }

  /**
   * A participant's stream received directly, not through the SFU (SIPREC and plain SIP
   * recording legs: the SBC has already forked the RTP). The same per-packet gate as a tapped
   * leg, plus one check a tap does not need: the speaker must be a participant of the call as the
   * control plane knows it, since the SRC names speakers itself (a stream for a stranger is never
   * kept). `close` ends the stream's run (the call's recording goes on for the others); the same
   * participant's stream may open again later (a transfer back, a new payload type, another
   * codec by re-INVITE) and continues the same track in a new run: in another codec, a new
   * TrackRecorder (decoder, transcoder stream) takes over with the segment numbering and position
   * carried on, as for a tapped speaker who reconnects with another codec.
   */
  openDirectTrack(participantId: string, codec: AudioCodec): DirectTrack {
    if (this.#phase.name === 'ended') throw new OptinError('CALL_CLOSED', `call ${this.callId} has ended; open a new call for new media`);
    const nowMs = Date.now();
    const previous = this.tracks.get(participantId);
    let track = previous;
    if (previous && previous.codec !== codec) {
      const continueFrom = this.#retire(previous, nowMs);
      track = this.#d.directTracks ? this.#newGatedTrack(participantId, codec, previous) : this.#newTrack(participantId, codec, continueFrom);
      this.#log.info({ participantId, codec, from: previous.codec }, 'codec changed mid-call: the track continues in a new run');
    }
    track ??= this.#d.directTracks ? this.#newGatedTrack(participantId, codec) : this.#newTrack(participantId, codec);
    this.#d.metrics?.tracksActive.inc({ codec });
    const phase = this.#phase;
    // A reopened track takes a run index of its own: its previous run may still be flushing (its
    // transcoder stream is named by the run).
    if (phase.name === 'recording') track.startRun(phase.recordingId, previous ? this.gate.reserveRun() : phase.run, this.#openedAtMs);
    const t = track;
    const state = this.#d.state;
    const callId = this.callId;
    let open = true;
    const gated = this.#d.directTracks ? { track: t as GatedTrack, open: true } : undefined;
    if (gated) {
      this.#gated.set(participantId, gated);
      this.#syncGates();
    }
    return {
      push: (packet, arrivalMs) => {
        // A track in a media thread gets its packets there, never through here.
        if (t instanceof TrackRecorder) t.onRtp(packet, arrivalMs, open && this.#keeping() && isPresent(state.call(callId), participantId));
      },
      resumed: (atMs) => {
        if (open) t.resumedAt(atMs);
      },
      close: async () => {
        if (!open) return;
        open = false;
        if (gated) {
          gated.open = false;
          gated.track.setWritable(false);
        }
        this.#d.metrics?.tracksActive.dec({ codec });
        await t.endRun(Date.now());
      },
    };
  }

  #newTrack(participantId: string, codec: AudioCodec, continueFrom?: { nextSegment: number; position: number }): TrackRecorder {
    const track = new TrackRecorder({
      callId: this.callId,
      participantId,
      codec,
      segmentSamples: this.#d.segmentSamples,
      sink: this.#segmentSink(),
      encoder: this.#d.encoder,
      logger: this.#log,
      metrics: this.#d.metrics,
      // The Recorder reads the spool state on re-evaluation: a full spool closes every gate.
      onStoreError: () => this.#d.requestEvaluate(this.callId),
      ...(continueFrom ? { continueFrom } : {}),
    });
    this.tracks.set(participantId, track);
    return track;
  }

  /** A direct track in a media thread (gate closed until `#syncGates` opens it). */
  #newGatedTrack(participantId: string, codec: AudioCodec, previous?: RecorderTrack): GatedTrack {
    const track = this.#d.directTracks!.create({
      callId: this.callId,
      participantId,
      codec,
      segmentSamples: this.#d.segmentSamples,
      sink: this.#segmentSink(),
      onStoreError: () => this.#d.requestEvaluate(this.callId),
      previous,
    });
    this.tracks.set(participantId, track);
    return track;
  }

  /** Where a track's finished segments go: the store, once the recording's manifest lists the speaker. */
  #segmentSink(): SegmentStore {
    return {
      putSegment: async (meta, ogg) => {
        await this.#begun;
        if (!this.#inManifest.has(meta.participantId)) await this.#listJoined(meta.recordingId);
        const result = await this.#d.store.putSegment(meta, ogg);
        const sealedBytes = (result as { sealedBytes?: unknown } | undefined)?.sealedBytes;
        this.#d.onRecording?.({ type: 'segment', recordingId: meta.recordingId, participantId: meta.participantId, sealedBytes: typeof sealedBytes === 'number' ? sealedBytes : oggBytesOf(ogg) });
        return result;
      },
    };
  }

  /**
   * A participant who joined after the recording began (a transfer to another agent) is listed in
   * its manifest before their first segment is stored: the store's begin is idempotent and adds
   * who joined (and the catalogue then lists the recording for the new agent and their team lead,
   * R10). Only someone with a segment to store is added: an agent the gate never recorded is not.
   */
  async #listJoined(recordingId: string): Promise<void> {
    const again = this.#begin(recordingId, this.#startedAtMs);
    this.#begun = again;
    await again;
  }

  /**
   * The speaker's media comes in another codec: the old track seals its run and closes once its
   * segments are handed over; a new one (decoder, transcoder stream) carries on its segment
   * numbering and position.
   */
  #retire(previous: RecorderTrack, nowMs: number): { nextSegment: number; position: number } | undefined {
    const ending = previous.endRun(nowMs);
    this.#trackEnding(ending.then(() => previous.close(nowMs)));
    // Read right after endRun, synchronously. A track in a media thread is continued there instead
    // (the factory gets `previous`: the thread reads its numbers in order with the run's end).
    return previous instanceof TrackRecorder ? previous.continuation : undefined;
  }

  /** A run (or a retired track) still handing segments over: close and erase wait for it. */
  #trackEnding(p: Promise<void>): void {
    this.#ending.add(p);
    void p.finally(() => this.#ending.delete(p));
  }

  #report(): void {
    const report = reportOf(this.#phase, this.gate.reasons);
    if (report !== undefined) this.#sendReport(report);
  }

  #sendReport(report: { recording: boolean; reasons: RecordingReason[] }): void {
    const recordingId = this.recordingId;
    const last = this.#lastReported;
    if (last?.recording === report.recording && last.recordingId === recordingId && last.reasons.join() === report.reasons.join()) return;
    this.#lastReported = { ...report, recordingId };
    this.#d.onReport(this.callId, { ...report, ...(recordingId ? { recordingId } : {}) });
  }
}

/** In the call now, as the control plane knows it: listed, and not left (a transfer away). */
function isPresent(call: CallState | undefined, participantId: string): boolean {
  return call !== undefined && call.participants.has(participantId) && !call.left.has(participantId);
}
