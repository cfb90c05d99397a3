import { randomBytes } from 'node:crypto';
import type { types } from 'mediasoup';
import { GateMachine, type ClosedReason, type GateTransition } from '../gate/GateMachine.ts';
import type { PolicyState } from '../gate/PolicyState.ts';
import type { RecorderReason } from '../gate/reasons.ts';
import type { CallRoom, AudioLeg } from '../sfu/CallRoom.ts';
import { TrackRecorder, type OpusEncoderPool, type SegmentSink } from './TrackRecorder.ts';
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
  /** Gate transitions and erasures, for the audit trail. */
  onAudit: (entry: { type: string; callId: string; recordingId?: string; details: Record<string, unknown> }) => void;
  /** Asks the Recorder to re-evaluate this call soon (admission finished, storage error). */
  requestEvaluate: (callId: string) => void;
}

type Admission = 'none' | 'pending' | 'admitted' | 'refused';

/**
 * One call under the recorder: its gate, its participants' tracks, and its recording. The gate
 * is evaluated synchronously on every control change and on the shared tick; a closing decision
 * ends every track's run before the event loop delivers the next packet.
 */
export class CallRecorder {
  readonly callId: string;
  readonly room: CallRoom;
  readonly gate: GateMachine;
  readonly tracks = new Map<string, TrackRecorder>();
  readonly #d: CallRecorderDeps;
  readonly #log: Logger;
  #tap: types.DirectTransport | undefined;
  #recordingId: string | undefined;
  #begun: Promise<unknown> | undefined;
  #admission: Admission = 'none';
  #writing = false;
  #erased = false;
  #closed = false;
  #lastReport = '';
  readonly #ending = new Set<Promise<void>>();

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

  get recordingId(): string | undefined {
    return this.#recordingId;
  }

  /** True while packets arriving now are kept. */
  get writing(): boolean {
    return this.#writing;
  }

  get erased(): boolean {
    return this.#erased;
  }

  /**
   * Re-decides the gate at `nowMs` and applies the result before returning: runs end (segments
   * flushed) on closing, begin on opening. Returns the transition for metrics and tests.
   */
  evaluate(nowMs: number, recorderReasons: RecorderReason[]): GateTransition | undefined {
    if (this.#closed) return undefined;
    const transition = this.gate.evaluate(nowMs, recorderReasons);
    if (transition) {
      this.#log.info({ gate: transition.to, reasons: transition.reasons, run: transition.runIndex }, 'gate transition');
      this.#d.metrics?.gateTransitions.inc({ to: transition.to, reason: transition.reasons[0] ?? 'open' });
      this.#d.onAudit({
        type: 'gate.transition',
        callId: this.callId,
        recordingId: this.#recordingId,
        details: {
          from: transition.from,
          to: transition.to,
          reasons: [...transition.reasons],
          run: transition.runIndex,
          at: new Date(nowMs).toISOString(),
          // The consent evidence the opening relied on (method, time, info version: no personal data).
          evidence: transition.to === 'open' ? transition.decision.evidence.map((e) => ({ ...e })) : undefined,
        },
      });
    }
    const decision = this.gate.decision;
    if (this.gate.isOpen && decision?.needsAdmission && this.#admission === 'none' && !this.#erased) this.#admit(nowMs);

    const shouldWrite = this.gate.isOpen && this.#admission === 'admitted' && !this.#erased;
    if (shouldWrite && !this.#writing) {
      this.#writing = true;
      for (const t of this.tracks.values()) t.startRun(this.#recordingId!, this.gate.runIndex);
    } else if (!shouldWrite && this.#writing) {
      this.#endRuns(nowMs);
    }
    this.#report();
    return transition;
  }

  flushMetrics(): void {
    for (const t of this.tracks.values()) t.flushMetrics();
  }

  tick(nowMs: number): void {
    if (!this.#writing) return;
    for (const t of this.tracks.values()) t.tick(nowMs);
  }

  /**
   * Consent withdrawn with `erase` (R5, R9): stop at once, discard what is in flight, and delete
   * everything this call recorded, every participant's track (the agent's side can hold the
   * customer's words too), keys and spool copies included.
   */
  async erase(reason: string): Promise<unknown> {
    this.#erased = true;
    this.#writing = false;
    for (const t of this.tracks.values()) t.discardRun();
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.settled()));
    this.#report();
    const recordingId = this.#recordingId;
    if (!recordingId) return undefined;
    await this.#begun?.catch(() => undefined);
    const receipt = await this.#d.store.deleteRecording(recordingId, { reason, actor: 'system' });
    this.#d.metrics?.erasures.inc({ cause: 'consent-withdrawn' });
    this.#d.onAudit({ type: 'recording.erased', callId: this.callId, recordingId, details: { reason } });
    return receipt;
  }

