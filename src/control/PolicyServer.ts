import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { OptinError, type ErrorCode } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { checkSchedule, DEFAULT_CONTIGUITY_TOLERANCE_MS } from '../gate/schedule.ts';
import {
  AUTH_FAILURE_TEXT,
  NONCE_HEADER,
  NonceCache,
  TOKEN_MAX_AGE_MS,
  assertSecret,
  serverProof,
  verifyWorkerToken,
  type AuthFailureReason,
  type Secret,
} from './auth.ts';
import { MAX_MESSAGE_BYTES, PROTOCOL_VERSION, WS_MAX_PAYLOAD_BYTES, encodeMessage, errorMessage, parseWorkerMessage, type Delta, type ErrorMessage, type RecordingState, type ServerMessage, type Snapshot } from './protocol.ts';
import { FactSchema, type ConsentEvidence, type Fact, type Participant, type Window } from '../gate/facts.ts';
import type { AgentSchedule, CallSnapshot, ConsentEntry } from '../gate/policySnapshot.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';

/**
 * The reference policy server: the demo's and the tests' stand-in for the
 * contact centre's IVR + workforce-management side, and a starting point for
 * integrators. It holds calls, consents and schedules, sends each newly
 * connected worker a snapshot and then every fact as a numbered delta, beats a
 * heartbeat, and collects the workers' recording-state reports (R7).
 *
 * One global sequence: every connected worker sees the same numbered facts.
 * Fault-injection hooks (`skipSeq`, `stopHeartbeats`, `sendRaw`,
 * `dropConnections`, `sendDuplicate`) exist for tests of the worker's
 * fail-closed behaviour.
 */

export interface PolicyServerOptions {
  /** Shared secret, at least 32 bytes (see auth.ts). */
  secret: Secret;
  /** 0 (default) picks a free port; read it from `listen()` or `url`. */
  port?: number;
  /** Default 127.0.0.1: binding wider is a deliberate act. */
  host?: string;
  /** TLS: key/cert (and ca) for an https server; workers then use `wss://`. */
  https?: HttpsServerOptions;
  /** Heartbeat interval, default 1000 ms. */
  heartbeatMs?: number;
  tokenMaxAgeMs?: number;
  /** Gaps shorter than this join windows for the seven-day rule (R6); default 1 h. */
  contiguityToleranceMs?: number;
  serverId?: string;
  logger?: Logger;
}

export type PolicyServerEvents = {
  /** A worker reported the recording state of a call (R7). */
  'recording-state': [state: RecordingState, workerId: string];
  /** A worker authenticated and received its snapshot. */
  connection: [workerId: string];
  disconnection: [workerId: string];
  /** An upgrade was refused with 401; the reason is safe to log. */
  'auth-failure': [reason: AuthFailureReason];
  /** A worker replied with an error to something we sent. */
  'worker-error': [error: ErrorMessage, workerId: string];
};

interface StoredCall {
  callId: string;
  participants: Participant[];
  consents: Map<string, ConsentEntry>;
  paused: boolean;
}

interface Connection {
  workerId: string;
}

/** Bound on remembered recording states and ended call ids. */
const MAX_REMEMBERED = 10_000;

export class PolicyServer extends TypedEmitter<PolicyServerEvents> {
  readonly #secret: Secret;
  readonly #host: string;
  readonly #port: number;
  readonly #tls: boolean;
  readonly #heartbeatMs: number;
  readonly #tokenMaxAgeMs: number;
  readonly #tolerance: number;
  readonly #serverId: string;
  readonly #logger: Logger | undefined;
  readonly #http: HttpServer;
  readonly #wss: WebSocketServer;
  readonly #nonces = new NonceCache();
  readonly #connections = new Map<WebSocket, Connection>();

  readonly #calls = new Map<string, StoredCall>();
  readonly #endedCallIds = new Set<string>();
  readonly #schedules = new Map<string, AgentSchedule>();
  readonly #recordingStates = new Map<string, RecordingState>();

