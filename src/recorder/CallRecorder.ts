import { randomBytes } from 'node:crypto';
import type { types } from 'mediasoup';
import { GateMachine, type ClosedReason, type GateTransition } from '../gate/GateMachine.ts';
import type { PolicyState } from '../gate/PolicyState.ts';
import type { RecorderReason } from '../gate/reasons.ts';
import type { CallRoom, AudioLeg } from '../sfu/CallRoom.ts';
import { TrackRecorder, type OpusEncoderPool, type SegmentSink } from './TrackRecorder.ts';
import { assertCanEnter, isErased, recordingIdOf, reportOf, type RecordingPhase, type RecordingStopReason } from './RecordingPhase.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';

/** What the call needs from storage (RecordingStore satisfies it). */
export interface CallStore extends SegmentSink {
  beginRecording(input: {
    recordingId: string;
    callId: string;
    startedAt: number;
    participants: { participantId: string; role: 'agent' | 'customer'; subjectId: string; teamLeadId?: string }[];
    consentEvidence: Record<string, string | number | boolean | null>[];
    policy?: { agentWindows: { start: number; end: number }[]; monthlyCap: number };
  }): Promise<unknown>;
  endRecording(recordingId: string): Promise<unknown>;
  deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<unknown>;
}

/** Admits a recording under the agents' monthly caps (CapLedger satisfies it). */
export interface Admitter {
  admitCall(state: PolicyState, callId: string, recordingId: string, now?: number): Promise<boolean>;
}

export interface CallRecorderDeps {
  state: PolicyState;
  store: CallStore;
  admitter: Admitter;
  encoder?: OpusEncoderPool;
  segmentSamples: number;
  logger: Logger;
  metrics?: Metrics;
  /** Called on every change of what the call reports (R7); the Recorder sends it upstream. */
  onReport: (callId: string, report: { recording: boolean; reasons: ClosedReason[]; recordingId?: string }) => void;
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
  readonly room: CallRoom;
  readonly gate: GateMachine;
  readonly tracks = new Map<string, TrackRecorder>();
  readonly #d: CallRecorderDeps;
  readonly #log: Logger;
  #tap: types.DirectTransport | undefined;
  #phase: RecordingPhase = { name: 'closed' };
  /** The manifest write of the admitted recording (segments wait for it). */
  #begun: Promise<unknown> | undefined;
  #lastReport = '';
  readonly #ending = new Set<Promise<void>>();
  /**
   * Raised at every opening until the mediasoup worker answers a request sent at that instant:
   * packets it delivers before the answer may have reached it while the gate was still closed
   * (see `#raiseFence`), so they are dropped like any packet of a closed gate.
   */
  #fence: object | undefined;
  /** The producer tapped for each participant (the newest one: a reconnect replaces it). */
  readonly #taps = new Map<string, Tap>();

  constructor(room: CallRoom, deps: CallRecorderDeps) {
    this.callId = room.callId;
    this.room = room;
    this.#d = deps;
    this.#log = deps.logger.child({ callId: room.callId });
    this.gate = new GateMachine(deps.state, room.callId);
  }

  async start(): Promise<void> {
    this.#tap = await this.room.router.createDirectTransport();
    this.room.on('audioproducer', (leg) => void this.#tapLeg(leg));
    for (const leg of this.room.legs) await this.#tapLeg(leg);
  }

  get phase(): RecordingPhase {
    return this.#phase;
  }

  get recordingId(): string | undefined {
    return recordingIdOf(this.#phase);
  }

  /** True while packets arriving now are kept. */
  get writing(): boolean {
    return this.#phase.name === 'recording' && this.#fence === undefined;
  }

  /** True from an opening until the worker confirmed the packets before it were delivered (see `#raiseFence`). */
  get fenced(): boolean {
    return this.#fence !== undefined;
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
        if (open && this.gate.decision?.needsAdmission) this.#admit(nowMs);
        break;
      case 'admitted':
        if (open) this.#enter({ name: 'recording', recordingId: phase.recordingId, run: this.gate.runIndex }, nowMs);
        break;
      case 'recording':
        if (!open) this.#enter({ name: 'admitted', recordingId: phase.recordingId }, nowMs, this.gate.reasons);
        break;
      default:
        // admitting: waits for the ledger; refused and erased never record again in this call.
        break;
    }
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
   * customer's words too), keys and spool copies included.
   */
  async erase(reason: string): Promise<unknown> {
    const phase = this.#phase;
    const recordingId = recordingIdOf(phase);
    if (phase.name === 'ended') this.#enter({ ...phase, erased: true }, Date.now());
    else this.#enter({ name: 'erased', recordingId, refused: phase.name === 'refused' || (phase.name === 'erased' && phase.refused) }, Date.now(), ['erased']);
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.settled()));
    this.#report();
    if (!recordingId) return undefined;
    await this.#begun?.catch(() => undefined);
    const receipt = await this.#d.store.deleteRecording(recordingId, { reason, actor: 'system' });
    this.#d.metrics?.erasures.inc({ cause: 'consent-withdrawn' });
    this.#d.onAudit({ type: 'recording.erased', callId: this.callId, recordingId, details: { reason } });
    return receipt;
  }

