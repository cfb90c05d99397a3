import { performance } from 'node:perf_hooks';
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { PolicyState } from '../gate/PolicyState.ts';
import { NONCE_HEADER, assertSecret, createNonce, createWorkerToken, verifyServerProof, type Secret } from './auth.ts';
import { PROTOCOL_VERSION, RecordingStateSchema, WS_MAX_PAYLOAD_BYTES, encodeMessage, errorMessage, parseServerMessage, type ErrorCode, type ErrorMessage, type RecordingState, type RecordingStateReport, type Snapshot } from './protocol.ts';
import type { Fact } from '../gate/facts.ts';
import type { AgentSchedule, CallSnapshot } from '../gate/policySnapshot.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';

/**
 * The worker's end of the control stream (docs/architecture.md §4). It owns a PolicyState
 * and keeps it either fresh (in sync with the server, facts applied in
 * sequence) or stale (every gate closed with `control-stale`). Anything that
 * could mean a lost fact makes it stale until the next snapshot:
 *  - a gap in delta sequence numbers (also revealed by a heartbeat's seq),
 *  - no message for `heartbeatTimeoutMs` (default three server heartbeats),
 *  - a closed or failed socket, an auth failure either way, a broken snapshot.
 * The client then drops the socket and reconnects with exponential backoff
 * and full jitter; the server sends hello + snapshot on every connection.
 *
 * Frames that are malformed, unknown, duplicated or late get an error reply
 * and change nothing.
 */

export interface ControlClientOptions {
  /** `ws://` or `wss://` URL of the policy server. */
  url: string;
  /** Pseudonymous id of this worker, put in the token. */
  workerId: string;
  /** Shared secret (>= 32 bytes). */
  secret: Secret;
  /** Trusted CA certificate(s) for `wss://` with a private CA. Server certificates are always verified. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Silence after which the stream is stale. Default: 3 x the heartbeat interval the server announces. */
  heartbeatTimeoutMs?: number;
  /** Time allowed from dialling to a complete snapshot. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Reconnect delay = random(0, min(maxMs, minMs * 2^attempt)). Defaults 200 ms and 10 s. */
  backoff?: { minMs?: number; maxMs?: number };
  /** State to feed (default: a new one). */
  state?: PolicyState;
  logger?: Logger;
  /** Source of randomness for the jitter (tests). */
  random?: () => number;
}

export type StaleReason =
  | 'never-synced'
  | 'connecting'
  | 'socket-closed'
  | 'seq-gap'
  | 'heartbeat-missed'
  | 'connect-timeout'
  | 'auth-failed'
  | 'bad-proof'
  | 'protocol-error'
  | 'closed';

export type ControlClientEvents = {
  /** The state went stale: every gate must close now. */
  stale: [reason: StaleReason];
  /** A snapshot was applied: the state is fresh again. */
  fresh: [];
  /** The decision for this call (or for every call: 'all') may have changed. Re-decide before the next packet. */
  change: [callId: string];
  /** A fact was applied (for the audit trail); `seq` is its delta seq. */
  fact: [fact: Fact, seq: number];
  /** The server refused us (HTTP status and its reason) or failed to prove the secret. */
  'auth-failed': [reason: string];
  /** The server sent an `error` frame. */
  'server-error': [error: ErrorMessage];
  /** We replied to a bad server frame with this error. */
  'protocol-error': [error: ErrorMessage];
  /** close() was called. */
  closed: [];
};

/** Named connection phases (STYLE: explicit state, not clusters of booleans). */
export type ControlPhase = 'idle' | 'connecting' | 'awaiting-hello' | 'awaiting-snapshot' | 'live' | 'backoff' | 'closed';

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const MAX_REPORTS = 10_000;
const CLOSE_PROTOCOL_FAILURE = 4000;
const CLOSE_BAD_PROOF = 4003;

interface PendingSnapshot {
  seq: number;
  parts: number;
  next: number;
  calls: CallSnapshot[];
  agents: AgentSchedule[];
}

