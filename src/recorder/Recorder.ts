import { TypedEmitter } from '../events/TypedEmitter.ts';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { ControlClient } from '../control/ControlClient.ts';
import type { RecorderReason } from '../gate/reasons.ts';
import type { PolicyState } from '../gate/PolicyState.ts';
import type { CallRoom } from '../sfu/CallRoom.ts';
import { CallRecorder, type Admitter, type CallStore } from './CallRecorder.ts';
import type { OpusEncoderPool } from './TrackRecorder.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { OptinError } from '../errors/OptinError.ts';

/** Where audit entries go (AuditTrail satisfies it). */
export interface AuditAppender {
  append(entry: {
    type: string;
    actor: string;
    role: string;
    purpose: string;
    refs: { callId?: string; recordingId?: string; participantId?: string };
    details: Record<string, unknown>;
  }): Promise<unknown>;
  /** True while the appender refuses entries (a bounded queue at its bound): gates close. */
  readonly full?: boolean;
}

export interface RecorderOptions {
  control: ControlClient;
  state: PolicyState;
  store: CallStore & { isSpoolFull(): boolean; on?(event: 'spoolchange', fn: () => void): unknown };
  admitter: Admitter;
  encoder?: OpusEncoderPool;
  audit?: AuditAppender;
  logger: Logger;
  metrics?: Metrics;
  segmentSeconds: number;
  /** Admission ceiling (DESIGN §7): above it new calls are not recorded (`overloaded`). */
  maxStreams: number;
  maxEventLoopLagMs: number;
  /** The one shared timer driving jitter release and segment flushing (default 20 ms). */
  tickMs?: number;
  now?: () => number;
}

/**
 * The recorder service: every call's CallRecorder, one shared tick for all of them (no per-stream
 * timers), the gate wiring to the control stream, admission control, and R7 reporting.
 */
export interface RecordingStateEvent {
  recording: boolean;
  reasons: string[];
  recordingId?: string;
  at: number;
}

export type RecorderEvents = {
  /** What a call reports (R7), also sent upstream on the control stream. */
  state: [callId: string, state: RecordingStateEvent];
};

export class Recorder extends TypedEmitter<RecorderEvents> {
  readonly #o: RecorderOptions;
  readonly #calls = new Map<string, CallRecorder>();
  readonly #overloaded = new Set<string>();
  readonly #timer: NodeJS.Timeout;
  readonly #loopDelay: ReturnType<typeof monitorEventLoopDelay>;
  readonly #now: () => number;
  #nextWakeAt = Number.POSITIVE_INFINITY;
  #draining = false;
  #closed = false;
  #lagP99Ms = 0;
  #auditFull = false;
  readonly #pendingAudit = new Set<Promise<unknown>>();

