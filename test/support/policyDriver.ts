/**
 * The driver of the gate property (test/integration/gate/recorder-property.test.ts): a lane of
 * real parts (the control plane on its own PostgreSQL database, facts posted to its ingest API,
 * a relay on its policy stream for faults and injected frames, a ControlClient over a real
 * WebSocket, a Recorder whose monthly cap is decided by the control plane; only the object
 * store is in memory; the mediasoup worker is shared between lanes), and per fast-check run a
 * GateRun that turns a drawn Scenario into facts, faults, injected frames and tagged packets,
 * keeping the model (test/support/gateModel.ts) told of every fact the control plane accepted.
 * The driver reports what happened; the property file decides whether it was right.
 */
import type { types } from 'mediasoup';
import { ControlClient } from '../../src/control/ControlClient.ts';
import type { ErrorV2 } from '../../src/control/protocolV2.ts';
import type { ConsentEvidence, Fact, Participant, Window } from '../../src/gate/facts.ts';
import { PolicyState } from '../../src/gate/PolicyState.ts';
import type { Logger } from '../../src/log/logger.ts';
import type { CallRecorder } from '../../src/recorder/CallRecorder.ts';
import { ControlAdmitter } from '../../src/recorder/ControlAdmitter.ts';
import { Recorder, type RecordingStateEvent } from '../../src/recorder/Recorder.ts';
import { TrackRecorder } from '../../src/recorder/TrackRecorder.ts';
import { CallRoom } from '../../src/sfu/CallRoom.ts';
import type { WorkerPool } from '../../src/sfu/WorkerPool.ts';
import { startTestControlPlane, type TestControlPlane } from './controlPlane.ts';
import { MemoryStore, RtpLeg, UdpLeg, Waiter, packetIdOf, settleTurns, spyArrivals } from './gateHarness.ts';
import { MediaThreadPool } from '../../src/mediathreads/MediaThreadPool.ts';
import { ThreadedMediaPlane } from '../../src/mediathreads/ThreadedMediaPlane.ts';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { createTestDatabase, type TestDatabase } from './pg.ts';
import { PolicyFacts } from './policyFacts.ts';
import { StreamRelay } from './streamRelay.ts';
import { GateModel, cloneView, wireSnapshot, type ModelCall, type View } from './gateModel.ts';
import type { Action, FactAction, FaultKind, Scenario, WindowKind } from './gateScenario.ts';

const HOUR = 3_600_000;

export interface LaneOptions {
  logger: Logger;
  /** The control plane's heartbeat period. */
  heartbeatMs: number;
  /** How long any wait (catching up, packets arriving) may take before it counts as a failure. */
  settleTimeoutMs: number;
  /**
   * The threaded path (issue 16): the lane's calls are direct (SIPREC-like) streams received and
   * recorded by media threads, packets sent over UDP to their sockets, each packet's verdict the
   * gate word as its thread read it. Otherwise legs through mediasoup, tapped on the main thread.
   */
  threaded?: boolean;
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

/** A call of a run: the model's view of it plus the real room (none on the threaded path), legs and recorder. */
export interface RunCall extends ModelCall {
  room: CallRoom | undefined;
  legs: (RtpLeg | UdpLeg)[];
  rec: CallRecorder;
}

/** One control plane (own database), one relay, one control client, one recorder, many calls on one (shared) mediasoup worker. */
export class Lane {
  readonly index: number;
  readonly pool: WorkerPool;
  readonly options: LaneOptions;
  db!: TestDatabase;
  control!: TestControlPlane;
  relay!: StreamRelay;
  policy!: PolicyFacts;
  client!: ControlClient;
  state!: PolicyState;
  recorder!: Recorder;
  /** The threaded path: the media threads, their plane, and the socket the legs send from. */
  threads: MediaThreadPool | undefined;
  /** The run in progress (where an arrival's violation is told). */
  currentRun: GateRun | undefined;
  plane: ThreadedMediaPlane | undefined;
  sender: dgram.Socket | undefined;
  readonly reported = new Map<string, RecordingStateEvent>();
  readonly store = new MemoryStore();
  readonly waiter = new Waiter(5);
  readonly stats = newStats();
  readonly packets = new Map<number, PacketRecord>();
  /** stale + fresh events seen: a change while a batch is in flight makes it ambiguous. */
  epoch = 0;
  freshCount = 0;
  /** The highest seq the control plane answered a posted fact with: caught up means the worker applied it. */
  postedSeq = 0;
  protocolErrors: ErrorV2[] = [];
  /** Deltas the worker applied (seq, fact), the newest last: replayed as late frames. */
  readonly deltas: { seq: number; fact: Fact }[] = [];
  /** Client events in order (stale, fresh, change, error:<code>), to see what a frame caused first. */
  readonly events: string[] = [];
  /** The last stale reasons and connection events, with times (for a failure's message). */
  readonly trail: string[] = [];
  #nextPacketId = 1;
  #run = 0;

