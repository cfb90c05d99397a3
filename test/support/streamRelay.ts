import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { WebSocket, WebSocketServer } from 'ws';
import { NONCE_HEADER } from '../../src/control/auth.ts';
import { FrameOpener, FrameSealer, deriveSessionKey } from '../../src/control/frameAuth.ts';
import { SUBPROTOCOL_V2, parseWorkerMessageV2, type ServerMessageV2, type WorkerMessageV2 } from '../../src/control/protocolV2.ts';
import { TypedEmitter } from '../../src/events/TypedEmitter.ts';

/**
 * A policy-stream relay between recorders and the real control plane, for tests. It holds the
 * shared secret (as the test does), so it can read every frame and re-seal what it forwards:
 * it is the test's hand on the wire, not an attacker (an attacker without the secret is
 * test/support/tamperProxy.ts). What it does for tests:
 *  - records every worker frame (R7 states, cap requests, catalogue reports, confirmations) with
 *    the time it passed, as the control plane receives them;
 *  - faults of the link: drop every session, stop heartbeats, shift the sequence (a lost fact),
 *    refuse new connections (the worker's link down while the control plane runs);
 *  - injects authentic frames (sealed with the session key: the worker must answer them as
 *    frames from the control plane) and raw, unsealed ones (forgeries).
 * The control plane sees the worker's own upgrade (token, nonce, subprotocol) and its frames,
 * re-sealed in order, so every MAC on both sides checks.
 */

export interface WorkerFrame {
  workerId: string;
  message: WorkerMessageV2;
  atPerf: number;
}

export type StreamRelayEvents = {
  'worker-frame': [frame: WorkerFrame];
  connection: [workerId: string];
};

interface Session {
  workerId: string;
  /** The worker's nonce from its upgrade: half of the session key. */
  nonce: string;
  worker: WebSocket;
  upstream: WebSocket;
  /** Towards the worker (re-sealed server frames and injected ones). */
  down: FrameSealer | undefined;
  /** Reads the server's frames. */
  fromServer: FrameOpener | undefined;
  /** Reads the worker's frames. */
  fromWorker: FrameOpener | undefined;
  /** Towards the control plane (re-sealed worker frames). */
  up: FrameSealer | undefined;
  /** Added to the seq of every delta and heartbeat passed on (a fact "lost" on the way). */
  seqOffset: number;
  closed: boolean;
}

export class StreamRelay extends TypedEmitter<StreamRelayEvents> {
  readonly workerFrames: WorkerFrame[] = [];
  readonly #http: Server;
  readonly #wss: WebSocketServer;
  readonly #sessions = new Set<Session>();
  readonly #secret: string;
  readonly #ca: Buffer | undefined;
  #target: string;
  /** Server frame types not passed on (heartbeats: a silent link; cap decisions: a slow control plane). */
  readonly #swallowed = new Set<string>();
  /** Server frames of these types held back, in order, each with how to pass it on (a slow control plane). */
  readonly #delayed = new Map<string, (() => void)[]>();
  #accepting = true;

