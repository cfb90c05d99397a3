import { performance } from 'node:perf_hooks';
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { PolicyState } from '../gate/PolicyState.ts';
import type { Fact } from '../gate/facts.ts';
import type { AgentSchedule, CallSnapshot, PendingDeletion, PendingErasure, Tombstone } from '../gate/policySnapshot.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { NONCE_HEADER, assertSecret, createNonce, createWorkerToken, verifyServerProof, type Secret } from './auth.ts';
import { FrameOpener, FrameSealer, deriveSessionKey } from './frameAuth.ts';
import {
  PROTOCOL_VERSION_2,
  RecordingReportSchema,
  RecordingStateV2Schema,
  SUBPROTOCOL_V2,
  WS_MAX_PAYLOAD_BYTES,
  encodeV2,
  errorV2,
  parseServerMessageV2,
  type CapDecision,
  type DeletionDone,
  type ErasureDone,
  type ErrorCodeV2,
  type ErrorV2,
  type RecordingReport,
  type RecordingStateV2,
  type SnapshotV2,
  type StoreReceipt,
  type WorkerMessageV2,
} from './protocolV2.ts';
import { UnavailableResender } from './UnavailableResender.ts';

/**
 * The worker's end of the policy stream, version 2 (docs/control-protocol.md; the server is the
 * control plane). It owns a PolicyState and keeps it either fresh (in sync with the control
 * plane, facts applied in sequence) or stale (every gate closed with `control-stale`). Anything
 * that could mean a lost or forged fact makes it stale until the next snapshot:
 *  - a frame whose MAC does not verify (forged, modified, replayed, reordered, or following a
 *    dropped one: docs/control-protocol.md §2.3): stale `bad-frame-mac`, closed with 4001;
 *  - a gap in delta sequence numbers (also revealed by a heartbeat's seq);
 *  - no frame for `heartbeatTimeoutMs` (default three server heartbeats; the control plane sends
 *    one only after reading its database, so a lost database stales every worker);
 *  - a closed or failed socket, an auth failure either way, a broken snapshot.
 * The client then drops the socket and reconnects with exponential backoff and full jitter: a
 * reconnect is how it asks for a snapshot, from whichever replica answers.
 *
 * Authentic frames that are malformed, unknown, duplicated or late get an error reply and change
 * nothing. Besides the stream, the client carries the worker's side of the control plane's
 * services: R7 recording states, monthly-cap requests (`requestCap`, answered within
 * `capTimeoutMs` or `cap-unknown`), catalogue reports, and confirmations of erasures and
 * deletions.
 */