  /** Ends the call's recording: seals open segments and waits until each is stored or spooled. */
  async close(nowMs: number): Promise<void> {
    const phase = this.#phase;
    if (phase.name === 'ended') return;
    this.#enter({ name: 'ended', recordingId: recordingIdOf(phase), erased: phase.name === 'erased' }, nowMs, ['ended']);
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.close(nowMs)));
    // Read again: an erasure may have arrived while the runs were sealed.
    const ended = this.#phase;
    if (ended.name === 'ended' && ended.recordingId && !ended.erased) {
      await this.#begun?.catch(() => undefined);
      await this.#d.store.endRecording(ended.recordingId).catch((err: Error) =>
        this.#log.warn({ err: err.message }, 'manifest not finalised (the store repairs it on the next start)'),
      );
    }
    this.#tap?.close();
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
      this.#raiseFence();
      for (const t of this.tracks.values()) t.startRun(next.recordingId, next.run);
      this.#auditRecording(nowMs, next.recordingId, next.run, []);
    } else if (from.name === 'recording') {
      if (next.name === 'erased') for (const t of this.tracks.values()) t.discardRun();
      else this.#endRuns(nowMs);
      this.#auditRecording(nowMs, from.recordingId, from.run, stopReasons);
    }
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
   * Asks the cap ledger for a recording. The answer can land in any phase: the call may have been
   * erased or ended meanwhile, and then nothing is begun (no manifest for a recording that will
   * never hold audio, and none naming the participants of an erased call).
   */
  #admit(nowMs: number): void {
    const candidateId = `r_${randomBytes(8).toString('hex')}`;
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
        // Fail closed: without a durable cap count we cannot know the cap holds. Retry later.
        if (stillAdmitting()) this.#enter({ name: 'closed' }, nowMs);
        this.#log.warn({ err: err.message }, 'cap admission failed; gate stays closed');
        setTimeout(() => this.#d.requestEvaluate(this.callId), 1000).unref();
      },
    );
  }

  async #begin(recordingId: string, nowMs: number): Promise<unknown> {
    const call = this.#d.state.call(this.callId);
    const participants = call ? [...call.participants.values()] : [];
    // R6 evidence for the DPO: the windows around this recording and the cap it was admitted under.
    const DAY = 86_400_000;
    const schedules = participants.flatMap((p) => (p.role === 'agent' ? [this.#d.state.schedule(p.subjectId)] : [])).filter((s) => s !== undefined);
    const policy = {
      agentWindows: schedules.flatMap((s) => s.windows.filter((w) => w.end > nowMs - DAY && w.start < nowMs + DAY)).slice(0, 512),
      monthlyCap: schedules.length ? Math.min(...schedules.map((s) => s.monthlyCap)) : 0,
    };
    return this.#d.store
      .beginRecording({
        recordingId,
        callId: this.callId,
        startedAt: nowMs,
        policy,
        participants: participants.map((p) => ({
          participantId: p.participantId,
          role: p.role,
          subjectId: p.subjectId,
          ...(p.role === 'agent' && p.teamLeadId ? { teamLeadId: p.teamLeadId } : {}),
        })),
        consentEvidence: (this.gate.decision?.evidence ?? []).map((e) => ({ ...e }) as Record<string, string | number | boolean | null>),
      })
      .catch((err: Error) => {
        this.#log.error({ err: err.message }, 'recording manifest not written');
        throw err;
      });
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
    if (this.#phase.name === 'ended' || !this.#tap || this.#taps.get(pid)?.producerId === leg.producer.id) return;
    // Claimed before the await: the start() loop and the 'audioproducer' event may both offer it.
    const tap: Tap = { producerId: leg.producer.id, live: false, consumer: undefined };
    const previous = this.#taps.get(pid);
    this.#taps.set(pid, tap);
    let consumer: types.Consumer;
    try {
      consumer = await this.#tap.consume({ producerId: leg.producer.id, rtpCapabilities: this.room.router.rtpCapabilities });
    } catch (err) {
      // The producer closed before it could be tapped (the speaker left again at once).
      if (this.#taps.get(pid) === tap) {
        if (previous) this.#taps.set(pid, previous);
        else this.#taps.delete(pid);
      }
      this.#log.warn({ participantId: pid, err: (err as Error).message }, 'audio producer not tapped');
      return;
    }
    if (this.#taps.get(pid) !== tap || (this.#phase as RecordingPhase).name === 'ended') {
      consumer.close(); // superseded by a newer producer meanwhile, or the call ended
      return;
    }
    if (previous) {
      previous.live = false;
      previous.consumer?.close();
    }
    const nowMs = Date.now();
    const phase = this.#phase;
    let track = this.tracks.get(pid);
    if (track && track.codec === leg.codec) {
      if (phase.name === 'recording') {
        const run = this.gate.reserveRun();
        if (track.recording) this.#trackEnding(track.restartRun(nowMs, run));
        else track.startRun(phase.recordingId, run);
        this.#log.info({ participantId: pid, run }, 'speaker reconnected: recording continues in a new run');
      }
    } else {
      let continueFrom: { nextSegment: number; position: number } | undefined;
      if (track) {
        const retired = track;
        const ending = retired.endRun(nowMs);
        continueFrom = retired.continuation;
        this.#trackEnding(ending.then(() => retired.close(nowMs)));
      }
      track = this.#newTrack(leg, continueFrom);
      if (phase.name === 'recording') {
        const run = continueFrom ? this.gate.reserveRun() : phase.run;
        track.startRun(phase.recordingId, run);
        if (continueFrom) this.#log.info({ participantId: pid, run, codec: leg.codec }, 'speaker reconnected with another codec: recording continues in a new run');
      }
    }
    const current = track;
    tap.consumer = consumer;
    tap.live = true;
    // Hot path: the gate is read at arrival; a closed gate drops the packet here.
    consumer.on('rtp', (packet) => {
      if (tap.live) current.onRtp(packet, Date.now(), this.#phase.name === 'recording' && this.#fence === undefined);
    });
    this.#d.metrics?.tracksActive.inc({ codec: leg.codec });
    consumer.observer.once('close', () => this.#d.metrics?.tracksActive.dec({ codec: leg.codec }));
  }

  #newTrack(leg: AudioLeg, continueFrom: { nextSegment: number; position: number } | undefined): TrackRecorder {
    const sink: SegmentSink = {
      putSegment: async (meta, ogg) => {
        await this.#begun;
        return this.#d.store.putSegment(meta, ogg);
      },
    };
    const track = new TrackRecorder({
      callId: this.callId,
      participantId: leg.participantId,
      codec: leg.codec,
      segmentSamples: this.#d.segmentSamples,
      sink,
      encoder: this.#d.encoder,
      logger: this.#log,
      metrics: this.#d.metrics,
      // The Recorder reads the spool state on re-evaluation: a full spool closes every gate.
      onStoreError: () => this.#d.requestEvaluate(this.callId),
      ...(continueFrom ? { continueFrom } : {}),
    });
    this.tracks.set(leg.participantId, track);
    return track;
  }

  /** A run (or a retired track) still handing segments over: close and erase wait for it. */
  #trackEnding(p: Promise<void>): void {
    this.#ending.add(p);
    void p.finally(() => this.#ending.delete(p));
  }

  #report(): void {
    const report = reportOf(this.#phase, this.gate.reasons);
    if (report === undefined) return;
    const recordingId = this.recordingId;
    const key = `${report.recording}|${report.reasons.join(',')}|${recordingId ?? ''}`;
    if (key === this.#lastReport) return;
    this.#lastReport = key;
    this.#d.onReport(this.callId, { ...report, ...(recordingId ? { recordingId } : {}) });
  }
}