  /** Ends the call's recording: seals open segments and waits until each is stored or spooled. */
  async close(nowMs: number): Promise<void> {
    if (this.#closed) return;
    this.#endRuns(nowMs);
    this.#closed = true;
    await Promise.allSettled([...this.#ending]);
    await Promise.allSettled([...this.tracks.values()].map((t) => t.close(nowMs)));
    if (this.#recordingId && !this.#erased) {
      await this.#begun?.catch(() => undefined);
      await this.#d.store.endRecording(this.#recordingId).catch((err: Error) =>
        this.#log.warn({ err: err.message }, 'manifest not finalised (the store repairs it on the next start)'),
      );
    }
    this.#tap?.close();
  }

  #endRuns(nowMs: number): void {
    this.#writing = false;
    for (const t of this.tracks.values()) {
      const p = t.endRun(nowMs);
      this.#ending.add(p);
      void p.finally(() => this.#ending.delete(p));
    }
  }

  #admit(nowMs: number): void {
    this.#admission = 'pending';
    const recordingId = `r_${randomBytes(8).toString('hex')}`;
    this.#d.admitter.admitCall(this.#d.state, this.callId, recordingId, nowMs).then(
      (ok) => {
        if (!ok) {
          this.#admission = 'refused';
          this.#log.info('recording refused: monthly cap reached');
        } else {
          this.#recordingId = recordingId;
          this.#admission = 'admitted';
          this.#log.info({ recordingId }, 'recording admitted under the monthly cap');
          this.#begun = this.#begin(recordingId, nowMs);
        }
        this.#d.requestEvaluate(this.callId);
      },
      (err: Error) => {
        // Fail closed: without a durable cap count we cannot know the cap holds. Retry later.
        this.#admission = 'none';
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

  async #tapLeg(leg: AudioLeg): Promise<void> {
    if (this.#closed || !this.#tap || this.tracks.has(leg.participantId)) return;
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
    });
    this.tracks.set(leg.participantId, track);
    const consumer = await this.#tap.consume({ producerId: leg.producer.id, rtpCapabilities: this.room.router.rtpCapabilities });
    // Hot path: the gate is read at arrival; a closed gate drops the packet here.
    consumer.on('rtp', (packet) => track.onRtp(packet, Date.now(), this.#writing));
    if (this.#writing) track.startRun(this.#recordingId!, this.gate.runIndex);
    this.#d.metrics?.tracksActive.inc({ codec: leg.codec });
    consumer.observer.once('close', () => this.#d.metrics?.tracksActive.dec({ codec: leg.codec }));
  }

  #report(): void {
    const recording = this.#writing;
    let reasons: ClosedReason[] = recording ? [] : [...this.gate.reasons];
    if (!recording && reasons.length === 0) {
      if (this.#admission === 'refused') reasons = ['cap-reached'];
      else if (this.#erased) reasons = ['consent-withdrawn'];
      else return; // admission pending: keep the last report until it settles
    }
    const key = `${recording}|${reasons.join(',')}|${this.#recordingId ?? ''}`;
    if (key === this.#lastReport) return;
    this.#lastReport = key;
    this.#d.onReport(this.callId, { recording, reasons, ...(this.#recordingId ? { recordingId: this.#recordingId } : {}) });
  }
}