  constructor(index: number, pool: WorkerPool, options: LaneOptions) {
    this.index = index;
    this.pool = pool;
    this.options = options;
  }

  async start(): Promise<void> {
    const { logger, heartbeatMs } = this.options;
    this.db = await createTestDatabase();
    this.control = await startTestControlPlane({
      databaseUrl: this.db.url,
      overrides: {
        'stream.heartbeatMs': heartbeatMs,
        'database.poolSize': 4,
        replicaId: `cp-lane-${this.index}`,
        // Requests stay pending for the lane's life: a worker that was away learns every erasure
        // from the next snapshot, so the model can say when it erases (a request completed before
        // the worker came back, a tombstone, is test/integration/controlplane-e2e's subject).
        'ledger.graceMs': 3_600_000,
      },
    });
    this.relay = await StreamRelay.start({ target: this.control.cp.streamUrl, secret: this.control.secret });
    this.policy = new PolicyFacts({ url: this.control.cp.url, tokens: this.control.tokens });
    this.state = new PolicyState();
    this.client = new ControlClient({
      url: this.relay.url,
      workerId: `w-${this.index}`,
      secret: this.control.secret,
      state: this.state,
      logger,
      // A fixed, short reconnect delay (jitter pinned): a stale period lasts ~40 ms, long enough
      // to send and receive a batch while the worker is stale, short enough for 10,000 calls.
      backoff: { minMs: 25, maxMs: 25 },
      random: () => 0.999,
    });
    if (this.options.threaded) {
      // Every packet's verdict as its thread read the gate word (the threads' counterpart of spyArrivals).
      this.threads = await MediaThreadPool.start({
        threads: 2,
        maxTracks: 4096,
        portMin: 52_000 + this.index * 1000,
        portMax: 52_999 + this.index * 1000,
        bindAddress: '127.0.0.1',
        logger,
        onVerdict: (v) => this.arrival(packetIdOf(v.payloadHead), v.writable),
      });
      this.plane = new ThreadedMediaPlane(this.threads, { maxStreams: 1_000_000, retryAfterSeconds: 1, isReady: () => true, sink: { packet: () => undefined } });
      this.sender = dgram.createSocket('udp4');
      this.sender.bind(0, '127.0.0.1');
      await once(this.sender, 'listening');
    }
    this.recorder = new Recorder({
      control: this.client,
      state: this.state,
      store: this.store,
      ...(this.threads ? { directTracks: this.threads } : {}),
      admitter: new ControlAdmitter(this.client),
      logger,
      segmentSeconds: 0.1, // 5 packets per segment: segments are cut inside runs too
      maxStreams: 1_000_000,
      maxEventLoopLagMs: 1e9, // overload admission is not the subject here
    });
    // What each call reported last (R7), kept after the recorder forgets an ended call (call.ended
    // detaches it at once, and with it the recorder's own last state).
    this.recorder.on('state', (callId, state) => this.reported.set(callId, state));
    // Every poke waits for the end of the turn: conditions are judged once the client's listeners
    // (the recorder's among them: it re-decides, asks for admissions, reports) have all run.
    const poke = (): void => queueMicrotask(this.waiter.poke);
    const note = (what: string): void => {
      this.trail.push(`${new Date().toISOString().slice(17, 23)} ${what}`);
      if (this.trail.length > 12) this.trail.shift();
    };
    this.client.on('stale', (reason) => note(`stale:${reason}`));
    this.client.on('auth-failed', (reason) => note(`auth-failed:${reason}`));
    this.relay.on('connection', () => note('relay:upstream-open'));
    this.client.on('stale', (reason) => {
      // The reason tells a heartbeat timeout of the loaded machine from a stale the worker chose.
      this.events.push(reason === 'heartbeat-missed' ? 'stale' : `stale:${reason}`);
      this.epoch++;
      poke();
    });
    this.client.on('fresh', () => {
      note('fresh');
      this.events.push('fresh');
      this.epoch++;
      this.freshCount++;
      poke();
    });
    this.client.on('change', poke);
    this.client.on('fact', (fact, seq) => {
      this.deltas.push({ seq, fact });
      if (this.deltas.length > 64) this.deltas.shift();
      poke();
    });
    this.client.on('protocol-error', (e) => {
      this.protocolErrors.push(e);
      this.events.push(`error:${e.code}`);
      poke();
    });
    this.client.on('change', () => {
      this.events.push('change');
    });
    this.recorder.on('state', poke);
    this.client.start();
    await this.client.waitFresh(10_000);
  }