export interface ControlClientOptions {
  /**
   * `wss://host:port/v1/stream` of the control plane; `ws://` only on loopback (127.0.0.0/8,
   * ::1, localhost): the voice network is no place for an unencrypted policy stream.
   */
  url: string;
  /** Pseudonymous id of this worker, put in the token. */
  workerId: string;
  /** Shared secret (>= 32 bytes). */
  secret: Secret;
  /** Trusted CA certificate(s) for `wss://` with a private CA. Server certificates are always verified. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate and key (PEM) when the control plane requires mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Silence after which the stream is stale. Default: 3 x the heartbeat interval the server announces. */
  heartbeatTimeoutMs?: number;
  /** Time allowed from dialling to a complete snapshot. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** How long a cap request waits for its decision before the cap counts as unknown. Default 2000 ms. */
  capTimeoutMs?: number;
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
  | 'bad-frame-mac'
  | 'protocol-error'
  | 'closed';

export type ControlClientEvents = {
  /** The state went stale: every gate must close now. */
  stale: [reason: StaleReason];
  /** A snapshot was applied: the state is fresh again. */
  fresh: [];
  /** The decision for this call (or for every call: 'all') may have changed. Re-decide before the next packet. */
  change: [callId: string];
  /** A fact was applied (audit trail, erasures and deletions); `seq` is its delta seq. */
  fact: [fact: Fact, seq: number];
  /** The server refused us (HTTP status and its reason) or failed to prove the secret. */
  'auth-failed': [reason: string];
  /** The server sent an `error` frame. */
  'server-error': [error: ErrorV2];
  /** We replied to a bad (but authentic) server frame with this error. */
  'protocol-error': [error: ErrorV2];
  /** close() was called. */
  closed: [];
};

/** Named connection phases (STYLE: explicit state, not clusters of booleans). */
export type ControlPhase = 'idle' | 'connecting' | 'awaiting-hello' | 'awaiting-snapshot' | 'live' | 'backoff' | 'closed';

/** What the recorder hands to `reportRecordingState` (the envelope is added here). */
export type RecordingStateReport = Omit<RecordingStateV2, 'v' | 'type'>;
/** What the recorder hands to `reportRecording` (the envelope is added here). */
export type CatalogueReport = Omit<RecordingReport, 'v' | 'type'>;
export interface CapRequestInput {
  recordingId: string;
  callId: string;
  agentIds: string[];
  at: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_CAP_TIMEOUT_MS = 2000;
const MAX_REPORTS = 10_000;
const CLOSE_PROTOCOL_FAILURE = 4000;
const CLOSE_BAD_FRAME_MAC = 4001;
const CLOSE_BAD_PROOF = 4003;
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

interface PendingSnapshot {
  seq: number;
  parts: number;
  next: number;
  calls: CallSnapshot[];
  agents: AgentSchedule[];
  erasures: PendingErasure[];
  deletions: PendingDeletion[];
  tombstones: Tombstone[];
}

interface PendingCap {
  /** The recording and the agents asked for (a late answer stands only for the same question). */
  question: string;
  resolve: (decision: CapDecision) => void;
  reject: (err: OptinError) => void;
  timer: NodeJS.Timeout;
}

/** Cap questions given up on (timed out) whose late answers are still worth taking (see `#givenUp`). */
const MAX_GIVEN_UP_CAPS = 1024;

/** Refuses a URL the worker must not dial: not ws(s), or plain ws:// beyond loopback. */
export function checkControlUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new OptinError('CONTROL_BAD_URL', `control url ${JSON.stringify(url.slice(0, 200))} is not a URL; use wss://<control-plane>:<port>/v1/stream`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new OptinError('CONTROL_BAD_URL', 'control url must start with wss:// (or ws:// on loopback)');
  if (parsed.protocol === 'ws:' && !LOOPBACK.test(parsed.hostname)) {
    throw new OptinError(
      'CONTROL_BAD_URL',
      `control url ws://${parsed.host} is not loopback: the policy stream needs TLS off this machine; use wss:// (and OPTIN_CONTROL_CA_FILE for a private CA)`,
    );
  }
  return parsed;
}

export class ControlClient extends TypedEmitter<ControlClientEvents> {
  readonly state: PolicyState;
  readonly #url: string;
  readonly #workerId: string;
  readonly #secret: Secret;
  readonly #tls: Pick<ControlClientOptions, 'ca' | 'cert' | 'key'>;
  readonly #heartbeatTimeoutOption: number | undefined;
  readonly #connectTimeoutMs: number;
  readonly #capTimeoutMs: number;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #logger: Logger | undefined;
  readonly #random: () => number;

