/**
 * The driver of the gate property (test/integration/gate/recorder-property.test.ts): a lane of
 * real parts (a reference PolicyServer, a ControlClient over a real WebSocket, a Recorder with an
 * in-memory store and admitter; the mediasoup worker is shared between lanes), and per fast-check
 * run a GateRun that turns a drawn Scenario into facts, faults, injected frames and tagged
 * packets, keeping the model (test/support/gateModel.ts) told of every fact the server accepted.
 * The driver reports what happened; the property file decides whether it was right.
 */
import { randomBytes } from 'node:crypto';
import type { types } from 'mediasoup';
import { ControlClient } from '../../src/control/ControlClient.ts';
import { PolicyServer } from '../../src/control/PolicyServer.ts';
import type { ErrorMessage } from '../../src/control/protocol.ts';
import type { ConsentEvidence, Fact, Participant, Window } from '../../src/gate/facts.ts';
import { PolicyState } from '../../src/gate/PolicyState.ts';
import type { Logger } from '../../src/log/logger.ts';
import type { CallRecorder } from '../../src/recorder/CallRecorder.ts';
import { Recorder } from '../../src/recorder/Recorder.ts';
import { CallRoom } from '../../src/sfu/CallRoom.ts';
import type { WorkerPool } from '../../src/sfu/WorkerPool.ts';
import { MemoryAdmitter, MemoryStore, RtpLeg, Waiter, settleTurns, spyArrivals } from './gateHarness.ts';
import { GateModel, cloneView, wireSnapshot, type ModelCall, type View } from './gateModel.ts';
import type { Action, FactAction, FaultKind, Scenario, WindowKind } from './gateScenario.ts';

const HOUR = 3_600_000;

export interface LaneOptions {
  logger: Logger;
  /** The policy server's heartbeat period. */
  heartbeatMs: number;
  /** How long any wait (catching up, packets arriving) may take before it counts as a failure. */
  settleTimeoutMs: number;
}

export interface PacketRecord {
  id: number;
  run: number;
  call: number;
  pid: string;
  expectedOpen: boolean;
  ambiguous: boolean;
  arrived: boolean;
  writable: boolean | undefined;
}

export interface Stats {
  runs: number;
  interleavings: number;
  steps: number;
  actions: Record<string, number>;
  packets: number;
  packetsOpen: number;
  packetsClosed: number;
  packetsAmbiguous: number;
  writtenVerified: number;
  segments: number;
  gateChecks: number;
  closings: number;
  erasures: number;
  capBlocked: number;
  admissions: number;
  ambiguousSteps: number;
}

export function newStats(): Stats {
  return {
    runs: 0, interleavings: 0, steps: 0, actions: {}, packets: 0, packetsOpen: 0, packetsClosed: 0, packetsAmbiguous: 0,
    writtenVerified: 0, segments: 0, gateChecks: 0, closings: 0, erasures: 0, capBlocked: 0, admissions: 0, ambiguousSteps: 0,
  };
}

/** Adds `s` into `total`. */
export function addStats(total: Stats, s: Stats): void {
  for (const k of Object.keys(total) as (keyof Stats)[]) {
    if (k === 'actions') for (const [a, n] of Object.entries(s.actions)) total.actions[a] = (total.actions[a] ?? 0) + n;
    else (total[k] as number) += s[k] as number;
  }
}

/** A call of a run: the model's view of it plus the real room, legs and recorder. */
export interface RunCall extends ModelCall {
  room: CallRoom;
  legs: RtpLeg[];
  rec: CallRecorder;
}