export class ControlClient extends TypedEmitter<ControlClientEvents> {
  readonly state: PolicyState;
  readonly #url: string;
  readonly #workerId: string;
  readonly #secret: Secret;
  readonly #ca: ControlClientOptions['ca'];
  readonly #heartbeatTimeoutOption: number | undefined;
  readonly #connectTimeoutMs: number;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #logger: Logger | undefined;
  readonly #random: () => number;

  #phase: ControlPhase = 'idle';
  #ws: WebSocket | undefined;
  #nonce = '';
  #attempt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** One liveness timer per client (not per call); re-armed lazily, see #onLivenessTimer. */
  #livenessTimer: NodeJS.Timeout | undefined;
  #lastHeardMs = 0;
  #deadlineMs = 0;
  #heartbeatTimeoutMs = 0;
  #lastSeq = -1;
  #pending: PendingSnapshot | undefined;
  /** Last report per call, resent after a reconnect; Map order = recency, for trimming. */
  readonly #reports = new Map<string, RecordingState>();

  constructor(options: ControlClientOptions) {
    super();
    assertSecret(options.secret);
    if (!/^wss?:\/\//.test(options.url)) throw new OptinError('CONTROL_BAD_URL', 'control url must start with ws:// or wss://');
    this.#url = options.url;
    this.#workerId = options.workerId;
    this.#secret = options.secret;
    this.#ca = options.ca;
    this.#heartbeatTimeoutOption = options.heartbeatTimeoutMs;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#minBackoffMs = options.backoff?.minMs ?? 200;
    this.#maxBackoffMs = options.backoff?.maxMs ?? 10_000;
    this.#logger = options.logger?.child({ workerId: options.workerId, component: 'control' });
    this.#random = options.random ?? Math.random;
    this.state = options.state ?? new PolicyState();
    // Validates the worker id now rather than at the first dial.
    createWorkerToken(this.#secret, this.#workerId, createNonce());
    this.state.markStale('never-synced');
  }

  get phase(): ControlPhase {
    return this.#phase;
  }

  get fresh(): boolean {
    return this.state.fresh;
  }

  /** Seq of the last applied snapshot or delta (-1 before the first snapshot). */
  /** Milliseconds since the last message from the server (heartbeats included); Infinity before any. */
  get silentMs(): number {
    return this.#lastHeardMs === 0 ? Number.POSITIVE_INFINITY : performance.now() - this.#lastHeardMs;
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Starts connecting (idempotent). */
  start(): void {
    if (this.#phase !== 'idle') return;
    this.#dial();
  }

  /** Resolves on the next `fresh` (immediately if fresh now); rejects after `timeoutMs`. */
  waitFresh(timeoutMs = 10_000): Promise<void> {
    if (this.state.fresh) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onFresh = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.off('fresh', onFresh);
        reject(new OptinError('CONTROL_NOT_FRESH', `control stream not in sync after ${timeoutMs} ms; check the policy server and the secret`, { retryable: true }));
      }, timeoutMs);
      this.once('fresh', onFresh);
    });
  }