  constructor(opts: RecorderOptions) {
    super();
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#loopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.#loopDelay.enable();
    const c = opts.control;
    c.on('change', (callId) => (callId === 'all' ? this.evaluateAll() : this.evaluate(callId)));
    c.on('stale', () => this.evaluateAll());
    c.on('fresh', () => {
      this.#eraseWithdrawnInSnapshot();
      this.evaluateAll();
    });
    c.on('fact', (fact) => {
      if (fact.type === 'consent.withdrawn' && fact.erase) void this.#erase(fact.callId);
    });
    opts.store.on?.('spoolchange', () => this.evaluateAll());
    this.#timer = setInterval(() => this.#tick(), opts.tickMs ?? 20);
    // Lag is sampled once a second, not per packet.
    const lagTimer = setInterval(() => {
      // The histogram's samples include its 10 ms sampling resolution: an idle loop reads 10 ms.
      this.#lagP99Ms = Math.max(0, this.#loopDelay.percentile(99) / 1e6 - 10);
      this.#loopDelay.reset();
      opts.metrics?.eventLoopLagSeconds.set(this.#lagP99Ms / 1000);
      for (const call of this.#calls.values()) call.flushMetrics();
      // The audit spool's bound is read at decision time; a change of it re-decides every call.
      const auditFull = opts.audit?.full === true;
      if (auditFull !== this.#auditFull) {
        this.#auditFull = auditFull;
        this.evaluateAll();
      }
    }, 1000);
    lagTimer.unref();
    this.#timer.unref();
    this.#lagTimer = lagTimer;
  }

  readonly #lagTimer: NodeJS.Timeout;

  get calls(): ReadonlyMap<string, CallRecorder> {
    return this.#calls;
  }

  /**
   * Streams counted against the admission ceiling: a call's taps, or the streams it was admitted
   * for while its legs are still joining (else calls set up together all slip under the ceiling).
   */
  get streams(): number {
    let n = 0;
    for (const c of this.#calls.values()) n += Math.max(c.tracks.size, this.#expected.get(c.callId) ?? 0);
    return n;
  }

  readonly #expected = new Map<string, number>();

  get eventLoopLagP99Ms(): number {
    return this.#lagP99Ms;
  }

  /**
   * Puts a call under the recorder. Admission control runs here, once per call: a call admitted
   * keeps recording; a call arriving above the ceiling is never recorded (reason `overloaded`),
   * so overload never degrades recordings already running.
   */
  async attachCall(room: CallRoom, expectedStreams = 2): Promise<CallRecorder> {
    if (this.#draining) throw new OptinError('RECORDER_DRAINING', 'the recorder is shutting down and admits no new calls', { retryable: true });
    if (this.#calls.has(room.callId)) throw new OptinError('CALL_EXISTS', `call ${room.callId} is already attached`);
    const limit =
      this.streams + expectedStreams > this.#o.maxStreams ? 'streams' : this.#lagP99Ms > this.#o.maxEventLoopLagMs ? 'event-loop-lag' : undefined;
    if (limit) {
      this.#overloaded.add(room.callId);
      this.#o.metrics?.admissionRejections.inc({ limit });
      this.#o.logger.warn({ callId: room.callId, limit }, 'call not recorded: over capacity');
    }
    const call = new CallRecorder(room, {
      state: this.#o.state,
      store: this.#o.store,
      admitter: this.#o.admitter,
      encoder: this.#o.encoder,
      segmentSamples: Math.round(this.#o.segmentSeconds * 48000),
      logger: this.#o.logger,
      metrics: this.#o.metrics,
      onReport: (callId, report) => this.#report(callId, report),
      onAudit: (entry) => this.#audit(entry),
      // Re-decide this call and every call of the same agents: an admission moves the agents'
      // monthly counts, which their other calls are judged by, and their R7 reports must show
      // `cap-reached` as soon as it applies (found by test/integration/gate/recorder-property.test.ts).
      // Requests in one turn are coalesced; calls of other agents are not touched, so setting up
      // N calls costs O(N) decisions, not O(N^2).
      requestEvaluate: (callId) => this.#queueEvaluate(callId),
    });
    this.#calls.set(room.callId, call);
    if (!limit) this.#expected.set(room.callId, expectedStreams);
    this.#o.metrics?.callsActive.set(this.#calls.size);
    this.#o.logger.info({ callId: room.callId, workerPid: room.workerPid, admitted: !limit }, 'call attached');
    room.once('close', () => void this.detachCall(room.callId));
    await call.start();
    this.evaluate(room.callId);
    return call;
  }

  /** The call's media ended: seal its open segments and forget it. */
  async detachCall(callId: string): Promise<void> {
    const call = this.#calls.get(callId);
    if (!call) return;
    this.#calls.delete(callId);
    this.#overloaded.delete(callId);
    this.#expected.delete(callId);
    this.#lastStates.delete(callId);
    this.#o.metrics?.callsActive.set(this.#calls.size);
    await call.close(this.#now());
  }

  evaluate(callId: string): void {
    const call = this.#calls.get(callId);
    if (!call) return;
    call.evaluate(this.#now(), this.#recorderReasons(callId));
    this.#scheduleWake(call);
  }

  readonly #queued = new Set<string>();

  #queueEvaluate(callId: string): void {
    if (this.#queued.size === 0) queueMicrotask(() => this.#evaluateQueued());
    this.#queued.add(callId);
  }

  #evaluateQueued(): void {
    const ids = new Set(this.#queued);
    this.#queued.clear();
    const agents = new Set<string>();
    for (const id of ids) for (const a of this.#o.state.agentsOf(id)) agents.add(a.subjectId);
    for (const call of this.#calls.values()) {
      if (ids.has(call.callId) || this.#o.state.agentsOf(call.callId).some((a) => agents.has(a.subjectId))) this.evaluate(call.callId);
    }
  }

  evaluateAll(): void {
    const now = this.#now();
    this.#nextWakeAt = Number.POSITIVE_INFINITY;
    for (const call of this.#calls.values()) {
      call.evaluate(now, this.#recorderReasons(call.callId));
      this.#scheduleWake(call);
    }
    this.#updateGateGauge();
  }

  /** Graceful shutdown: admit nothing, close every gate, seal and store (or spool) every open segment. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#draining = true;
    clearInterval(this.#timer);
    clearInterval(this.#lagTimer);
    this.#loopDelay.disable();
    const calls = [...this.#calls.keys()];
    await Promise.allSettled(calls.map((id) => this.detachCall(id)));
    await Promise.allSettled([...this.#pendingAudit]);
  }

  /** Resolves when pending audit entries are written (tests and shutdown). */
  async flushAudit(): Promise<void> {
    await Promise.allSettled([...this.#pendingAudit]);
  }

  #recorderReasons(callId: string): RecorderReason[] {
    const reasons: RecorderReason[] = [];
    // A full audit spool closes the gates too: what cannot be accounted for is not recorded (R11).
    if (this.#o.store.isSpoolFull() || this.#o.audit?.full === true) reasons.push('storage-unavailable');
    if (this.#overloaded.has(callId)) reasons.push('overloaded');
    return reasons;
  }

  #scheduleWake(call: CallRecorder): void {
    const wake = call.gate.nextWake(this.#now());
    if (wake !== undefined && wake < this.#nextWakeAt) this.#nextWakeAt = wake;
  }

  #tick(): void {
    const now = this.#now();
    // Window boundaries (schedules, month rollover) change decisions with no message: the one
    // shared timer re-decides when the earliest of them is due.
    if (now >= this.#nextWakeAt) this.evaluateAll();
    for (const call of this.#calls.values()) call.tick(now);
  }

  /**
   * A withdrawal with erase that happened while the stream was stale reaches the worker inside the
   * snapshot, never as a `fact` event: erase those calls too (R9), before the gates are re-decided.
   * Calls already erased are skipped. (Found by test/integration/gate/recorder-property.test.ts.)
   */
  #eraseWithdrawnInSnapshot(): void {
    for (const call of this.#calls.values()) {
      if (call.erased) continue;
      const consents = this.#o.state.call(call.callId)?.consents;
      if (consents && [...consents.values()].some((k) => k.status === 'withdrawn' && k.erase)) void this.#erase(call.callId);
    }
  }

  async #erase(callId: string): Promise<void> {
    const call = this.#calls.get(callId);
    if (!call) return;
    try {
      await call.erase('consent-withdrawn-erase');
    } catch (err) {
      this.#o.logger.error({ callId, err: (err as Error).message }, 'erasure failed; it will be retried by the store');
    }
  }

  /** The last state a call reported (R7), for late joiners such as a softphone page. */
  lastState(callId: string): RecordingStateEvent | undefined {
    return this.#lastStates.get(callId);
  }

  readonly #lastStates = new Map<string, RecordingStateEvent>();

  #report(callId: string, report: { recording: boolean; reasons: string[]; recordingId?: string }): void {
    const event = { ...report, at: this.#now() };
    this.#lastStates.set(callId, event);
    this.safeEmit('state', callId, event);
    try {
      this.#o.control.reportRecordingState({
        callId,
        recording: report.recording,
        reasons: report.reasons as never,
        at: this.#now(),
        ...(report.recordingId ? { recordingId: report.recordingId } : {}),
      });
    } catch (err) {
      this.#o.logger.error({ callId, err: (err as Error).message }, 'recording state not reported');
    }
    this.#updateGateGauge();
  }

  /** Brings scrape-time gauges up to date (called by /metrics before it renders). */
  refreshGauges(): void {
    this.#updateGateGauge();
    for (const call of this.#calls.values()) call.flushMetrics();
  }

  #updateGateGauge(): void {
    const g = this.#o.metrics?.gates;
    if (!g) return;
    g.reset();
    for (const call of this.#calls.values()) {
      g.inc({ state: call.writing ? 'open' : 'closed', reason: call.writing ? 'open' : (call.gate.reasons[0] ?? 'pending') });
    }
  }

  #audit(entry: { type: string; callId: string; recordingId?: string; details: Record<string, unknown> }): void {
    const audit = this.#o.audit;
    if (!audit) return;
    const p = audit
      .append({
        type: entry.type,
        actor: 'system',
        role: 'recorder',
        purpose: 'training-recording-gate',
        refs: { callId: entry.callId, ...(entry.recordingId ? { recordingId: entry.recordingId } : {}) },
        details: entry.details,
      })
      .catch((err: Error) => this.#o.logger.error({ err: err.message }, 'audit entry not written'));
    this.#pendingAudit.add(p);
    void p.finally(() => this.#pendingAudit.delete(p));
  }
}
