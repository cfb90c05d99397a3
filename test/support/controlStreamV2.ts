import { WebSocket } from 'ws';
import { createNonce, createWorkerToken, NONCE_HEADER, verifyServerProof } from '../../src/control/auth.ts';
import { FrameOpener, FrameSealer, deriveSessionKey } from '../../src/control/frameAuth.ts';
import {
  SUBPROTOCOL_V2,
  encodeV2,
  parseServerMessageV2,
  type CapDecision,
  type DeltaV2,
  type ErrorV2,
  type ServerMessageV2,
  type SnapshotV2,
  type WorkerMessageV2,
} from '../../src/control/protocolV2.ts';

/**
 * A plain policy-stream v2 client for the control plane's tests: it authenticates, checks the
 * hello proof and every frame's MAC, assembles the snapshot, checks that deltas and heartbeats
 * follow the sequence, and records what it saw. Anything wrong makes it `stale` with a reason
 * (as a recorder would close its gates) and closes the socket. It is not the recorder's client.
 */

export type StaleReason = 'bad-frame-mac' | 'bad-proof' | 'seq-gap' | 'bad-frame' | 'closed' | 'bad-snapshot';

export interface StreamClientOptions {
  secret: string;
  workerId: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** Override the offered subprotocols (tests of the version check). */
  protocols?: string[];
}

export interface SnapshotContentSeen {
  seq: number;
  calls: SnapshotV2['calls'];
  agents: SnapshotV2['agents'];
  erasures: SnapshotV2['erasures'];
  deletions: SnapshotV2['deletions'];
  tombstones: SnapshotV2['tombstones'];
}

export class StreamClientV2 {
  readonly ws: WebSocket;
  readonly deltas: DeltaV2[] = [];
  readonly errors: ErrorV2[] = [];
  readonly capDecisions: CapDecision[] = [];
  snapshots: SnapshotContentSeen[] = [];
  heartbeats = 0;
  lastSeq = -1;
  serverId = '';
  stale: StaleReason | undefined;
  closeCode: number | undefined;
  /** Called with each accepted delta as it arrives (benchmarks time them). */
  onDelta: ((delta: DeltaV2) => void) | undefined;
  #sealer: FrameSealer | undefined;
  #opener: FrameOpener | undefined;
  #parts: SnapshotV2[] = [];
  #waiters = new Set<() => void>();
  readonly #nonce: string;
  readonly #secret: string;

  private constructor(ws: WebSocket, nonce: string, secret: string) {
    this.ws = ws;
    this.#nonce = nonce;
    this.#secret = secret;
    ws.on('message', (data, isBinary) => this.#onFrame((data as Buffer).toString('utf8'), isBinary));
    ws.on('close', (code) => {
      this.closeCode = code;
      this.#stale('closed');
    });
    ws.on('error', () => undefined);
  }

  static connect(url: string, o: StreamClientOptions): Promise<StreamClientV2> {
    const nonce = createNonce();
    const ws = new WebSocket(url, o.protocols ?? [SUBPROTOCOL_V2], {
      headers: { authorization: `Bearer ${createWorkerToken(o.secret, o.workerId, nonce)}`, [NONCE_HEADER]: nonce },
      perMessageDeflate: false,
      ...(o.ca ? { ca: o.ca } : {}),
      ...(o.cert ? { cert: o.cert, key: o.key } : {}),
    });
    const client = new StreamClientV2(ws, nonce, o.secret);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode} ${String(res.headers['x-optin-auth-error'] ?? '')}`)));
      ws.once('error', reject);
    });
  }

  /** The last complete snapshot. */
  get snapshot(): SnapshotContentSeen | undefined {
    return this.snapshots.at(-1);
  }

  get fresh(): boolean {
    return this.stale === undefined && this.snapshots.length > 0;
  }

  send(message: WorkerMessageV2): void {
    if (this.#sealer === undefined) throw new Error('no hello yet');
    this.ws.send(this.#sealer.seal(encodeV2(message)));
  }

  sendRaw(text: string): void {
    this.ws.send(text);
  }

  async waitFor(predicate: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    if (predicate()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (stale=${this.stale ?? '-'}, lastSeq=${this.lastSeq})`));
      }, timeoutMs);
      const check = (): void => {
        if (!predicate()) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      this.#waiters.add(check);
    });
  }

  waitSnapshot(timeoutMs = 10_000): Promise<void> {
    return this.waitFor(() => this.snapshots.length > 0, timeoutMs, 'a snapshot');
  }

  waitSeq(seq: number, timeoutMs = 10_000): Promise<void> {
    return this.waitFor(() => this.lastSeq >= seq, timeoutMs, `seq ${seq}`);
  }

  close(): void {
    this.ws.close(1000);
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  #stale(reason: StaleReason): void {
    if (this.stale === undefined) this.stale = reason;
    this.#notify();
  }

  #fail(reason: StaleReason, code: number): void {
    this.#stale(reason);
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
  }

  #onFrame(text: string, isBinary: boolean): void {
    if (this.stale !== undefined) return;
    if (isBinary) return this.#fail('bad-frame', 4000);
    if (this.#opener === undefined) {
      const parsed = parseServerMessageV2(text);
      if (!parsed.ok || parsed.message.type !== 'hello') return this.#fail('bad-frame', 4000);
      const hello = parsed.message;
      if (!verifyServerProof(this.#secret, this.#nonce, hello.proof)) return this.#fail('bad-proof', 4003);
      const key = deriveSessionKey(this.#secret, this.#nonce, hello.serverNonce);
      this.#opener = new FrameOpener(key, 's2w');
      this.#sealer = new FrameSealer(key, 'w2s');
      this.serverId = hello.serverId;
      this.#notify();
      return;
    }
    const opened = this.#opener.open(text);
    if (!opened.ok) return this.#fail('bad-frame-mac', 4001);
    const parsed = parseServerMessageV2(opened.json);
    if (!parsed.ok) return this.#fail('bad-frame', 4000);
    this.#onMessage(parsed.message);
    this.#notify();
  }

  #onMessage(m: ServerMessageV2): void {
    switch (m.type) {
      case 'snapshot': {
        if (m.part !== this.#parts.length) return this.#fail('bad-snapshot', 4000);
        this.#parts.push(m);
        if (m.part + 1 < m.parts) return;
        const parts = this.#parts;
        this.#parts = [];
        this.snapshots.push({
          seq: m.seq,
          calls: parts.flatMap((p) => p.calls),
          agents: parts.flatMap((p) => p.agents),
          erasures: parts.flatMap((p) => p.erasures),
          deletions: parts.flatMap((p) => p.deletions),
          tombstones: parts.flatMap((p) => p.tombstones),
        });
        this.lastSeq = m.seq;
        return;
      }
      case 'delta':
        if (this.snapshots.length === 0 || m.seq !== this.lastSeq + 1) return this.#fail('seq-gap', 4000);
        this.deltas.push(m);
        this.lastSeq = m.seq;
        this.onDelta?.(m);
        return;
      case 'heartbeat':
        if (m.seq > this.lastSeq) return this.#fail('seq-gap', 4000);
        this.heartbeats++;
        return;
      case 'cap.decision':
        this.capDecisions.push(m);
        return;
      case 'error':
        this.errors.push(m);
        return;
      case 'hello':
        return this.#fail('bad-frame', 4000);
    }
  }
}