  private constructor(http: Server, target: string, secret: string, ca: Buffer | undefined) {
    super();
    this.#http = http;
    this.#target = target;
    this.#secret = secret;
    this.#ca = ca;
    this.#wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: 4 * 1024 * 1024,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL_V2) ? SUBPROTOCOL_V2 : false),
    });
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
  }

  /** A relay on a free loopback port in front of `target` (the control plane's ws(s)://.../v1/stream). */
  static async start(options: { target: string; secret: string; ca?: Buffer }): Promise<StreamRelay> {
    const http = createServer((_req, res) => res.writeHead(426).end());
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    return new StreamRelay(http, options.target, options.secret, options.ca);
  }

  /** What workers dial. */
  get url(): string {
    return `ws://127.0.0.1:${(this.#http.address() as AddressInfo).port}/v1/stream`;
  }

  get connections(): number {
    return [...this.#sessions].filter((s) => !s.closed).length;
  }

  /** Points new sessions at another control plane (a replica, a restarted one on another port). */
  retarget(target: string): void {
    this.#target = target;
  }

  /** R7 states received from workers for a call, in order. */
  recordingStates(callId: string, workerId?: string): Extract<WorkerMessageV2, { type: 'recording-state' }>[] {
    return this.workerFrames
      .filter((f) => workerId === undefined || f.workerId === workerId)
      .map((f) => f.message)
      .filter((m): m is Extract<WorkerMessageV2, { type: 'recording-state' }> => m.type === 'recording-state' && m.callId === callId);
  }

  lastRecordingState(callId: string, workerId?: string): Extract<WorkerMessageV2, { type: 'recording-state' }> | undefined {
    return this.recordingStates(callId, workerId).at(-1);
  }

  /** Every live session ends at once, as a crash of the link would end it. */
  dropConnections(): void {
    for (const s of this.#sessions) this.#end(s, undefined);
  }

  /** Cuts every session and refuses new ones until `up()`: the worker's link is down. */
  down(): void {
    this.#accepting = false;
    this.dropConnections();
  }

  up(): void {
    this.#accepting = true;
  }

  stopHeartbeats(): void {
    this.#swallowed.add('heartbeat');
  }

  startHeartbeats(): void {
    this.#swallowed.delete('heartbeat');
  }

  /** Server frames of this type are no longer passed on (until `pass`). */
  swallow(type: ServerMessageV2['type']): void {
    this.#swallowed.add(type);
  }

  pass(type: ServerMessageV2['type']): void {
    this.#swallowed.delete(type);
  }

  /** Server frames of this type are held back, in order, until `releaseOne` / `release`: answers that come late. */
  delay(type: ServerMessageV2['type']): void {
    if (!this.#delayed.has(type)) this.#delayed.set(type, []);
  }

  /** How many frames of `type` are held back now. */
  delayedCount(type: ServerMessageV2['type']): number {
    return this.#delayed.get(type)?.length ?? 0;
  }

  /** Passes on the oldest held frame of `type`; the rest stay held. */
  releaseOne(type: ServerMessageV2['type']): void {
    this.#delayed.get(type)?.shift()?.();
  }

  /** Passes on every held frame of `type`, in order, and stops holding that type. */
  release(type: ServerMessageV2['type']): void {
    const held = this.#delayed.get(type) ?? [];
    this.#delayed.delete(type);
    for (const send of held) send();
  }

  /** Every live session's later deltas and heartbeats carry seq + 1: the worker sees a fact lost. */
  skipSeq(): void {
    for (const s of this.#sessions) if (!s.closed) s.seqOffset++;
  }

  /** An authentic frame from "the control plane" into every live session (sealed in order). */
  inject(message: ServerMessageV2 | string): number {
    const json = typeof message === 'string' ? message : JSON.stringify(message);
    let n = 0;
    for (const s of this.#sessions) {
      if (s.closed || s.down === undefined || s.worker.readyState !== WebSocket.OPEN) continue;
      s.worker.send(s.down.seal(json));
      n++;
    }
    return n;
  }

  /** Bytes of a frame nobody sealed (a forgery), into every live session. */
  injectRaw(text: string): number {
    let n = 0;
    for (const s of this.#sessions) {
      if (s.closed || s.worker.readyState !== WebSocket.OPEN) continue;
      s.worker.send(text);
      n++;
    }
    return n;
  }

  async close(): Promise<void> {
    this.#accepting = false;
    this.dropConnections();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    this.#http.closeAllConnections();
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (!this.#accepting) {
      socket.destroy();
      return;
    }
    const authorization = req.headers.authorization ?? '';
    const nonce = String(req.headers[NONCE_HEADER] ?? '');
    const workerId = /^Bearer ([A-Za-z0-9_-]+)\./.exec(authorization)?.[1] ?? '?';
    this.#wss.handleUpgrade(req, socket, head, (worker) => this.#onWorker(worker, workerId, authorization, nonce));
  }

  #onWorker(worker: WebSocket, workerId: string, authorization: string, nonce: string): void {
    const upstream = new WebSocket(this.#target, [SUBPROTOCOL_V2], {
      headers: { authorization, [NONCE_HEADER]: nonce },
      perMessageDeflate: false,
      maxPayload: 4 * 1024 * 1024,
      ...(this.#ca ? { ca: this.#ca } : {}),
    });
    const s: Session = { workerId, nonce, worker, upstream, down: undefined, fromServer: undefined, fromWorker: undefined, up: undefined, seqOffset: 0, closed: false };
    this.#sessions.add(s);
    worker.on('error', () => undefined);
    upstream.on('error', () => undefined);
    upstream.on('unexpected-response', () => this.#end(s, 1011));
    upstream.on('close', (code) => this.#end(s, code));
    worker.on('close', (code) => this.#end(s, code));
    upstream.on('message', (data, isBinary) => this.#fromServer(s, (data as Buffer).toString('utf8'), isBinary));
    const queued: string[] = [];
    worker.on('message', (data) => {
      // Worker frames before the upstream is open wait (there should be none before hello).
      if (upstream.readyState !== WebSocket.OPEN) queued.push((data as Buffer).toString('utf8'));
      else this.#fromWorker(s, (data as Buffer).toString('utf8'));
    });
    upstream.on('open', () => {
      for (const q of queued.splice(0)) this.#fromWorker(s, q);
      this.safeEmit('connection', workerId);
    });
  }

  #fromServer(s: Session, text: string, isBinary: boolean): void {
    if (s.closed || s.worker.readyState !== WebSocket.OPEN) return;
    if (isBinary) {
      s.worker.send(text);
      return;
    }
    if (s.fromServer === undefined) {
      // hello: plain JSON, proven by its proof; it gives the server's nonce.
      const hello = JSON.parse(text) as { serverNonce?: string };
      const key = deriveSessionKey(this.#secret, s.nonce, hello.serverNonce ?? '');
      s.fromServer = new FrameOpener(key, 's2w');
      s.down = new FrameSealer(key, 's2w');
      s.fromWorker = new FrameOpener(key, 'w2s');
      s.up = new FrameSealer(key, 'w2s');
      s.worker.send(text);
      return;
    }
    const opened = s.fromServer.open(text);
    if (!opened.ok) {
      s.worker.send(text); // not ours to judge: the worker will
      return;
    }
    let json = opened.json;
    const msg = JSON.parse(json) as { type?: string; seq?: number };
    if (msg.type !== undefined && this.#swallowed.has(msg.type)) return;
    const held = msg.type === undefined ? undefined : this.#delayed.get(msg.type);
    if (held !== undefined) {
      // Sealed when passed on: the worker's frame counter sees frames in the order they come.
      held.push(() => {
        if (!s.closed && s.worker.readyState === WebSocket.OPEN) s.worker.send(s.down!.seal(json));
      });
      return;
    }
    if ((msg.type === 'delta' || msg.type === 'heartbeat') && s.seqOffset !== 0 && typeof msg.seq === 'number') {
      msg.seq += s.seqOffset;
      json = JSON.stringify(msg);
    }
    s.worker.send(s.down!.seal(json));
  }

  #fromWorker(s: Session, text: string): void {
    if (s.closed || s.upstream.readyState !== WebSocket.OPEN) return;
    if (s.fromWorker === undefined || s.up === undefined) {
      s.upstream.send(text);
      return;
    }
    const opened = s.fromWorker.open(text);
    if (!opened.ok) {
      s.upstream.send(text); // the control plane closes the session (4001)
      return;
    }
    const parsed = parseWorkerMessageV2(opened.json);
    if (parsed.ok) {
      const frame: WorkerFrame = { workerId: s.workerId, message: parsed.message, atPerf: performance.now() };
      this.workerFrames.push(frame);
      this.safeEmit('worker-frame', frame);
    }
    s.upstream.send(s.up.seal(opened.json));
  }

  #end(s: Session, code: number | undefined): void {
    if (s.closed) return;
    s.closed = true;
    this.#sessions.delete(s);
    const valid = code !== undefined && (code === 1000 || code === 1001 || code === 1011 || (code >= 4000 && code < 5000));
    for (const ws of [s.worker, s.upstream]) {
      if (ws.readyState === WebSocket.OPEN) {
        if (valid) ws.close(code);
        else ws.terminate();
      } else if (ws.readyState === WebSocket.CONNECTING) {
        ws.terminate();
      }
    }
  }
}