  #phase: ControlPhase = 'idle';
  #ws: WebSocket | undefined;
  #nonce = '';
  #opener: FrameOpener | undefined;
  #sealer: FrameSealer | undefined;
  #attempt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** One liveness timer per client (not per call); re-armed lazily, see #onLivenessTimer. */
  #livenessTimer: NodeJS.Timeout | undefined;
  #lastHeardMs = 0;
  #deadlineMs = 0;
  #heartbeatTimeoutMs = 0;
  #lastSeq = -1;
  #serverId = '';
  #pending: PendingSnapshot | undefined;
  #nextRequest = 0;
  readonly #caps = new Map<string, PendingCap>();
  /**
   * Timed-out cap questions of this connection, requestId -> question (the recording and its
   * agents). The control plane decides once per recording and agent (idempotent), so a late
   * answer is the answer to the retry of the same question too: taken for it, not dropped. Only
   * the same agents: an agent who joined since (a transfer) is asked about in a new question.
   * Without this a control plane slower than `capTimeoutMs` for a while answers every question
   * after the worker gave up on it, and the call never leaves admission (seen in the gate
   * property test on a loaded host: one call re-asking every 2 s for 10 s, each answer arriving
   * just after its retry).
   */
  readonly #givenUp = new Map<string, string>();
  /** Last R7 report per call, resent after a reconnect; Map order = recency, for trimming. */
  readonly #reports = new Map<string, RecordingStateV2>();
  /** Last catalogue report per recording not yet sent in its final form; resent after a reconnect. */
  readonly #catalogue = new Map<string, RecordingReport>();
  /** Catalogue reports and confirmations the control plane may answer `unavailable` for (its database down). */
  readonly #resender = new UnavailableResender<RecordingReport | ErasureDone | DeletionDone>({ resend: (m) => this.#sendAgain(m), max: MAX_REPORTS });