  async stop(): Promise<void> {
    await this.recorder?.close();
    await this.plane?.close();
    await this.threads?.close();
    this.sender?.close();
    this.client?.close();
    await this.relay?.close();
    await this.control?.close();
    await this.db?.drop().catch(() => undefined);
  }

  /**
   * The worker applied every fact the control plane accepted, and the recorder has acted on it:
   * no admission waits for the control plane's answer, and none waits to ask again after an
   * answer that did not come in time (`cap-unknown`: the loaded machine's database was slower
   * than the worker's cap timeout; the gate stays closed, safe, and the retry follows in 1 s).
   */
  caughtUp = (): boolean =>
    this.client.phase === 'live' &&
    this.client.fresh &&
    this.client.lastSeq >= this.postedSeq &&
    ![...this.recorder.calls.values()].some((c) => c.phase.name === 'admitting' || c.phase.name === 'cap-unknown');

  /** No call waits for the worker's answer that ends an opening's fence (CallRecorder.fenced). */
  fencesDown = (): boolean => [...this.recorder.calls.values()].every((c) => !c.fenced);

  /** A packet reached its track, with the gate as the track's thread (or the tap) read it. */
  arrival = (id: number | undefined, writable: boolean): void => {
    if (id === undefined) return;
    const p = this.packets.get(id);
    if (p === undefined) {
      this.currentRun?.fail(`unknown packet id ${id} arrived`);
      return;
    }
    if (p.arrived) this.currentRun?.fail(`packet ${id} arrived twice`);
    p.arrived = true;
    p.writable = writable;
    this.waiter.poke();
  };

  nextPacketId(): number {
    return this.#nextPacketId++;
  }

