import { TypedEmitter } from '../events/TypedEmitter.ts';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { ControlClient } from '../control/ControlClient.ts';
import type { StoreReceipt } from '../control/protocolV2.ts';
import { summarizeReceipt } from '../control/storeReceipt.ts';
import type { Fact } from '../gate/facts.ts';
import type { PendingDeletion, PendingErasure } from '../gate/policySnapshot.ts';
import type { RecorderReason, RecordingReason } from '../gate/reasons.ts';
import type { PolicyState } from '../gate/PolicyState.ts';
import { MAX_RETENTION_SECONDS } from '../storage/layout.ts';
import type { DeletionReceipt } from '../storage/types.ts';
import type { CallRoom } from '../sfu/CallRoom.ts';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import { CallRecorder, type Admitter, type CallStore, type DirectTrack } from './CallRecorder.ts';
import type { ManifestSummary } from '../storage/manifestSummary.ts';
import { CatalogueReporter } from './CatalogueReporter.ts';
import type { OpusEncoderPool } from './TrackRecorder.ts';
import type { DirectTrackFactory, ThreadTaps } from './RecorderTrack.ts';
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
  /** Resolves when every entry taken so far is in the trail (a spool in front of it: AuditSpool). */
  flushed?(timeoutMs?: number): Promise<boolean>;
}

/** What the recorder needs of its store beyond a call's writes (RecordingStore satisfies it). */
export interface RecorderStore extends CallStore {
  isSpoolFull(): boolean;
  on?(event: 'spoolchange', fn: () => void): unknown;
  on?(event: 'repaired', fn: (summary: ManifestSummary) => void): unknown;
  /** Whether this process holds something of a recording no call of it holds (spool copies after a restart). */
  holds?(recordingId: string): boolean;
  /** Recordings' retention (default 30 days): the catalogue's expiry when the store does not say. */
  readonly retentionSeconds?: number;
}

export interface RecorderOptions {
  control: ControlClient;
  state: PolicyState;
  store: RecorderStore;
  admitter: Admitter;
  encoder?: OpusEncoderPool;
  /** Direct tracks (SIPREC streams) in media threads (src/mediathreads); in this thread without it. */
  directTracks?: DirectTrackFactory;
  /** SFU legs tapped into the media threads (with `directTracks`) instead of on this thread. */
  threadTaps?: ThreadTaps;
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
 * timers), the gate wiring to the policy stream, admission control, R7 reporting, catalogue
 * reports, and the worker's part of the erasure ledger and deletion tombstones (R9): every
 * erasure or deletion the control plane announces (as a fact, or pending in a snapshot) that
 * concerns what this worker holds is carried out here, then confirmed with the store's receipt.
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

/** Ended calls remembered for erasures that arrive after the hang-up (CallRecorder objects without media). */
const ENDED_CALLS_KEPT = 2000;

export class Recorder extends TypedEmitter<RecorderEvents> {
  readonly #o: RecorderOptions;
  readonly #calls = new Map<string, CallRecorder>();
  /** Calls refused as `overloaded`, with the streams they asked for: decided again as load falls. */
  readonly #overloaded = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  readonly #loopDelay: ReturnType<typeof monitorEventLoopDelay>;
  readonly #now: () => number;
  #nextWakeAt = Number.POSITIVE_INFINITY;
  #draining = false;
  #closed = false;
  #lagP99Ms = 0;
  #auditFull = false;
  readonly #pendingAudit = new Set<Promise<unknown>>();
  readonly #catalogue: CatalogueReporter;
  /** Erasures and deletions carried out here (their receipts, to confirm again after a reconnect) or in progress. */
  readonly #ledgerDone = new Map<string, StoreReceipt[]>();
  /** Calls ended on this worker, newest last (erasures after the hang-up). */
  readonly #ended = new Map<string, CallRecorder>();
  readonly #ledgerRunning = new Set<string>();