/** One policy server, one control client, one recorder, many calls on one (shared) mediasoup worker. */
export class Lane {
  readonly index: number;
  readonly pool: WorkerPool;
  readonly options: LaneOptions;
  readonly secret = randomBytes(32).toString('base64url');
  server!: PolicyServer;
  client!: ControlClient;
  state!: PolicyState;
  recorder!: Recorder;
  readonly store = new MemoryStore();
  readonly admitter = new MemoryAdmitter();
  readonly waiter = new Waiter(5);
  readonly stats = newStats();
  readonly packets = new Map<number, PacketRecord>();
  /** stale + fresh events seen: a change while a batch is in flight makes it ambiguous. */
  epoch = 0;
  freshCount = 0;
  protocolErrors: ErrorMessage[] = [];
  /** Client events in order (stale, fresh, change, error:<code>), to see what a frame caused first. */
  readonly events: string[] = [];
  #nextPacketId = 1;
  #run = 0;

  constructor(index: number, pool: WorkerPool, options: LaneOptions) {
    this.index = index;
    this.pool = pool;
    this.options = options;
  }

  async start(): Promise<void> {
    const { logger, heartbeatMs } = this.options;
    this.server = new PolicyServer({ secret: this.secret, heartbeatMs, logger, serverId: `policy-${this.index}` });
    await this.server.listen();
    this.state = new PolicyState();
    this.client = new ControlClient({
      url: this.server.url,
      workerId: `w-${this.index}`,
      secret: this.secret,
      state: this.state,
      logger,
      // A fixed, short reconnect delay (jitter pinned): a stale period lasts ~40 ms, long enough
      // to send and receive a batch while the worker is stale, short enough for 10,000 calls.
      backoff: { minMs: 25, maxMs: 25 },
      random: () => 0.999,
    });
    this.recorder = new Recorder({
      control: this.client,
      state: this.state,
      store: this.store,
      admitter: this.admitter,
      logger,
      segmentSeconds: 0.1, // 5 packets per segment: segments are cut inside runs too
      maxStreams: 1_000_000,
      maxEventLoopLagMs: 1e9, // overload admission is not the subject here
    });
    const poke = this.waiter.poke;
    this.client.on('stale', (reason) => {
      // The reason tells a heartbeat timeout of the loaded machine from a stale the worker chose.
      this.events.push(reason === 'heartbeat-missed' ? 'stale' : `stale:${reason}`);
      this.epoch++;
      poke();
    });
    this.client.on('fresh', () => {
      this.events.push('fresh');
      this.epoch++;
      this.freshCount++;
      poke();
    });
    this.client.on('change', poke);
    this.client.on('fact', poke);
    this.client.on('protocol-error', (e) => {
      this.protocolErrors.push(e);
      this.events.push(`error:${e.code}`);
      poke();
    });
    this.client.on('change', () => {
      this.events.push('change');
    });
    this.client.start();
    await this.client.waitFresh(10_000);
  }

  async stop(): Promise<void> {
    await this.recorder.close();
    this.client.close();
    await this.server.close();
  }

  caughtUp = (): boolean => this.client.phase === 'live' && this.client.fresh && this.client.lastSeq === this.server.seq;

  /** No call waits for the worker's answer that ends an opening's fence (CallRecorder.fenced). */
  fencesDown = (): boolean => [...this.recorder.calls.values()].every((c) => !c.fenced);

  nextPacketId(): number {
    return this.#nextPacketId++;
  }

  /**
   * Starts a run of `sc`: its schedules and calls announced on the server (and applied by the
   * worker), a room per call with a tap on every leg, attached to the recorder in call order.
   */
  async beginRun(sc: Scenario): Promise<GateRun> {
    const run = ++this.#run;
    this.events.length = 0;
    // Make sure a previous (failed or shrunk) run left the lane healthy.
    this.server.startHeartbeats();
    if (!(await this.waiter.until(this.caughtUp, this.options.settleTimeoutMs))) throw new Error(`L${this.index}r${run}: control stream not fresh at start`);
    const gateRun = new GateRun(this, run);
    await gateRun.open(sc);
    return gateRun;
  }
}