  /**
   * Starts a run of `sc`: its schedules and calls announced to the control plane (and applied
   * by the worker), a room per call with a tap on every leg, attached to the recorder in call order.
   */
  async beginRun(sc: Scenario): Promise<GateRun> {
    const run = ++this.#run;
    this.events.length = 0;
    // Make sure a previous (failed or shrunk) run left the lane healthy.
    this.relay.up();
    this.relay.startHeartbeats();
    if (!(await this.waiter.until(this.caughtUp, this.options.settleTimeoutMs))) throw new Error(`L${this.index}r${run}: control stream not fresh at start`);
    const gateRun = new GateRun(this, run);
    this.currentRun = gateRun;
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

  /** Facts posted to the control plane's API (which may refuse), mirrored in the model when accepted. */
  async serverFact(fact: Fact): Promise<boolean> {
    const answer = await this.lane.policy.tryFact(fact);
    if (answer.status >= 300) return false; // refused: nothing appended, nothing changed
    this.lane.postedSeq = Math.max(this.lane.postedSeq, Number(answer.body.seq));
    this.model.serverApplied(fact);
    return true;
  }

  async open(sc: Scenario): Promise<void> {
    const lane = this.lane;
    const { tag } = this;
    const timeout = lane.options.settleTimeoutMs;
    this.#agentIds = Array.from({ length: sc.schedules.length }, (_, i) => `${tag}a${i}`);
    this.#now0 = Date.now();
    for (const [i, s] of sc.schedules.entries()) await this.serverFact({ type: 'schedule.set', agentId: this.#agentIds[i]!, windows: this.#windowsFor(s.window), monthlyCap: s.cap });
    for (let i = 0; i < sc.calls.length; i++) {
      const spec = sc.calls[i]!;
      const callId = `${tag}c${i}`;
      const participants: Participant[] = [
        ...spec.agents.map((a, k): Participant => ({ participantId: `${callId}g${k}`, role: 'agent', subjectId: this.#agentIds[a]! })),
        ...Array.from({ length: spec.customers }, (_, k): Participant => ({ participantId: `${callId}k${k}`, role: 'customer', subjectId: `${callId}s${k}` })),
      ];
      await this.serverFact({ type: 'call.started', callId, participants });
      if (spec.granted) {
        for (const p of participants) if (p.role === 'customer') await this.serverFact({ type: 'consent.granted', callId, participantId: p.participantId, evidence: this.#evidence() });
      }
    }
    if (!(await lane.waiter.until(lane.caughtUp, timeout))) throw new Error(`${tag}: calls not applied`);
    if (lane.plane && lane.sender) {
      await this.#openThreaded(sc.calls.map((_, i) => `${tag}c${i}`), lane.plane, lane.sender);
      return;
    }
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
        if (!(track instanceof TrackRecorder)) throw new Error(`${tag}: a tapped leg's track is not in-process`);
        spyArrivals(track, (id, writable) => lane.arrival(id, writable));
      }
      this.calls.push({
        index: i, callId, participants, customers: participants.filter((p) => p.role === 'customer').map((p) => p.participantId),
        room: rooms[i]!, legs: legsPerCall[i]!, rec, admission: 'none', erased: false, wasOpen: false,
      });
    }
    await settleTurns(2);
  }

  /**
   * The threaded path: each participant a stream of the media threads (its socket in its call's
   * thread) and a direct track of the recorder, opened in call order (each open decides the call
   * at once, so the order is the model's order).
   */
  async #openThreaded(callIds: string[], plane: ThreadedMediaPlane, sender: dgram.Socket): Promise<void> {
    const senderPort = (sender.address() as { port: number }).port;
    for (const [i, callId] of callIds.entries()) {
      const participants = this.model.server.calls.get(callId)!.participants;
      const legs: UdpLeg[] = [];
      for (const [k, p] of participants.entries()) {
        const stream = await plane.open({
          callId,
          participantId: p.participantId,
          speakers: [p.participantId],
          codec: { name: 'opus', payloadType: 111, clockRate: 48_000, channels: 2 },
          remote: { address: '127.0.0.1', rtpPort: senderPort, rtcpPort: senderPort, rtcpMux: true },
          held: false,
        });
        this.lane.recorder.openDirectTrack(callId, p.participantId, 'opus', participants.length);
        legs.push(new UdpLeg(p.participantId, sender, stream, 0x1000 + i * 4 + k));
      }
      const rec = this.lane.recorder.calls.get(callId)!;
      this.calls.push({
        index: i, callId, participants, customers: participants.filter((p) => p.role === 'customer').map((p) => p.participantId),
        room: undefined, legs, rec, admission: 'none', erased: false, wasOpen: false,
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

  /** Remembers the control plane's facts at the worker's current sequence number (for replaying old snapshots). */
  recordHistory(): void {
    const seq = this.lane.client.lastSeq;
    if (this.#history[this.#history.length - 1]?.seq !== seq) this.#history.push({ seq, view: cloneView(this.model.server) });
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
      // call.ended closes the call's room and legs in the recorder: nothing can reach it any more.
      if (!lane.recorder.calls.has(c.callId)) continue;
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

  runFact(a: FactAction): Promise<boolean> {
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
      this.fail(
        `${where}: worker did not catch up (phase ${lane.client.phase}, lastSeq ${lane.client.lastSeq}, posted ${lane.postedSeq}, ` +
          `admitting ${[...lane.recorder.calls.values()].filter((c) => c.phase.name === 'admitting').length}, relay sessions ${lane.relay.connections}, ` +
          `control-plane sessions ${lane.control.cp.stream.sessionCount}; trail: ${lane.trail.join(' | ')})`,
      );
      return false;
    }
    if (process.env.DEBUG_SETTLE) console.log(`SETTLE ${new Date().toISOString()} ${where} last=${lane.client.lastSeq} posted=${lane.postedSeq} phases=${[...lane.recorder.calls.values()].map((c) => c.phase.name).join(',')}`);
    await settleTurns(2);
    // An opening is applied once its fence is down (one round trip to the mediasoup worker).
    if (!(await lane.waiter.until(lane.fencesDown, lane.options.settleTimeoutMs))) {
      this.fail(`${where}: a gate fence stayed up`);
      return false;
    }
    return true;
  }

  /** Makes the policy stream stale: on the link (the relay), as a crash, a lost fact or a silent control plane would. */
  startFault(fault: FaultKind): void {
    const { relay, client } = this.lane;
    if (fault === 'drop') relay.dropConnections();
    else if (fault === 'skipSeq') relay.skipSeq();
    else if (fault === 'heartbeatLoss') relay.stopHeartbeats();
    else {
      // A man in the middle without the secret: a consent.granted for the first customer of the
      // run, next in sequence, with a MAC that cannot verify. Refused; the worker resynchronises.
      const c = this.calls[0]!;
      const forged = { v: 2, type: 'delta', seq: client.lastSeq + 1, at: Date.now(), fact: { type: 'consent.granted', callId: c.callId, participantId: c.customers[0]!, evidence: this.#evidence() } };
      relay.injectRaw(`${'A'.repeat(43)} ${JSON.stringify(forged)}`);
    }
  }

  /** The fault is over: the link accepts the worker again, heartbeats flow. */
  endFault(): void {
    this.lane.relay.up();
    this.lane.relay.startHeartbeats();
  }

  /**
   * Facts the worker misses while stale (it must learn them from the snapshot): the link is held
   * down meanwhile, so they all land in the same stale period (`epoch`). Anything goes, including
   * a withdrawal with erase followed by another act of the same customer or by the end of the
   * call: the erasure stays pending at the control plane until this worker confirms it, and the
   * snapshot carries it (issue 13; the "protocol gap" of the reference server is closed).
   */
  async applyStaleFacts(facts: FactAction[], epoch: number): Promise<void> {
    const lane = this.lane;
    if (facts.length === 0) return;
    lane.relay.down();
    try {
      for (const f of facts) {
        if (lane.client.fresh || lane.epoch !== epoch) break;
        await this.runFact(f);
      }
    } finally {
      lane.relay.up();
    }
  }

  /**
   * Performs a step's action other than a fault: a fact through the server, or a frame injected
   * on the stream that the worker must reject. `injected` says whether a frame was sent, and
   * `expectCode` the error code the worker must answer it with (undefined: any rejection).
   */
  async perform(a: Exclude<Action, { kind: 'fault' }>): Promise<{ injected: boolean; expectCode: string | undefined }> {
    const { relay, client } = this.lane;
    let injected = true;
    let expectCode: string | undefined;
    const next = client.lastSeq + 1;
    switch (a.kind) {
      case 'garbage': {
        // Authentic frames (sealed by the relay, which holds the session key) that are wrong.
        const garbage = [
          'not json at all',
          '[1,2,3]',
          JSON.stringify({ v: 1, type: 'delta', seq: next, at: Date.now(), fact: { type: 'call.paused', callId: this.calls[0]!.callId } }),
          JSON.stringify({ v: 2, type: 'delta', seq: next, at: Date.now(), fact: { type: 'call.resumed', callId: this.calls[0]!.callId }, extra: true }),
          JSON.stringify({ v: 2, type: 'nonsense', seq: 1 }),
          JSON.stringify({ v: 2, type: 'delta', seq: next, at: Date.now(), fact: { type: 'consent.granted', callId: 'bad id!', participantId: 'x', evidence: { method: 'silence', at: 1, infoVersion: 'v' } } }),
          'x'.repeat(70_000),
          JSON.stringify({ v: 2, type: 'snapshot', seq: 0, at: 0, part: 2, parts: 1, calls: [], agents: [], erasures: [], deletions: [], tombstones: [] }),
        ];
        relay.inject(garbage[a.which % garbage.length]!);
        expectCode = ['bad-json', 'bad-json', 'bad-version', 'invalid-message', 'unknown-type', 'invalid-message', 'too-large', 'invalid-message'][a.which % garbage.length];
        break;
      }
      case 'lateDelta': {
        const deltas = this.lane.deltas;
        const old = deltas[deltas.length - 1 - Math.min(a.back - 1, deltas.length - 1)];
        if (old === undefined) injected = false;
        else relay.inject({ v: 2, type: 'delta', seq: old.seq, at: Date.now(), fact: old.fact });
        expectCode = 'duplicate';
        break;
      }
      case 'lateHeartbeat': {
        const seq = client.lastSeq - a.back;
        if (seq < 0) injected = false;
        else relay.inject({ v: 2, type: 'heartbeat', seq, at: Date.now() });
        expectCode = 'duplicate';
        break;
      }
      case 'lateSnapshot': {
        const old = this.#history.filter((h) => h.seq < client.lastSeq);
        const h = old[Math.max(0, old.length - a.back)];
        if (h === undefined) injected = false;
        else relay.inject(JSON.stringify(wireSnapshot(h.view, h.seq)));
        expectCode = 'duplicate';
        break;
      }
      case 'dupHello':
        relay.inject({ v: 2, type: 'hello', serverId: 'policy-x', proof: 'A'.repeat(43), serverNonce: 'N'.repeat(32), heartbeatMs: this.lane.options.heartbeatMs });
        expectCode = 'unexpected-message';
        break;
      case 'packetsOnly':
        injected = false;
        break;
      default:
        injected = false;
        await this.runFact(a);
    }
    return { injected, expectCode };
  }

  /** Ends the calls still in progress at the control plane and lets the worker apply it. */
  async endCalls(): Promise<void> {
    for (const c of this.calls) if (this.model.server.calls.get(c.callId)?.ended === false) await this.serverFact({ type: 'call.ended', callId: c.callId });
    await this.settleLive(`${this.tag} end`);
    this.absorb(this.lane.client.fresh);
  }

  /** Detaches and closes every call, then waits for the erasures the withdrawals asked for. */
  async detachCalls(): Promise<void> {
    const lane = this.lane;
    for (const c of this.calls) {
      await lane.recorder.detachCall(c.callId);
      for (const leg of c.legs) leg.close();
      c.room?.close();
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