  constructor(options: ControlClientOptions) {
    super();
    assertSecret(options.secret);
    checkControlUrl(options.url);
    this.#url = options.url;
    this.#workerId = options.workerId;
    this.#secret = options.secret;
    this.#tls = { ca: options.ca, cert: options.cert, key: options.key };
    this.#heartbeatTimeoutOption = options.heartbeatTimeoutMs;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#capTimeoutMs = options.capTimeoutMs ?? DEFAULT_CAP_TIMEOUT_MS;
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

  /** Milliseconds since the last frame from the server (heartbeats included); Infinity before any. */
  get silentMs(): number {
    return this.#lastHeardMs === 0 ? Number.POSITIVE_INFINITY : performance.now() - this.#lastHeardMs;
  }

  /** Seq of the last applied snapshot or delta (-1 before the first snapshot). */
  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** The replica that served the current (or last) session. */
  get serverId(): string {
    return this.#serverId;
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
        reject(new OptinError('CONTROL_NOT_FRESH', `policy stream not in sync after ${timeoutMs} ms; check the control plane (OPTIN_CONTROL_URL) and the secret`, { retryable: true }));
      }, timeoutMs);
      this.once('fresh', onFresh);
    });
  }

  /**
   * Tells the control plane the recording state of a call (R7). Sent at once when live, dropped
   * when not; the last report per call is resent after every reconnect. Throws OptinError on an
   * invalid report (a recorder bug).
   */
  reportRecordingState(report: RecordingStateReport): void {
    const parsed = RecordingStateV2Schema.safeParse({ v: PROTOCOL_VERSION_2, type: 'recording-state', ...report });
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
    if (this.#phase === 'live') this.#send(msg);
  }

  /**
   * A recording's catalogue row (docs/control-protocol.md §6 `recording.report`). Sent at once
   * when live; the latest report of each recording is resent after a reconnect until its final
   * one (`ended` / `interrupted`) went out on a live session. Throws on an invalid report.
   */
  reportRecording(report: CatalogueReport): void {
    const parsed = RecordingReportSchema.safeParse({ v: PROTOCOL_VERSION_2, type: 'recording.report', ...report });
    if (!parsed.success) {
      throw new OptinError('CONTROL_BAD_REPORT', `invalid recording.report: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const msg = parsed.data;
    const final = msg.event === 'ended' || msg.event === 'interrupted';
    this.#catalogue.delete(msg.recordingId);
    if (this.#phase === 'live') {
      this.#sendKept(msg.recordingId, msg);
      if (final) return;
    }
    this.#catalogue.set(msg.recordingId, msg);
    while (this.#catalogue.size > MAX_REPORTS) this.#catalogue.delete(this.#catalogue.keys().next().value as string);
  }

  /**
   * Asks the control plane to admit a recording against the monthly cap of every agent in it
   * (all or none; idempotent per recordingId, so asking again after a timeout is safe).
   * Rejects with CONTROL_NOT_FRESH when the stream is not live or is lost before the answer, and
   * with CONTROL_CAP_UNKNOWN when no decision came within `capTimeoutMs` or the control plane
   * answered `unavailable`: either way the recording must not start.
   */
  requestCap(input: CapRequestInput): Promise<CapDecision> {
    if (this.#phase !== 'live' || !this.state.fresh) {
      return Promise.reject(new OptinError('CONTROL_NOT_FRESH', 'the policy stream is not live: no cap decision can be asked now', { retryable: true }));
    }
    const requestId = `q${(this.#nextRequest++).toString(36)}-${Math.floor(this.#random() * 1e9).toString(36)}`;
    const question = JSON.stringify([input.recordingId, [...new Set(input.agentIds)].sort()]);
    return new Promise<CapDecision>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Node runs due timers before it reads sockets: when this thread was itself held up past
        // the deadline (a burst of call setups), the answer may be waiting unread. setImmediate
        // runs after the next read, so such an answer is taken, not counted as late.
        setImmediate(() => {
          if (this.#caps.get(requestId)?.timer !== timer) return; // answered, or the link was lost
          this.#caps.delete(requestId);
          this.#givenUp.set(requestId, question);
          if (this.#givenUp.size > MAX_GIVEN_UP_CAPS) this.#givenUp.delete(this.#givenUp.keys().next().value!);
          this.#logger?.warn({ requestId, recordingId: input.recordingId, timeoutMs: this.#capTimeoutMs }, 'control: no cap decision in time');
          reject(new OptinError('CONTROL_CAP_UNKNOWN', `no monthly-cap decision within ${this.#capTimeoutMs} ms; the recording waits and asks again`, { retryable: true }));
        });
      }, this.#capTimeoutMs);
      this.#caps.set(requestId, { question, resolve, reject, timer });
      this.#send({ v: PROTOCOL_VERSION_2, type: 'cap.request', requestId, recordingId: input.recordingId, callId: input.callId, agentIds: input.agentIds, at: input.at });
    });
  }

  /** `erasure.done`: this worker carried the erasure out (may list no receipt: it held nothing). Returns whether it was sent. */
  confirmErasure(erasureId: string, receipts: StoreReceipt[]): boolean {
    if (this.#phase !== 'live') return false;
    this.#sendKept(erasureId, { v: PROTOCOL_VERSION_2, type: 'erasure.done', erasureId, receipts });
    return true;
  }

  /** `deletion.done`: this worker stopped, deleted and forgot the recording. Returns whether it was sent. */
  confirmDeletion(deletionId: string, receipt: StoreReceipt): boolean {
    if (this.#phase !== 'live') return false;
    this.#sendKept(deletionId, { v: PROTOCOL_VERSION_2, type: 'deletion.done', deletionId, receipt });
    return true;
  }

  /** Closes the socket and stops reconnecting; the state goes stale. Idempotent. */
  close(): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#clearTimers();
    this.#resender.close();
    const ws = this.#ws;
    this.#ws = undefined;
    this.#failCaps();
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
    this.#opener = undefined;
    this.#sealer = undefined;
    this.#nonce = createNonce();
    const token = createWorkerToken(this.#secret, this.#workerId, this.#nonce);
    const ws = new WebSocket(this.#url, [SUBPROTOCOL_V2], {
      headers: { authorization: `Bearer ${token}`, [NONCE_HEADER]: this.#nonce },
      ...(this.#tls.ca === undefined ? {} : { ca: this.#tls.ca }),
      ...(this.#tls.cert === undefined ? {} : { cert: this.#tls.cert, key: this.#tls.key }),
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
      if (ws.protocol !== SUBPROTOCOL_V2) {
        this.#logger?.error({ protocol: ws.protocol }, 'control: the server did not accept policy stream v2');
        this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
        return;
      }
      this.#phase = 'awaiting-hello';
    });
    ws.on('message', (data, isBinary) => {
      if (ws !== this.#ws) return;
      this.#onFrame(data as Buffer, isBinary);
    });
    ws.on('error', (err) => {
      if (ws !== this.#ws) return;
      this.#logger?.debug({ err: err.message }, 'control: socket error');
    });
    ws.on('close', (code) => {
      if (ws !== this.#ws) return;
      this.#logger?.info({ phase: this.#phase, code }, 'control: socket closed');
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
    this.#drop(status === 401 || status === 403 ? 'auth-failed' : status === 426 ? 'protocol-error' : 'socket-closed');
  }

  /** Tears the current socket down, goes stale, and schedules a reconnect. */
  #drop(reason: StaleReason, closeCode?: number): void {
    if (this.#phase === 'closed') return;
    const ws = this.#ws;
    this.#ws = undefined;
    this.#pending = undefined;
    this.#opener = undefined;
    this.#sealer = undefined;
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
    // After the gates closed: an answer that can no longer arrive is not awaited.
    this.#failCaps();
    this.#scheduleReconnect();
  }

  /** The waiting retry of `lateRequestId`'s question (same recording, same agents), a question given up on. */
  #retryOf(lateRequestId: string): string | undefined {
    const question = this.#givenUp.get(lateRequestId);
    if (question === undefined) return undefined;
    this.#givenUp.delete(lateRequestId);
    for (const [requestId, p] of this.#caps) if (p.question === question) return requestId;
    return undefined;
  }

  #failCaps(): void {
    // Answers on the lost connection can no longer arrive.
    this.#givenUp.clear();
    for (const [requestId, p] of this.#caps) {
      clearTimeout(p.timer);
      this.#caps.delete(requestId);
      p.reject(new OptinError('CONTROL_NOT_FRESH', 'the policy stream was lost before the cap decision arrived; asked again once fresh', { retryable: true }));
    }
  }

  #scheduleReconnect(): void {
    this.#clearTimers();
    this.#phase = 'backoff';
    // Full jitter (random in [0, cap]) spreads a fleet of workers reconnecting after a restart.
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

  /**
   * `afterRead`: the second look. Node runs due timers before it reads sockets, so when this
   * thread was itself held up past the deadline (a burst of call setups), heartbeats and deltas
   * may be waiting unread: the stream is judged silent only after one more read (setImmediate runs
   * after it). Meanwhile the media threads keep nothing anyway (their pulse from this thread).
   */
  #onLivenessTimer(afterRead = false): void {
    if (afterRead && this.#livenessTimer !== undefined) return; // re-armed meanwhile
    this.#livenessTimer = undefined;
    const now = performance.now();
    if (this.#phase === 'live') {
      const silentFor = now - this.#lastHeardMs;
      if (silentFor >= this.#heartbeatTimeoutMs && !afterRead) {
        setImmediate(() => this.#onLivenessTimer(true));
      } else if (silentFor >= this.#heartbeatTimeoutMs) {
        this.#logger?.warn({ silentMs: Math.round(silentFor) }, 'control: heartbeat missed');
        this.#drop('heartbeat-missed', CLOSE_PROTOCOL_FAILURE);
      } else {
        this.#armLiveness(this.#heartbeatTimeoutMs - silentFor);
      }
      return;
    }
    if (afterRead) return;
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

  #onFrame(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      // Text frames only (docs/control-protocol.md §1): a binary frame ends the session.
      this.#logger?.warn('control: binary frame on the policy stream; resynchronising');
      this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    const text = data.toString('utf8');
    const opener = this.#opener;
    if (opener === undefined) {
      this.#onHello(text);
      return;
    }
    const opened = opener.open(text);
    if (!opened.ok) {
      // Forged, modified, replayed, reordered, or after a dropped frame: nothing on this session
      // can be trusted any more, and no error frame is sent about it (§2.3).
      this.#logger?.warn({ reason: opened.reason }, 'control: a frame failed authentication; resynchronising');
      this.#drop('bad-frame-mac', CLOSE_BAD_FRAME_MAC);
      return;
    }
    const parsed = parseServerMessageV2(opened.json);
    if (!parsed.ok) {
      this.#reply(parsed.code, parsed.message, parsed.ref);
      return;
    }
    const msg = parsed.message;
    switch (msg.type) {
      case 'error':
        this.#onServerError(msg);
        return;
      case 'hello':
        this.#reply('unexpected-message', 'hello is only valid as the first frame of a connection');
        return;
      case 'snapshot':
        this.#onSnapshot(msg);
        return;
      case 'cap.decision': {
        this.#heard();
        const requestId = this.#caps.has(msg.requestId) ? msg.requestId : this.#retryOf(msg.requestId);
        const p = requestId === undefined ? undefined : this.#caps.get(requestId);
        if (requestId === undefined || p === undefined) {
          this.#logger?.debug({ requestId: msg.requestId }, 'control: late cap decision ignored (no question for its recording waits)');
          return;
        }
        clearTimeout(p.timer);
        this.#caps.delete(requestId);
        p.resolve(requestId === msg.requestId ? msg : { ...msg, requestId });
        return;
      }
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

  /** The first frame: plain JSON, proven by `proof`; it gives the server's nonce, hence the session key. */
  #onHello(text: string): void {
    if (this.#phase !== 'awaiting-hello') {
      this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    const parsed = parseServerMessageV2(text);
    if (!parsed.ok || parsed.message.type !== 'hello') {
      this.#logger?.warn({ code: parsed.ok ? 'not-hello' : parsed.code }, 'control: the first frame is not a v2 hello; resynchronising');
      this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    const hello = parsed.message;
    if (!verifyServerProof(this.#secret, this.#nonce, hello.proof)) {
      // An impostor (or a server with another secret): do not believe a word, stay stale.
      this.#logger?.error('control: server failed to prove the shared secret; refusing the stream');
      this.safeEmit('auth-failed', 'bad-proof');
      this.#drop('bad-proof', CLOSE_BAD_PROOF);
      return;
    }
    const key = deriveSessionKey(this.#secret, this.#nonce, hello.serverNonce);
    this.#opener = new FrameOpener(key, 's2w');
    this.#sealer = new FrameSealer(key, 'w2s');
    this.#serverId = hello.serverId;
    this.#heartbeatTimeoutMs = this.#heartbeatTimeoutOption ?? 3 * hello.heartbeatMs;
    this.#phase = 'awaiting-snapshot';
    this.#heard();
  }

  #onServerError(msg: ErrorV2): void {
    this.#heard();
    this.#logger?.warn({ code: msg.code, ref: msg.ref }, 'control: server reported an error');
    if (msg.code === 'unavailable' && msg.ref !== undefined) {
      this.#resender.unavailable(msg.ref);
      const p = this.#caps.get(msg.ref);
      if (p !== undefined) {
        clearTimeout(p.timer);
        this.#caps.delete(msg.ref);
        p.reject(new OptinError('CONTROL_CAP_UNKNOWN', 'the control plane could not decide the monthly cap now (database unavailable); the recording waits and asks again', { retryable: true }));
      }
    }
    this.safeEmit('server-error', msg);
  }

  #rejectOutOfPhase(what: string, ref: string): void {
    if (this.#pending !== undefined) {
      // A sequenced frame inside a snapshot: the snapshot cannot be trusted.
      this.#reply('bad-snapshot', `${what} arrived between snapshot parts`, ref);
      this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    this.#reply('unexpected-message', `${what} before the snapshot; ignored`, ref);
  }

  #gap(seq: number, ref: string): void {
    this.#logger?.warn({ expected: this.#lastSeq + 1, got: seq }, 'control: sequence gap');
    this.#reply('seq-gap', `expected seq ${this.#lastSeq + 1}, got ${seq}; resynchronising`, ref);
    this.#drop('seq-gap', CLOSE_PROTOCOL_FAILURE);
  }

  #onSnapshot(msg: SnapshotV2): void {
    const ref = String(msg.seq);
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
      this.#pending = { seq: msg.seq, parts: msg.parts, next: 0, calls: [], agents: [], erasures: [], deletions: [], tombstones: [] };
    }
    const p = this.#pending;
    if (p === undefined || msg.seq !== p.seq || msg.parts !== p.parts || msg.part !== p.next) {
      this.#reply('bad-snapshot', `unexpected snapshot part ${msg.part}/${msg.parts} for seq ${msg.seq}`, ref);
      if (p !== undefined) this.#drop('protocol-error', CLOSE_PROTOCOL_FAILURE);
      return;
    }
    p.calls.push(...msg.calls);
    p.agents.push(...msg.agents);
    p.erasures.push(...msg.erasures);
    p.deletions.push(...msg.deletions);
    p.tombstones.push(...msg.tombstones);
    p.next++;
    this.#heard();
    if (p.next < p.parts) return;

    this.#pending = undefined;
    const problems = this.state.applySnapshot(p.calls, p.agents, { erasures: p.erasures, deletions: p.deletions, tombstones: p.tombstones });
    for (const problem of problems) if (!problem.ok) this.#reply(problem.code, problem.message, ref);
    this.#lastSeq = p.seq;
    this.#attempt = 0;
    const wasLive = this.#phase === 'live';
    this.#phase = 'live';
    if (!wasLive) this.#armLiveness(this.#heartbeatTimeoutMs);
    this.#logger?.info(
      { seq: p.seq, serverId: this.#serverId, calls: p.calls.length, agents: p.agents.length, erasures: p.erasures.length, deletions: p.deletions.length },
      'control: snapshot applied, stream fresh',
    );
    // Resend before announcing: listeners may report newer states synchronously, and those must arrive last.
    for (const report of this.#reports.values()) this.#send(report);
    for (const report of [...this.#catalogue.values()]) {
      this.#send(report);
      if (report.event === 'ended' || report.event === 'interrupted') this.#catalogue.delete(report.recordingId);
    }
    this.safeEmit('fresh');
    this.safeEmit('change', 'all');
  }

  #reply(code: ErrorCodeV2, message: string, ref?: string): void {
    const err = errorV2(code, message, ref);
    this.#logger?.warn({ code, ref }, 'control: rejected a server frame');
    this.#send(err);
    this.safeEmit('protocol-error', err);
  }

  /**
   * A frame the control plane failed (`unavailable`), once its backoff has passed. Off the live
   * stream, a catalogue report waits for the next session (unless a newer one already does);
   * a confirmation is given again after the next snapshot, which still lists its request.
   */
  #sendAgain(message: RecordingReport | ErasureDone | DeletionDone): void {
    if (this.#phase === 'live') {
      this.#send(message);
      return;
    }
    if (message.type === 'recording.report' && !this.#catalogue.has(message.recordingId)) this.#catalogue.set(message.recordingId, message);
  }

  /** Sends a report or confirmation and keeps it, to send again if the control plane fails it. */
  #sendKept(ref: string, message: RecordingReport | ErasureDone | DeletionDone): void {
    this.#send(message);
    this.#resender.sent(ref, message);
  }

  /** Seals and sends one frame: the MAC counter advances with each, in send order. */
  #send(message: WorkerMessageV2): void {
    const ws = this.#ws;
    const sealer = this.#sealer;
    if (ws === undefined || sealer === undefined || ws.readyState !== WebSocket.OPEN) return;
    ws.send(sealer.seal(encodeV2(message)));
  }
}