  /**
   * Tells the server the recording state of a call (R7). Sent at once when
   * live, dropped when not; the last report per call is resent after every
   * reconnect. Throws OptinError on an invalid report (a recorder bug).
   */
  reportRecordingState(report: RecordingStateReport): void {
    const parsed = RecordingStateSchema.safeParse({ v: PROTOCOL_VERSION, type: 'recording-state', ...report });
    if (!parsed.success) {
      throw new OptinError('CONTROL_BAD_REPORT', `invalid recording-state report: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const msg = parsed.data;
    this.#reports.delete(msg.callId);
    // A call the server no longer has needs no resend: this report is the last word on it.
    const final = !msg.recording && (msg.reasons.includes('call-ended') || msg.reasons.includes('unknown-call'));
    if (!final) {
      this.#reports.set(msg.callId, msg);
      while (this.#reports.size > MAX_REPORTS) this.#reports.delete(this.#reports.keys().next().value as string);
    }
    if (this.#phase === 'live') this.#send(encodeMessage(msg));
  }

  /** Closes the socket and stops reconnecting; the state goes stale. Idempotent. */
  close(): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws !== undefined) {
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      if (ws.readyState === WebSocket.OPEN) {
        ws.close(1000, 'worker closing');
        // A peer that never answers the close frame must not keep the process alive.
        setTimeout(() => ws.terminate(), 1000).unref();
      } else {
        ws.terminate();
      }
    }
    this.#goStale('closed');
    this.safeEmit('closed');
  }

  // -- connection management ----------------------------------------------------------

  #dial(): void {
    this.#phase = 'connecting';
    this.#pending = undefined;
    this.#nonce = createNonce();
    const token = createWorkerToken(this.#secret, this.#workerId, this.#nonce);
    const ws = new WebSocket(this.#url, {
      headers: { authorization: `Bearer ${token}`, [NONCE_HEADER]: this.#nonce },
      ca: this.#ca,
      maxPayload: WS_MAX_PAYLOAD_BYTES,
      // Compression would add latency to closing facts and is a decompression-bomb surface.
      perMessageDeflate: false,
      handshakeTimeout: this.#connectTimeoutMs,
      followRedirects: false,
    });
    this.#ws = ws;
    this.#deadlineMs = performance.now() + this.#connectTimeoutMs;
    this.#armLiveness(this.#connectTimeoutMs);
    ws.on('unexpected-response', (_req, res: IncomingMessage) => this.#onUnexpectedResponse(ws, res));
    ws.on('open', () => {
      if (ws !== this.#ws) return;
      this.#phase = 'awaiting-hello';
    });
    ws.on('message', (data, isBinary) => {
      if (ws !== this.#ws) return;
      this.#onMessage(data as Buffer, isBinary);
    });
    ws.on('error', (err) => {
      if (ws !== this.#ws) return;
      this.#logger?.debug({ err: err.message }, 'control: socket error');
    });
    ws.on('close', () => {
      if (ws !== this.#ws) return;
      this.#logger?.info({ phase: this.#phase }, 'control: socket closed');
      this.#drop('socket-closed');
    });
  }

  /** Non-101 answer to the upgrade, typically 401 with the server's reason. */
  #onUnexpectedResponse(ws: WebSocket, res: IncomingMessage): void {
    if (ws !== this.#ws) return;
    const status = res.statusCode ?? 0;
    const header = res.headers['x-optin-auth-error'];
    const reason = `HTTP ${status}${typeof header === 'string' ? ` ${header}` : ''}`;
    res.resume(); // discard the body; the header carries the machine-readable reason
    this.#logger?.warn({ status, reason: header }, 'control: server refused the connection');
    if (status === 401 || status === 403) this.safeEmit('auth-failed', reason);
    this.#drop(status === 401 || status === 403 ? 'auth-failed' : 'socket-closed');
  }

  /** Tears the current socket down, goes stale, and schedules a reconnect. */
  #drop(reason: StaleReason, closeCode?: number): void {
    if (this.#phase === 'closed') return;
    const ws = this.#ws;
    this.#ws = undefined;
    this.#pending = undefined;
    if (ws !== undefined) {
      ws.removeAllListeners();
      ws.on('error', () => undefined); // late errors of a dropped socket are expected
      if (closeCode !== undefined && ws.readyState === WebSocket.OPEN) {
        ws.close(closeCode, reason);
        // Do not wait for the peer's close frame.
        setTimeout(() => ws.terminate(), 1000).unref();
      } else {
        ws.terminate();
      }
    }
    this.#goStale(reason);
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    this.#clearTimers();
    this.#phase = 'backoff';
    // Full jitter (random in [0, cap]) spreads a fleet of workers reconnecting after a server restart.
    const cap = Math.min(this.#maxBackoffMs, this.#minBackoffMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    const delay = Math.floor(this.#random() * cap);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#phase === 'backoff') this.#dial();
    }, delay);
  }

  #goStale(reason: StaleReason): void {
    if (this.state.markStale(reason)) {
      this.#logger?.warn({ reason }, 'control: stream stale, closing every gate');
      this.safeEmit('stale', reason);
      this.safeEmit('change', 'all');
    }
  }

  // -- liveness ---------------------------------------------------------------------------------

  #armLiveness(ms: number): void {
    if (this.#livenessTimer !== undefined) clearTimeout(this.#livenessTimer);
    this.#livenessTimer = setTimeout(() => this.#onLivenessTimer(), Math.max(1, Math.ceil(ms)));
  }

  /** Any valid frame from the server proves liveness; a frame costs one number store, not a timer reset. */
  #heard(): void {
    this.#lastHeardMs = performance.now();
  }

  #onLivenessTimer(): void {
    this.#livenessTimer = undefined;
    const now = performance.now();
    if (this.#phase === 'live') {
      const silentFor = now - this.#lastHeardMs;
      if (silentFor >= this.#heartbeatTimeoutMs) {
        this.#logger?.warn({ silentMs: Math.round(silentFor) }, 'control: heartbeat missed');
        this.#drop('heartbeat-missed', CLOSE_PROTOCOL_FAILURE);
      } else {
        this.#armLiveness(this.#heartbeatTimeoutMs - silentFor);
      }
      return;
    }
    if (this.#phase === 'connecting' || this.#phase === 'awaiting-hello' || this.#phase === 'awaiting-snapshot') {
      if (now >= this.#deadlineMs) this.#drop('connect-timeout', CLOSE_PROTOCOL_FAILURE);
      else this.#armLiveness(this.#deadlineMs - now);
    }
  }

  #clearTimers(): void {
    if (this.#livenessTimer !== undefined) clearTimeout(this.#livenessTimer);
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#livenessTimer = undefined;
    this.#reconnectTimer = undefined;
  }

  // -- frames ---------------------------------------------------------------------------------------

  #onMessage(data: Buffer, isBinary: boolean): void {
    const parsed = parseServerMessage(data, isBinary);
    if (!parsed.ok) {
      this.#reply(parsed.code, parsed.message, parsed.ref);
      return;
    }
    const msg = parsed.message;
    switch (msg.type) {
      case 'error':
        this.#logger?.warn({ code: msg.code, ref: msg.ref }, 'control: server reported an error');
        this.safeEmit('server-error', msg);
        return;
      case 'hello': {
        if (this.#phase !== 'awaiting-hello') {
          this.#reply('unexpected-message', 'hello is only valid as the first frame of a connection');
          return;
        }
        if (!verifyServerProof(this.#secret, this.#nonce, msg.proof)) {
          // An impostor (or a server with another secret): do not believe a word, stay stale.
          this.#logger?.error('control: server failed to prove the shared secret; refusing the stream');
          this.#reply('bad-proof', 'hello.proof does not verify: the server does not hold our secret');
          this.safeEmit('auth-failed', 'bad-proof');
          this.#drop('bad-proof', CLOSE_BAD_PROOF);
          return;
        }
        this.#heartbeatTimeoutMs = this.#heartbeatTimeoutOption ?? 3 * msg.heartbeatMs;
        this.#phase = 'awaiting-snapshot';
        this.#heard();
        return;
      }
      case 'snapshot':
        this.#onSnapshot(msg);
        return;
      case 'delta': {
        const ref = String(msg.seq);
        if (this.#phase !== 'live' || this.#pending !== undefined) {
          this.#rejectOutOfPhase('delta', ref);
          return;
        }
        if (msg.seq <= this.#lastSeq) {
          this.#reply('duplicate', `delta ${msg.seq} is not after ${this.#lastSeq}; ignored`, ref);
          return;
        }
        if (msg.seq !== this.#lastSeq + 1) {
          this.#gap(msg.seq, ref);
          return;
        }
        this.#lastSeq = msg.seq;
        this.#heard();
        const result = this.state.applyFact(msg.fact);
        if (result.ok) this.safeEmit('fact', msg.fact, msg.seq);
        else this.#reply(result.code, result.message, ref);
        if (result.changed !== undefined) this.safeEmit('change', result.changed);
        return;
      }
      case 'heartbeat': {
        const ref = String(msg.seq);
        // Before the snapshot starts, its seq decides; a heartbeat proves nothing yet.
        if (this.#phase === 'awaiting-snapshot' && this.#pending === undefined) return;
        if (this.#phase !== 'live' || this.#pending !== undefined) {
          this.#rejectOutOfPhase('heartbeat', ref);
          return;
        }
        if (msg.seq < this.#lastSeq) {
          this.#reply('duplicate', `heartbeat seq ${msg.seq} is behind ${this.#lastSeq}; late frame ignored`, ref);
          return;
        }
        if (msg.seq > this.#lastSeq) {
          this.#gap(msg.seq, ref);
          return;
        }
        this.#heard();
        return;
      }
    }
  }

  #rejectOutOfPhase(what: string, ref: string): void {
    if (this.#pending !== undefined) {
      // A sequenced frame inside a snapshot: the snapshot cannot be trusted.
      this.#reply('bad-snapshot', `${what} arrived between snapshot parts`, ref);
      this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    this.#reply('unexpected-message', `${what} before hello and snapshot; ignored`, ref);
  }

  #gap(seq: number, ref: string): void {
    this.#logger?.warn({ expected: this.#lastSeq + 1, got: seq }, 'control: sequence gap');
    this.#reply('seq-gap', `expected seq ${this.#lastSeq + 1}, got ${seq}; resynchronising`, ref);
    this.#drop('seq-gap', CLOSE_PROTOCOL_FAILURE);
  }