  #seq = 0;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  #listening: Promise<AddressInfo> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: PolicyServerOptions) {
    super();
    assertSecret(options.secret);
    this.#secret = options.secret;
    this.#host = options.host ?? '127.0.0.1';
    this.#port = options.port ?? 0;
    this.#heartbeatMs = options.heartbeatMs ?? 1000;
    if (!Number.isInteger(this.#heartbeatMs) || this.#heartbeatMs < 10 || this.#heartbeatMs > 60_000) {
      throw new OptinError('POLICY_BAD_OPTIONS', 'heartbeatMs must be an integer between 10 and 60000');
    }
    this.#tokenMaxAgeMs = options.tokenMaxAgeMs ?? TOKEN_MAX_AGE_MS;
    this.#tolerance = options.contiguityToleranceMs ?? DEFAULT_CONTIGUITY_TOLERANCE_MS;
    this.#serverId = options.serverId ?? 'policy-server';
    this.#logger = options.logger;
    this.#tls = options.https !== undefined;
    this.#http = options.https !== undefined ? createHttpsServer(options.https) : createHttpServer();
    // Plain HTTP requests are not part of the protocol.
    this.#http.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain; charset=utf-8', upgrade: 'websocket' });
      res.end('this is the optin control stream: connect with a WebSocket\n');
    });
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD_BYTES, perMessageDeflate: false });
    this.#http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
  }

  // -- lifecycle ------------------------------------------------------------------

  /** Starts listening (idempotent) and the heartbeat. */
  listen(): Promise<AddressInfo> {
    if (this.#closed) return Promise.reject(new OptinError('POLICY_SERVER_CLOSED', 'the policy server is closed; create a new one'));
    this.#listening ??= new Promise<AddressInfo>((resolve, reject) => {
      this.#http.once('error', reject);
      this.#http.listen(this.#port, this.#host, () => {
        this.#http.off('error', reject);
        this.startHeartbeats();
        resolve(this.#http.address() as AddressInfo);
      });
    });
    return this.#listening;
  }

  /** `ws://host:port` (or `wss://`); only valid after listen() resolved. */
  get url(): string {
    const address = this.#http.address();
    if (address === null || typeof address === 'string') throw new OptinError('POLICY_SERVER_NOT_LISTENING', 'call listen() first');
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `${this.#tls ? 'wss' : 'ws'}://${host}:${address.port}`;
  }

  get seq(): number {
    return this.#seq;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops listening and closes every connection. Idempotent. */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#closed = true;
    this.stopHeartbeats();
    for (const ws of this.#connections.keys()) ws.terminate();
    this.#closing = new Promise<void>((resolve) => {
      this.#wss.close(() => {
        if (!this.#http.listening) {
          resolve();
          return;
        }
        this.#http.close(() => resolve());
        this.#http.closeAllConnections();
      });
    });
    return this.#closing;
  }

  // -- facts --------------------------------------------------------------------------

  startCall(callId: string, participants: readonly Participant[]): Delta {
    return this.applyFact({ type: 'call.started', callId, participants: [...participants] });
  }

  endCall(callId: string): Delta {
    return this.applyFact({ type: 'call.ended', callId });
  }

  grantConsent(callId: string, participantId: string, evidence: ConsentEvidence): Delta {
    return this.applyFact({ type: 'consent.granted', callId, participantId, evidence });
  }

  declineConsent(callId: string, participantId: string, evidence: ConsentEvidence): Delta {
    return this.applyFact({ type: 'consent.declined', callId, participantId, evidence });
  }

  withdrawConsent(callId: string, participantId: string, options: { erase: boolean; evidence: ConsentEvidence }): Delta {
    return this.applyFact({ type: 'consent.withdrawn', callId, participantId, erase: options.erase, evidence: options.evidence });
  }

  /** Replaces the agent's schedule. Refused (OptinError `policy-schedule-rejected`) when it breaks R6 or lies in the past. */
  setSchedule(agentId: string, windows: readonly Window[], monthlyCap: number): Delta {
    return this.applyFact({ type: 'schedule.set', agentId, windows: [...windows], monthlyCap });
  }

  pause(callId: string): Delta {
    return this.applyFact({ type: 'call.paused', callId });
  }

  resume(callId: string): Delta {
    return this.applyFact({ type: 'call.resumed', callId });
  }

  /**
   * Validates a fact against the schema and this server's state, applies it,
   * and broadcasts it as the next delta. Throws OptinError (nothing sent,
   * nothing changed) when it does not fit.
   */
  applyFact(input: Fact): Delta {
    if (this.#closed) throw new OptinError('POLICY_SERVER_CLOSED', 'the policy server is closed');
    const parsed = FactSchema.safeParse(input);
    if (!parsed.success) {
      const detail = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      throw new OptinError('POLICY_INVALID_FACT', `invalid ${String((input as { type?: unknown }).type)} fact: ${detail}`);
    }
    const fact = parsed.data;
    this.#check(fact);
    const delta: Delta = { v: PROTOCOL_VERSION, type: 'delta', seq: this.#seq + 1, at: Date.now(), fact };
    const text = encodeMessage(delta); // throws before any change if the fact is too large
    this.#apply(fact);
    this.#seq = delta.seq;
    this.#broadcast(text);
    return delta;
  }

  #check(fact: Fact): void {
    const fail = (code: ErrorCode, message: string): never => {
      throw new OptinError(code, message);
    };
    if (fact.type === 'schedule.set') {
      const problems = checkSchedule(fact.windows, fact.monthlyCap, { nowMs: Date.now(), contiguityToleranceMs: this.#tolerance });
      if (problems.length > 0) {
        fail('POLICY_SCHEDULE_REJECTED', `schedule for agent ${fact.agentId} refused: ${problems.map((p) => p.message).join('; ')}`);
      }
      return;
    }
    if (fact.type === 'call.started') {
      if (this.#calls.has(fact.callId) || this.#endedCallIds.has(fact.callId)) {
        fail('POLICY_DUPLICATE_CALL', `call ${fact.callId} already exists or existed; use a fresh call id`);
      }
      return;
    }
    const call = this.#calls.get(fact.callId);
    if (call === undefined) fail('POLICY_UNKNOWN_CALL', `call ${fact.callId} is not in progress; start it first`);
    if (fact.type === 'consent.granted' || fact.type === 'consent.declined' || fact.type === 'consent.withdrawn') {
      const p = call!.participants.find((x) => x.participantId === fact.participantId);
      if (p === undefined) fail('POLICY_UNKNOWN_PARTICIPANT', `participant ${fact.participantId} is not in call ${fact.callId}`);
      if (p!.role !== 'customer') fail('POLICY_NOT_A_CUSTOMER', `participant ${fact.participantId} is an agent; consent facts are for customers`);
    }
  }

  #apply(fact: Fact): void {
    switch (fact.type) {
      case 'call.started':
        this.#calls.set(fact.callId, { callId: fact.callId, participants: fact.participants, consents: new Map(), paused: false });
        break;
      case 'call.ended':
        this.#calls.delete(fact.callId);
        this.#endedCallIds.add(fact.callId);
        trim(this.#endedCallIds);
        break;
      case 'call.paused':
      case 'call.resumed':
        this.#calls.get(fact.callId)!.paused = fact.type === 'call.paused';
        break;
      case 'consent.granted':
      case 'consent.declined':
        this.#calls.get(fact.callId)!.consents.set(fact.participantId, {
          participantId: fact.participantId,
          status: fact.type === 'consent.granted' ? 'granted' : 'declined',
          evidence: fact.evidence,
        });
        break;
      case 'consent.withdrawn':
        this.#calls.get(fact.callId)!.consents.set(fact.participantId, {
          participantId: fact.participantId,
          status: 'withdrawn',
          evidence: fact.evidence,
          erase: fact.erase,
        });
        break;
      case 'schedule.set':
        this.#schedules.set(fact.agentId, { agentId: fact.agentId, windows: fact.windows, monthlyCap: fact.monthlyCap });
        break;
    }
  }

  /** The last recording state any worker reported for the call. */
  lastRecordingState(callId: string): RecordingState | undefined {
    return this.#recordingStates.get(callId);
  }

  // -- fault injection (tests) -----------------------------------------------------------

  /** Consumes a sequence number without sending it: workers must detect the gap. */
  skipSeq(): void {
    this.#seq++;
  }

  stopHeartbeats(): void {
    if (this.#heartbeatTimer !== undefined) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
  }

  startHeartbeats(): void {
    if (this.#closed || this.#heartbeatTimer !== undefined) return;
    // One shared timer for every connection.
    this.#heartbeatTimer = setInterval(() => {
      this.#broadcast(encodeMessage({ v: PROTOCOL_VERSION, type: 'heartbeat', seq: this.#seq, at: Date.now() }));
    }, this.#heartbeatMs);
  }

  /** Sends arbitrary text to every worker (malformed, oversized, unknown messages). */
  sendRaw(text: string): void {
    this.#broadcast(text);
  }

  /** Re-sends a message already sent (a duplicate or, later, an out-of-order one). */
  sendDuplicate(message: ServerMessage): void {
    this.#broadcast(JSON.stringify(message));
  }

  /** Kills every worker connection without a closing handshake, as a network failure would. */
  dropConnections(): void {
    for (const ws of this.#connections.keys()) ws.terminate();
  }

  // -- connections ------------------------------------------------------------------------

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const nonceHeader = req.headers[NONCE_HEADER];
    const nonce = Array.isArray(nonceHeader) ? undefined : nonceHeader;
    const now = Date.now();
    let check = verifyWorkerToken(this.#secret, req.headers.authorization, nonce, now, this.#tokenMaxAgeMs);
    if (check.ok && !this.#nonces.remember(nonce!, now)) check = { ok: false, reason: 'nonce-reused' };
    if (!check.ok) {
      this.#logger?.warn({ reason: check.reason }, 'control: refused worker connection');
      const body = `${AUTH_FAILURE_TEXT[check.reason]}\n`;
      socket.end(
        'HTTP/1.1 401 Unauthorized\r\n' +
          'Connection: close\r\n' +
          'Content-Type: text/plain; charset=utf-8\r\n' +
          `Content-Length: ${Buffer.byteLength(body)}\r\n` +
          `WWW-Authenticate: Bearer error="invalid_token"\r\n` +
          `X-Optin-Auth-Error: ${check.reason}\r\n` +
          '\r\n' +
          body,
      );
      this.safeEmit('auth-failure', check.reason);
      return;
    }
    const workerId = check.workerId;
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws, workerId, nonce!));
  }

  #onConnection(ws: WebSocket, workerId: string, nonce: string): void {
    if (this.#closed) {
      ws.terminate();
      return;
    }
    this.#connections.set(ws, { workerId });
    ws.on('message', (data, isBinary) => this.#onMessage(ws, workerId, data as Buffer, isBinary));
    ws.on('error', (err) => this.#logger?.debug({ workerId, err: err.message }, 'control: socket error'));
    ws.on('close', () => {
      if (this.#connections.delete(ws)) {
        this.#logger?.info({ workerId }, 'control: worker disconnected');
        this.safeEmit('disconnection', workerId);
      }
    });
    // hello, then the snapshot, synchronously: no delta can slip in between,
    // so the first delta the worker sees is exactly snapshot.seq + 1.
    ws.send(
      encodeMessage({
        v: PROTOCOL_VERSION,
        type: 'hello',
        serverId: this.#serverId,
        proof: serverProof(this.#secret, nonce),
        heartbeatMs: this.#heartbeatMs,
      }),
    );
    for (const part of this.#snapshotParts()) ws.send(part);
    this.#logger?.info({ workerId, seq: this.#seq }, 'control: worker connected');
    this.safeEmit('connection', workerId);
  }

  /**
   * Splits the state into snapshot frames of at most 64 KiB each. Entries are
   * packed greedily by their encoded size; an empty state is one empty part.
   */
  #snapshotParts(): string[] {
    const at = Date.now();
    const calls: CallSnapshot[] = [...this.#calls.values()].map((c) => ({
      callId: c.callId,
      participants: c.participants,
      consents: [...c.consents.values()],
      paused: c.paused,
    }));
    const agents = [...this.#schedules.values()];
    // Envelope with worst-case numbers, so the real one can only be shorter.
    const envelope = JSON.stringify({
      v: 1, type: 'snapshot', seq: Number.MAX_SAFE_INTEGER, at: Number.MAX_SAFE_INTEGER, part: 9999, parts: 9999, calls: [], agents: [],
    }).length;
    const budget = MAX_MESSAGE_BYTES - envelope;
    const groups: { calls: CallSnapshot[]; agents: AgentSchedule[] }[] = [];
    let cur = { calls: [] as CallSnapshot[], agents: [] as AgentSchedule[] };
    let size = 0;
    const push = (bytes: number, add: () => void): void => {
      if (size + bytes + 1 > budget && (cur.calls.length > 0 || cur.agents.length > 0)) {
        groups.push(cur);
        cur = { calls: [], agents: [] };
        size = 0;
      }
      add();
      size += bytes + 1; // +1 for the separating comma
    };
    for (const c of calls) push(Buffer.byteLength(JSON.stringify(c)), () => cur.calls.push(c));
    for (const a of agents) push(Buffer.byteLength(JSON.stringify(a)), () => cur.agents.push(a));
    groups.push(cur);
    return groups.map((g, part) => {
      const snapshot: Snapshot = {
        v: PROTOCOL_VERSION, type: 'snapshot', seq: this.#seq, at, part, parts: groups.length, calls: g.calls, agents: g.agents,
      };
      return encodeMessage(snapshot);
    });
  }

  #onMessage(ws: WebSocket, workerId: string, data: Buffer, isBinary: boolean): void {
    const parsed = parseWorkerMessage(data, isBinary);
    if (!parsed.ok) {
      this.#logger?.warn({ workerId, code: parsed.code }, 'control: bad message from worker');
      this.#send(ws, encodeMessage(errorMessage(parsed.code, parsed.message, parsed.ref)));
      return;
    }
    const msg = parsed.message;
    if (msg.type === 'error') {
      this.#logger?.warn({ workerId, code: msg.code, ref: msg.ref }, 'control: worker reported an error');
      this.safeEmit('worker-error', msg, workerId);
      return;
    }
    this.#recordingStates.delete(msg.callId); // re-insert: Map order = recency, for trimming
    this.#recordingStates.set(msg.callId, msg);
    trim(this.#recordingStates);
    this.safeEmit('recording-state', msg, workerId);
  }

  #broadcast(text: string): void {
    for (const ws of this.#connections.keys()) this.#send(ws, text);
  }

  #send(ws: WebSocket, text: string): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(text);
  }
}

function trim(collection: Set<string> | Map<string, unknown>): void {
  while (collection.size > MAX_REMEMBERED) {
    const oldest = collection.keys().next().value as string;
    collection.delete(oldest);
  }
}