  constructor(opts: RecorderOptions) {
    super();
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#loopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.#loopDelay.enable();
    const c = opts.control;
    this.#catalogue = new CatalogueReporter(c, {
      retentionSeconds: opts.store.retentionSeconds ?? MAX_RETENTION_SECONDS,
      onError: (err) => opts.logger.error({ err: err.message }, 'catalogue report not sent'),
    });
    c.on('change', (callId) => (callId === 'all' ? this.evaluateAll() : this.evaluate(callId)));
    c.on('stale', () => this.evaluateAll());
    c.on('fresh', () => {
      // Before the gates are re-decided: what was erased or deleted while we were away stops first.
      this.#reconcileLedger();
      this.evaluateAll();
      // Calls that ended while the stream was away end here too (the snapshot says so).
      for (const callId of [...this.#calls.keys()]) if (opts.state.call(callId)?.ended === true) void this.endCall(callId);
    });
    c.on('fact', (fact) => this.#onFact(fact));
    opts.store.on?.('spoolchange', () => this.evaluateAll());
    // A recording a crash of this node left open, closed by crash repair: its closing report
    // died with the crash. (The store queues repairs behind its first S3 round trip, after this.)
    opts.store.on?.('repaired', (summary) => this.#catalogue.reportRepaired(summary));
    this.#timer = setInterval(() => this.#tick(), opts.tickMs ?? 20);
    // Lag is sampled once a second, not per packet.
    const lagTimer = setInterval(() => {
      // The histogram's samples include its 10 ms sampling resolution: an idle loop reads 10 ms.
      this.#lagP99Ms = Math.max(0, this.#loopDelay.percentile(99) / 1e6 - 10);
      this.#loopDelay.reset();
      opts.metrics?.eventLoopLagSeconds.set(this.#lagP99Ms / 1000);
      for (const call of this.#calls.values()) call.flushMetrics();
      this.#readmit();
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
   * Puts a call under the recorder. Admission control runs here: a call admitted keeps
   * recording; a call arriving above the ceiling is not recorded (reason `overloaded`) until the
   * load falls (decided again once a second), so overload never degrades recordings already running.
   */
  async attachCall(room: CallRoom, expectedStreams = 2): Promise<CallRecorder> {
    const call = this.#newCall(room.callId, room, expectedStreams);
    this.#o.logger.info({ callId: room.callId, workerPid: room.workerPid, admitted: !this.#overloaded.has(room.callId) }, 'call attached');
    room.once('close', () => void this.detachCall(room.callId));
    await call.start();
    this.evaluate(room.callId);
    return call;
  }

  /**
   * A stream received directly for `participantId` of `callId` (SIPREC, plain SIP recording
   * legs): the call is put under the recorder (admission as for any call) on its first stream
   * and ends with `detachCall` when its last stream does.
   */
  openDirectTrack(callId: string, participantId: string, codec: AudioCodec, expectedStreams = 2): DirectTrack {
    let call = this.#calls.get(callId);
    if (!call) {
      call = this.#newCall(callId, undefined, expectedStreams);
      this.#o.logger.info({ callId, admitted: !this.#overloaded.has(callId) }, 'direct call attached');
      this.evaluate(callId);
    } else if (call.room) {
      throw new OptinError('CALL_EXISTS', `call ${callId} has its media in the SFU; a direct stream cannot join it`);
    }
    return call.openDirectTrack(participantId, codec);
  }

  #newCall(callId: string, room: CallRoom | undefined, expectedStreams: number): CallRecorder {
    if (this.#draining) throw new OptinError('RECORDER_DRAINING', 'the recorder is shutting down and admits no new calls', { retryable: true });
    if (this.#calls.has(callId)) throw new OptinError('CALL_EXISTS', `call ${callId} is already attached`);
    const limit = this.#overLimit(this.streams, expectedStreams);
    if (limit) {
      this.#overloaded.set(callId, expectedStreams);
      this.#o.metrics?.admissionRejections.inc({ limit });
      this.#o.logger.warn({ callId, limit }, 'call not recorded: over capacity');
    }
    const call = new CallRecorder(callId, room, {
      state: this.#o.state,
      store: this.#o.store,
      admitter: this.#o.admitter,
      encoder: this.#o.encoder,
      ...(this.#o.directTracks ? { directTracks: this.#o.directTracks } : {}),
      ...(this.#o.threadTaps ? { threadTaps: this.#o.threadTaps } : {}),
      segmentSamples: Math.round(this.#o.segmentSeconds * 48000),
      logger: this.#o.logger,
      metrics: this.#o.metrics,
      onReport: (callId, report) => this.#report(callId, report),
      onRecording: (event) => this.#catalogue.record(callId, event),
      onAudit: (entry) => this.#audit(entry),
      // Re-decide this call and every call of the same agents: an admission moves the agents'
      // monthly counts, which their other calls are judged by, and their R7 reports must show
      // `cap-reached` as soon as it applies (found by test/integration/gate/recorder-property.test.ts).
      // Requests in one turn are coalesced; calls of other agents are not touched, so setting up
      // N calls costs O(N) decisions, not O(N^2).
      requestEvaluate: (callId) => this.#queueEvaluate(callId),
    });
    this.#calls.set(callId, call);
    if (!limit) this.#expected.set(callId, expectedStreams);
    this.#o.metrics?.callsActive.set(this.#calls.size);
    return call;
  }

  /**
   * The call ended (the `call.ended` fact, or its last leg went): its room closes with every leg
   * in it, the recording is finalised (open segments sealed, state complete with an end time) and
   * the call stops counting against the admission ceiling. Resolves when the manifest is final.
   */
  async endCall(callId: string): Promise<void> {
    // Decided first: the gate closes with the policy's reason (`call-ended`), reported (R7) to
    // the control plane and the call's pages before the call is forgotten.
    this.evaluate(callId);
    const room = this.#calls.get(callId)?.room;
    if (room && !room.closed) room.close(); // its 'close' detaches the call
    await this.detachCall(callId);
  }

  readonly #detaching = new Map<string, Promise<void>>();

  /** Which ceiling `more` streams on top of `streams` would break (DESIGN §7), if any. */
  #overLimit(streams: number, more: number): 'streams' | 'event-loop-lag' | undefined {
    if (streams + more > this.#o.maxStreams) return 'streams';
    if (this.#lagP99Ms > this.#o.maxEventLoopLagMs) return 'event-loop-lag';
    return undefined;
  }

  /**
   * Calls refused as `overloaded` are decided again once a second, oldest first: when load fell
   * (the lag figure back under its ceiling, room for the call's streams) the call is admitted and
   * its gate re-decided, so R7 reports the refusal and then the recording. A refusal at a startup
   * stall therefore lasts a second or two, not the whole call. Calls already recording are never
   * touched (overload does not degrade running recordings).
   */
  #readmit(): void {
    if (this.#draining) return;
    for (const [callId, asked] of [...this.#overloaded]) {
      const call = this.#calls.get(callId);
      if (call === undefined) {
        this.#overloaded.delete(callId);
        continue;
      }
      // This call's taps are in `streams` already; it asks for at least as many as it has.
      const want = Math.max(asked, call.tracks.size);
      if (this.#overLimit(this.streams - call.tracks.size, want) !== undefined) return; // no overtaking
      this.#overloaded.delete(callId);
      this.#expected.set(callId, want);
      this.#o.metrics?.admissionReadmissions.inc();
      this.#o.logger.info({ callId }, 'call admitted: load fell under the ceiling');
      this.evaluate(callId);
    }
  }

  /**
   * The call's media ended (or, `shutdown`, this worker stops): seal its open segments and forget
   * it. When its media ended, R7 says `call-ended` unless the control plane's fact said it first.
   */
  async detachCall(callId: string, cause: 'media-ended' | 'shutdown' = 'media-ended'): Promise<void> {
    const pending = this.#detaching.get(callId);
    if (pending) return pending;
    const call = this.#calls.get(callId);
    if (!call) return;
    const done = this.#detach(callId, call, cause).finally(() => this.#detaching.delete(callId));
    this.#detaching.set(callId, done);
    return done;
  }

  async #detach(callId: string, call: CallRecorder, cause: 'media-ended' | 'shutdown'): Promise<void> {
    this.#calls.delete(callId);
    // An erase often comes after the hang-up (the customer withdraws on the IVR's last menu): the
    // worker that recorded the call still carries it out, keys and spool copies included, even
    // though the call is gone from its media plane. Bounded: the control plane's erasure ledger
    // carries out what falls out of this memory (from the store's manifests).
    // (Calls that never recorded too: the erasure then marks them erased, R7 says so, no admission follows.)
    this.#ended.set(callId, call);
    while (this.#ended.size > ENDED_CALLS_KEPT) this.#ended.delete(this.#ended.keys().next().value as string);
    this.#overloaded.delete(callId);
    this.#expected.delete(callId);
    this.#lastStates.delete(callId);
    this.#o.metrics?.callsActive.set(this.#calls.size);
    await call.close(this.#now(), { reportEnded: cause === 'media-ended' });
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
    await Promise.allSettled(calls.map((id) => this.detachCall(id, 'shutdown')));
    await Promise.allSettled([...this.#pendingAudit]);
    this.#catalogue.close();
  }

  /** Resolves when pending audit entries are written (tests and shutdown). */
  /**
   * Resolves once the entries handed over so far are in the trail: the recorder's own appends,
   * then, when the audit target is a spool, its delivery (deletion receipts and gate transitions
   * of a keyed trail take a head write each, so they can land well after the act).
   */
  async flushAudit(timeoutMs = 30_000): Promise<void> {
    await Promise.allSettled([...this.#pendingAudit]);
    await this.#o.audit?.flushed?.(timeoutMs);
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

  // -- the erasure ledger and deletion tombstones (R9) ---------------------------------------------

  #onFact(fact: Fact): void {
    if (fact.type === 'erasure.requested') void this.#carryOutErasure(fact);
    else if (fact.type === 'recording.deleted') void this.#carryOutDeletion(fact);
    else if (fact.type === 'call.ended') {
      this.endCall(fact.callId).catch((err: Error) => this.#o.logger.error({ callId: fact.callId, err: err.message }, 'call not ended cleanly'));
    }
  }

  /**
   * After a snapshot: every pending erasure and deletion is carried out (or, if already done
   * here, confirmed again: the confirmation may have been lost with the link), and a call whose
   * recording was deleted while we were away (a tombstone, the request completed meanwhile)
   * stops and deletes what it holds.
   */
  #reconcileLedger(): void {
    const state = this.#o.state;
    for (const e of state.pendingErasures()) void this.#carryOutErasure(e);
    for (const d of state.pendingDeletions()) void this.#carryOutDeletion(d);
    for (const call of this.#calls.values()) {
      const recordingId = call.recordingId;
      if (recordingId === undefined || call.erased) continue;
      const gone = state.tombstonesOf(recordingId);
      if (!gone.whole && gone.participants.length === 0) continue;
      // Completed while we were away (the control plane deleted it from the store itself): stop,
      // and delete what we still hold of it (spool copies, keys in memory): what the tombstone names.
      void this.#runLedger(`tomb:${recordingId}`, async () => {
        if (gone.whole) {
          const receipt = await call.deleteRecording('deleted-elsewhere');
          return receipt ? [receipt] : [];
        }
        const receipts: DeletionReceipt[] = [];
        for (const participantId of gone.participants) {
          const receipt = await call.deleteRecording('deleted-elsewhere', participantId);
          if (receipt) receipts.push(receipt);
        }
        return receipts;
      }).catch((err: Error) => this.#o.logger.error({ callId: call.callId, err: err.message }, 'deletion of a tombstoned recording failed'));
      this.#catalogue.forget(recordingId);
    }
  }

  /**
   * R9: stop and delete every recording of the call this worker holds (every track: the agent's
   * side can hold the customer's words too) and any the request names whose copies wait in this
   * node's spool; tombstone them; confirm with the store's receipts (none: it held nothing).
   */
  async #carryOutErasure(e: PendingErasure): Promise<void> {
    const state = this.#o.state;
    try {
      const receipts = await this.#runLedger(`erasure:${e.erasureId}`, async () => {
        const out: DeletionReceipt[] = [];
        const held = new Set<string>();
        const call = this.#calls.get(e.callId) ?? this.#ended.get(e.callId);
        if (call !== undefined) {
          if (call.recordingId !== undefined) {
            held.add(call.recordingId);
            state.addTombstone(call.recordingId);
          }
          const receipt = await call.erase('consent-withdrawn-erase');
          if (receipt) out.push(receipt);
          if (call.recordingId !== undefined) this.#catalogue.forget(call.recordingId);
        }
        for (const recordingId of e.recordingIds) {
          if (held.has(recordingId) || this.#o.store.holds?.(recordingId) !== true) continue;
          const receipt = await this.#o.store.deleteRecording(recordingId, { reason: 'consent-withdrawn-erase', actor: 'system' });
          if (receipt) out.push(receipt);
        }
        return out;
      });
      if (receipts !== undefined && this.#o.control.confirmErasure(e.erasureId, receipts)) {
        this.#o.logger.info({ erasureId: e.erasureId, callId: e.callId, recordings: receipts.length }, 'erasure carried out and confirmed');
      }
    } catch (err) {
      this.#o.logger.error({ erasureId: e.erasureId, callId: e.callId, err: (err as Error).message }, 'erasure failed; retried after the next snapshot');
    }
  }

  /**
   * A deletion (team lead, operator, expiry): the call holding the recording stops for good (R7
   * `deleted`) and deletes it (keys first); copies waiting in this node's spool are deleted too;
   * confirmed with the store's receipt. A recording this worker never held needs no answer.
   */
  async #carryOutDeletion(d: PendingDeletion): Promise<void> {
    try {
      const receipts = await this.#runLedger(`deletion:${d.deletionId}`, async () => {
        const reason = `deletion-${d.reason}`;
        for (const call of this.#calls.values()) {
          if (call.recordingId !== d.recordingId) continue;
          const receipt = await call.deleteRecording(reason, d.participantId);
          this.#catalogue.forget(d.recordingId);
          return receipt ? [receipt] : [];
        }
        if (this.#o.store.holds?.(d.recordingId) !== true) return [];
        const receipt = await this.#o.store.deleteRecording(d.recordingId, { ...(d.participantId === undefined ? {} : { participantId: d.participantId }), reason, actor: 'system' });
        return receipt ? [receipt] : [];
      });
      const receipt = receipts?.[0];
      if (receipt !== undefined && this.#o.control.confirmDeletion(d.deletionId, receipt)) {
        this.#o.logger.info({ deletionId: d.deletionId, recordingId: d.recordingId }, 'deletion carried out and confirmed');
      }
    } catch (err) {
      this.#o.logger.error({ deletionId: d.deletionId, recordingId: d.recordingId, err: (err as Error).message }, 'deletion failed; retried after the next snapshot');
    }
  }

  /**
   * Runs one ledger task once: a task already done returns its receipts again (to confirm them
   * once more), one in progress returns undefined (it will confirm itself). Failed tasks are
   * forgotten, so the next snapshot (still listing the request) retries them.
   */
  async #runLedger(key: string, task: () => Promise<DeletionReceipt[]>): Promise<StoreReceipt[] | undefined> {
    const done = this.#ledgerDone.get(key);
    if (done !== undefined) return done;
    if (this.#ledgerRunning.has(key)) return undefined;
    this.#ledgerRunning.add(key);
    try {
      const receipts = (await task()).map(summarizeReceipt);
      this.#ledgerDone.set(key, receipts);
      // Bounded memory: the oldest confirmations are the least likely to be asked again.
      while (this.#ledgerDone.size > 10_000) this.#ledgerDone.delete(this.#ledgerDone.keys().next().value as string);
      return receipts;
    } finally {
      this.#ledgerRunning.delete(key);
    }
  }

  /** The last state a call reported (R7), for late joiners such as a softphone page. */
  lastState(callId: string): RecordingStateEvent | undefined {
    return this.#lastStates.get(callId);
  }

  readonly #lastStates = new Map<string, RecordingStateEvent>();

  #report(callId: string, report: { recording: boolean; reasons: RecordingReason[]; recordingId?: string }): void {
    const event = { ...report, at: this.#now() };
    // A call's closing report comes after it was let go: nothing to remember it for.
    if (this.#calls.has(callId)) this.#lastStates.set(callId, event);
    this.safeEmit('state', callId, event);
    try {
      this.#o.control.reportRecordingState({
        callId,
        recording: report.recording,
        reasons: report.reasons,
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