/** One fast-check run on a lane: the calls of one Scenario, driven step by step. */
export class GateRun {
  readonly lane: Lane;
  readonly run: number;
  readonly tag: string;
  readonly model: GateModel<RunCall>;
  readonly calls: RunCall[];
  readonly violations: string[] = [];
  readonly #history: { seq: number; view: View }[] = [];
  readonly #sentDeltas: { seq: number; fact: Fact }[] = [];
  #agentIds: string[] = [];
  #now0 = 0;
  #lastEvidenceAt = 0;

  constructor(lane: Lane, run: number) {
    this.lane = lane;
    this.run = run;
    this.tag = `L${lane.index}r${run}`;
    this.model = new GateModel<RunCall>(lane.freshCount);
    this.calls = this.model.calls;
  }

  fail = (msg: string): void => {
    if (this.violations.length < 30) this.violations.push(msg);
  };

  #evidence(): ConsentEvidence {
    this.#lastEvidenceAt = Math.max(Date.now(), this.#lastEvidenceAt + 1);
    return { method: 'dtmf', at: this.#lastEvidenceAt, infoVersion: 'notice-v3' };
  }

  #windowsFor(w: WindowKind): Window[] {
    const now0 = this.#now0;
    return w === 'covering' ? [{ start: now0 - HOUR, end: now0 + 2 * HOUR }] : w === 'later' ? [{ start: now0 + HOUR, end: now0 + 2 * HOUR }] : [];
  }

  /** Server-side facts: applied by the real server (which may refuse), mirrored in the model. */
  serverFact(fact: Fact): boolean {
    try {
      const delta = this.lane.server.applyFact(fact);
      this.#sentDeltas.push({ seq: delta.seq, fact: delta.fact });
    } catch {
      return false; // refused by the policy server: nothing sent, nothing changed
    }
    this.model.serverApplied(fact);
    return true;
  }

  async open(sc: Scenario): Promise<void> {
    const lane = this.lane;
    const { tag } = this;
    const timeout = lane.options.settleTimeoutMs;
    this.#agentIds = Array.from({ length: sc.schedules.length }, (_, i) => `${tag}a${i}`);
    this.#now0 = Date.now();
    sc.schedules.forEach((s, i) => this.serverFact({ type: 'schedule.set', agentId: this.#agentIds[i]!, windows: this.#windowsFor(s.window), monthlyCap: s.cap }));
    for (let i = 0; i < sc.calls.length; i++) {
      const spec = sc.calls[i]!;
      const callId = `${tag}c${i}`;
      const participants: Participant[] = [
        ...spec.agents.map((a, k): Participant => ({ participantId: `${callId}g${k}`, role: 'agent', subjectId: this.#agentIds[a]! })),
        ...Array.from({ length: spec.customers }, (_, k): Participant => ({ participantId: `${callId}k${k}`, role: 'customer', subjectId: `${callId}s${k}` })),
      ];
      this.serverFact({ type: 'call.started', callId, participants });
      if (spec.granted) {
        for (const p of participants) if (p.role === 'customer') this.serverFact({ type: 'consent.granted', callId, participantId: p.participantId, evidence: this.#evidence() });
      }
    }
    if (!(await lane.waiter.until(lane.caughtUp, timeout))) throw new Error(`${tag}: calls not applied`);
    // Routers, taps and legs are created concurrently (the mediasoup channel pipelines requests);
    // attachCall is called in call order, which is the order the recorder evaluates calls in.
    const callIds = sc.calls.map((_, i) => `${tag}c${i}`);
    const consumers = callIds.map(() => 0);
    const rooms = await Promise.all(callIds.map((callId) => CallRoom.create(lane.pool, callId, { listenIp: '127.0.0.1' })));
    rooms.forEach((room, i) =>
      room.router.observer.on('newtransport', (t: types.Transport) =>
        t.observer.on('newconsumer', () => {
          consumers[i]!++;
          lane.waiter.poke();
        }),
      ),
    );
    // One at a time: each attachCall decides its call at once, so the order is the model's order.
    const recs: CallRecorder[] = [];
    for (const room of rooms) recs.push(await lane.recorder.attachCall(room));
    const legsPerCall = await Promise.all(
      rooms.map((room, i) =>
        Promise.all(this.model.server.calls.get(callIds[i]!)!.participants.map((p, k) => RtpLeg.create(room, p.participantId, 0x1000 + i * 4 + k))),
      ),
    );
    const ready = await lane.waiter.until(() => recs.every((rec, i) => consumers[i] === legsPerCall[i]!.length && rec.tracks.size === legsPerCall[i]!.length), timeout);
    if (!ready) throw new Error(`${tag}: tap consumers not ready`);
    for (let i = 0; i < callIds.length; i++) {
      const callId = callIds[i]!;
      const participants = this.model.server.calls.get(callId)!.participants;
      const rec = recs[i]!;
      for (const track of rec.tracks.values()) {
        spyArrivals(track, (id, writable) => {
          if (id === undefined) return;
          const p = lane.packets.get(id);
          if (p === undefined) {
            this.fail(`unknown packet id ${id} arrived`);
            return;
          }
          if (p.arrived) this.fail(`packet ${id} arrived twice`);
          p.arrived = true;
          p.writable = writable;
          lane.waiter.poke();
        });
      }
      this.calls.push({
        index: i, callId, participants, customers: participants.filter((p) => p.role === 'customer').map((p) => p.participantId),
        room: rooms[i]!, legs: legsPerCall[i]!, rec, admission: 'none', erased: false, wasOpen: false,
      });
    }
    await settleTurns(2);
  }

  /** What the worker learned since the last settle, told to the model (counted in the stats). */
  absorb(fresh: boolean): void {
    const { erasures, admissions } = this.model.absorb(fresh, this.lane.freshCount);
    this.lane.stats.erasures += erasures;
    this.lane.stats.admissions += admissions;
  }

  /** Remembers the server's facts at its current sequence number (for replaying old snapshots). */
  recordHistory(): void {
    if (this.#history[this.#history.length - 1]?.seq !== this.lane.server.seq) this.#history.push({ seq: this.lane.server.seq, view: cloneView(this.model.server) });
  }

  /**
   * Sends a batch of tagged packets; resolves when every packet reached its track, with their
   * records. Marks the batch ambiguous if the worker's freshness moved since `epoch`.
   */
  async sendBatch(where: string, batch: [number, number][], expected: boolean[], epoch: number): Promise<PacketRecord[]> {
    if (batch.length === 0) return [];
    const lane = this.lane;
    const ids: number[] = [];
    for (const [ci, li] of batch) {
      const c = this.calls[ci % this.calls.length]!;
      const leg = c.legs[li % c.legs.length]!;
      const id = lane.nextPacketId();
      lane.packets.set(id, { id, run: this.run, call: c.index, pid: leg.participantId, expectedOpen: expected[c.index]!, ambiguous: false, arrived: false, writable: undefined });
      ids.push(id);
      leg.send(id);
    }
    const ok = await lane.waiter.until(() => ids.every((id) => lane.packets.get(id)!.arrived), lane.options.settleTimeoutMs);
    if (!ok) this.fail(`${where}: ${ids.filter((id) => !lane.packets.get(id)!.arrived).length} packet(s) never reached the recorder`);
    const ambiguous = lane.epoch !== epoch;
    if (ambiguous) lane.stats.ambiguousSteps++;
    const records = ids.map((id) => lane.packets.get(id)!);
    for (const p of records) {
      p.ambiguous = ambiguous;
      lane.stats.packets++;
      if (ambiguous) lane.stats.packetsAmbiguous++;
      else if (p.expectedOpen) lane.stats.packetsOpen++;
      else lane.stats.packetsClosed++;
    }
    return records;
  }

  runFact(a: FactAction): boolean {
    const c = 'call' in a ? this.calls[a.call % this.calls.length]! : undefined;
    switch (a.kind) {
      case 'grant':
        return this.serverFact({ type: 'consent.granted', callId: c!.callId, participantId: c!.customers[a.cust % c!.customers.length]!, evidence: this.#evidence() });
      case 'decline':
        return this.serverFact({ type: 'consent.declined', callId: c!.callId, participantId: c!.customers[a.cust % c!.customers.length]!, evidence: this.#evidence() });
      case 'withdraw':
        return this.serverFact({ type: 'consent.withdrawn', callId: c!.callId, participantId: c!.customers[a.cust % c!.customers.length]!, erase: a.erase, evidence: this.#evidence() });
      case 'schedule':
        return this.serverFact({ type: 'schedule.set', agentId: this.#agentIds[a.agent]!, windows: this.#windowsFor(a.window), monthlyCap: a.cap });
      case 'pause':
        return this.serverFact({ type: 'call.paused', callId: c!.callId });
      case 'resume':
        return this.serverFact({ type: 'call.resumed', callId: c!.callId });
      case 'end':
        return this.serverFact({ type: 'call.ended', callId: c!.callId });
    }
  }

  /** Waits until the worker applied everything the server sent, then lets the recorder react. */
  async settleLive(where: string): Promise<boolean> {
    const lane = this.lane;
    if (!(await lane.waiter.until(lane.caughtUp, lane.options.settleTimeoutMs))) {
      this.fail(`${where}: worker did not catch up (phase ${lane.client.phase}, lastSeq ${lane.client.lastSeq}, server ${lane.server.seq})`);
      return false;
    }
    await settleTurns(2);
    // An opening is applied once its fence is down (one round trip to the mediasoup worker).
    if (!(await lane.waiter.until(lane.fencesDown, lane.options.settleTimeoutMs))) {
      this.fail(`${where}: a gate fence stayed up`);
      return false;
    }
    return true;
  }

  /** Makes the control stream stale on the server's side. */
  startFault(fault: FaultKind): void {
    if (fault === 'drop') this.lane.server.dropConnections();
    else if (fault === 'skipSeq') this.lane.server.skipSeq();
    else this.lane.server.stopHeartbeats();
  }

  /**
   * Facts the worker misses while stale (it must learn them from the snapshot), applied while the
   * worker is still stale in the same period (`epoch`). A withdrawal with erase is not followed,
   * in the same stale period, by another act of the same customer or by the end of the call: the
   * snapshot carries only the latest act of calls in progress, so the erase request would be lost
   * (a protocol gap, see the report; this property is about the gate and the erasures the worker
   * can know of).
   */
  applyStaleFacts(facts: FactAction[], epoch: number): void {
    const lane = this.lane;
    const erasePending = new Set<string>();
    for (const f of facts) {
      if (!lane.client.fresh && lane.epoch === epoch) {
        const c = 'call' in f ? this.calls[f.call % this.calls.length]! : undefined;
        const pid = c && 'cust' in f ? c.customers[f.cust % c.customers.length]! : undefined;
        if (pid !== undefined && erasePending.has(pid)) continue;
        if (f.kind === 'end' && c !== undefined && c.customers.some((k) => erasePending.has(k))) continue;
        if (this.runFact(f) && f.kind === 'withdraw' && f.erase && pid !== undefined) erasePending.add(pid);
      }
    }
  }

  /**
   * Performs a step's action other than a fault: a fact through the server, or a frame injected
   * on the stream that the worker must reject. `injected` says whether a frame was sent, and
   * `expectCode` the error code the worker must answer it with (undefined: any rejection).
   */
  perform(a: Exclude<Action, { kind: 'fault' }>): { injected: boolean; expectCode: string | undefined } {
    const { server, client } = this.lane;
    let injected = true;
    let expectCode: string | undefined;
    switch (a.kind) {
      case 'garbage': {
        const garbage = [
          'not json at all',
          '[1,2,3]',
          JSON.stringify({ v: 2, type: 'delta', seq: server.seq + 1, at: Date.now(), fact: { type: 'call.paused', callId: this.calls[0]!.callId } }),
          JSON.stringify({ v: 1, type: 'delta', seq: server.seq + 1, at: Date.now(), fact: { type: 'call.resumed', callId: this.calls[0]!.callId }, extra: true }),
          JSON.stringify({ v: 1, type: 'nonsense', seq: 1 }),
          JSON.stringify({ v: 1, type: 'delta', seq: server.seq + 1, at: Date.now(), fact: { type: 'consent.granted', callId: 'bad id!', participantId: 'x', evidence: { method: 'silence', at: 1, infoVersion: 'v' } } }),
          'x'.repeat(70_000),
          JSON.stringify({ v: 1, type: 'snapshot', seq: 0, at: 0, part: 2, parts: 1, calls: [], agents: [] }),
        ];
        server.sendRaw(garbage[a.which % garbage.length]!);
        expectCode = ['bad-json', 'bad-json', 'bad-version', 'invalid-message', 'unknown-type', 'invalid-message', 'too-large', 'invalid-message'][a.which % garbage.length];
        break;
      }
      case 'lateDelta': {
        const old = this.#sentDeltas[this.#sentDeltas.length - 1 - Math.min(a.back - 1, this.#sentDeltas.length - 1)];
        if (old === undefined) injected = false;
        else server.sendDuplicate({ v: 1, type: 'delta', seq: old.seq, at: Date.now(), fact: old.fact });
        expectCode = 'duplicate';
        break;
      }
      case 'lateHeartbeat': {
        const seq = client.lastSeq - a.back;
        if (seq < 0) injected = false;
        else server.sendDuplicate({ v: 1, type: 'heartbeat', seq, at: Date.now() });
        expectCode = 'duplicate';
        break;
      }
      case 'lateSnapshot': {
        const old = this.#history.filter((h) => h.seq < client.lastSeq);
        const h = old[Math.max(0, old.length - a.back)];
        if (h === undefined) injected = false;
        else server.sendRaw(JSON.stringify(wireSnapshot(h.view, h.seq)));
        expectCode = 'duplicate';
        break;
      }
      case 'dupHello':
        server.sendDuplicate({ v: 1, type: 'hello', serverId: 'policy-x', proof: 'A'.repeat(43), heartbeatMs: this.lane.options.heartbeatMs });
        expectCode = 'unexpected-message';
        break;
      case 'packetsOnly':
        injected = false;
        break;
      default:
        injected = false;
        this.runFact(a);
    }
    return { injected, expectCode };
  }

  /** Ends the calls still in progress on the server and lets the worker apply it. */
  async endCalls(): Promise<void> {
    for (const c of this.calls) if (this.model.server.calls.get(c.callId)?.ended === false) this.serverFact({ type: 'call.ended', callId: c.callId });
    await this.settleLive(`${this.tag} end`);
    this.absorb(this.lane.client.fresh);
  }

  /** Detaches and closes every call, then waits for the erasures the withdrawals asked for. */
  async detachCalls(): Promise<void> {
    const lane = this.lane;
    for (const c of this.calls) {
      await lane.recorder.detachCall(c.callId);
      for (const leg of c.legs) leg.close();
      c.room.close();
    }
    // Erasures run asynchronously after the withdrawal fact; let them finish.
    const erasedIds = this.calls.filter((c) => c.erased && c.rec.recordingId !== undefined).map((c) => c.rec.recordingId!);
    await lane.waiter.until(() => erasedIds.every((id) => lane.store.deleted.has(id)), lane.options.settleTimeoutMs);
  }

  /** Forgets this run's packets and segments (memory stays flat over thousands of runs). */
  forget(recordingIds: Iterable<string>): void {
    const lane = this.lane;
    for (const [id, p] of lane.packets) if (p.run === this.run) lane.packets.delete(id);
    for (const rid of recordingIds) lane.store.current.delete(rid);
    lane.store.puts.splice(0);
    lane.stats.runs++;
    lane.stats.interleavings += this.calls.length;
  }
}