  #onSnapshot(msg: Snapshot): void {
    const ref = String(msg.seq);
    if (this.#phase !== 'awaiting-snapshot' && this.#phase !== 'live') {
      this.#reply('unexpected-message', 'snapshot before hello; ignored', ref);
      return;
    }
    if (msg.part === 0) {
      if (this.#pending !== undefined) {
        this.#reply('bad-snapshot', 'a new snapshot started before the previous one completed', ref);
        this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
        return;
      }
      // While live, a snapshot that is not newer than the state we hold is a duplicate or a late
      // frame: applying it would rewind the state (a withdrawn consent reopened the gate until the
      // next heartbeat exposed the rewound seq; found by test/integration/gate/recorder-property.test.ts).
      // Like a late delta, it is refused and changes nothing.
      if (this.#phase === 'live' && msg.seq <= this.#lastSeq) {
        this.#reply('duplicate', `snapshot seq ${msg.seq} is not after ${this.#lastSeq}; late frame ignored`, ref);
        return;
      }
      this.#pending = { seq: msg.seq, parts: msg.parts, next: 0, calls: [], agents: [] };
    }
    const p = this.#pending;
    if (p === undefined || msg.seq !== p.seq || msg.parts !== p.parts || msg.part !== p.next) {
      this.#reply('bad-snapshot', `unexpected snapshot part ${msg.part}/${msg.parts} for seq ${msg.seq}`, ref);
      if (p !== undefined) this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    p.calls.push(...msg.calls);
    p.agents.push(...msg.agents);
    p.next++;
    this.#heard();
    if (p.next < p.parts) return;

    this.#pending = undefined;
    const problems = this.state.applySnapshot(p.calls, p.agents);
    for (const problem of problems) if (!problem.ok) this.#reply(problem.code, problem.message, ref);
    this.#lastSeq = p.seq;
    this.#attempt = 0;
    const wasLive = this.#phase === 'live';
    this.#phase = 'live';
    if (!wasLive) this.#armLiveness(this.#heartbeatTimeoutMs);
    this.#logger?.info({ seq: p.seq, calls: p.calls.length, agents: p.agents.length }, 'control: snapshot applied, stream fresh');
    // Resend before announcing: listeners may report newer states synchronously, and those must arrive last.
    for (const report of this.#reports.values()) this.#send(encodeMessage(report));
    this.safeEmit('fresh');
    this.safeEmit('change', 'all');
  }

  #reply(code: ErrorCode, message: string, ref?: string): void {
    const err = errorMessage(code, message, ref);
    this.#logger?.warn({ code, ref }, 'control: rejected a server frame');
    this.#send(encodeMessage(err));
    this.safeEmit('protocol-error', err);
  }

  #send(text: string): void {
    const ws = this.#ws;
    if (ws !== undefined && ws.readyState === WebSocket.OPEN) ws.send(text);
  }
}
