import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { registerAuditStream } from '../audit/anchors.ts';
import { AUTH_FAILURE_TEXT, NONCE_HEADER, NonceCache, TOKEN_MAX_AGE_MS, assertSecret, serverProof, verifyWorkerToken, type Secret } from '../control/auth.ts';
import { createServerNonce, deriveSessionKey } from '../control/frameAuth.ts';
import { MAX_FRAME_BYTES, SUBPROTOCOL_V2 } from '../control/protocolV2.ts';
import type { Database } from '../db/Database.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import { FactFollower } from './FactFollower.ts';
import { CLOSE, StreamSession } from './StreamSession.ts';
import { handleWorkerFrame } from './workerFrames.ts';

/**
 * The policy stream v2, served on the control plane's HTTP(S) server (`/v1/stream`, or `/` for
 * workers configured with a bare URL). Upgrade authentication as in v1 (worker HMAC token bound
 * to a fresh nonce, replay cache), plus: the `optin-control.v2` subprotocol, and, when the
 * server was given a client CA, a verified client certificate (mutual TLS).
 */

export interface StreamServerOptions {
  db: Database;
  secret: Secret;
  replicaId: string;
  heartbeatMs: number;
  logger: Logger;
  metrics: ControlPlaneMetrics;
  /** Require a client certificate verified against the configured CA (mutual TLS). */
  requireClientCert: boolean;
  tombstoneHorizonMs: number;
  tokenMaxAgeMs?: number;
  now?: () => number;
  /** Called when a worker confirmed an erasure or deletion. */
  onConfirmation: () => void;
}

const STREAM_PATHS = new Set(['/', '/v1/stream']);

export class StreamServer {
  readonly #o: StreamServerOptions;
  readonly #now: () => number;
  readonly #wss: WebSocketServer;
  readonly #nonces = new NonceCache();
  readonly #sessions = new Set<StreamSession>();
  readonly follower: FactFollower;
  #closed = false;

  constructor(options: StreamServerOptions) {
    assertSecret(options.secret);
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_FRAME_BYTES * 16,
      perMessageDeflate: false,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL_V2) ? SUBPROTOCOL_V2 : false),
    });
    this.follower = new FactFollower({ db: options.db, heartbeatMs: options.heartbeatMs, logger: options.logger });
    this.follower.on('facts', () => {
      for (const s of this.#sessions) void s.pump();
    });
    this.follower.on('tick', (ok) => void this.#onTick(ok));
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Workers with a live session here (for operators and tests). */
  workerIds(): string[] {
    return [...new Set([...this.#sessions].map((s) => s.workerId))].sort();
  }

  async start(http: HttpServer): Promise<void> {
    // Rows a previous run of this replica left behind are not live sessions.
    await this.#o.db.query('DELETE FROM stream_sessions WHERE replica_id = $1', [this.#o.replicaId]);
    await this.follower.start();
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#sessions) s.close(CLOSE.going, 'shutting-down');
    await this.follower.close();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    await this.#o.db.query('DELETE FROM stream_sessions WHERE replica_id = $1', [this.#o.replicaId]).catch(() => undefined);
  }

  /** Kills every session without a closing handshake, as a crash would (tests). */
  dropAll(): void {
    for (const s of this.#sessions) s.close(CLOSE.going, 'dropped');
  }

  #refuse(socket: Duplex, status: string, reason: string, text: string): void {
    this.#o.metrics.streamRefused.inc({ reason });
    const body = `${text}\n`;
    socket.end(
      `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        (status.startsWith('401') ? 'WWW-Authenticate: Bearer error="invalid_token"\r\n' : '') +
        `X-Optin-Auth-Error: ${reason}\r\n\r\n${body}`,
    );
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const path = (req.url ?? '/').split('?')[0]!;
    if (!STREAM_PATHS.has(path)) {
      this.#refuse(socket, '404 Not Found', 'not-found', 'the policy stream is at /v1/stream');
      return;
    }
    if (this.#o.requireClientCert && !(socket as unknown as TLSSocket).authorized) {
      this.#refuse(socket, '401 Unauthorized', 'client-certificate', 'a client certificate signed by the configured CA is required (mutual TLS)');
      return;
    }
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim());
    if (!offered.includes(SUBPROTOCOL_V2)) {
      this.#refuse(socket, '426 Upgrade Required', 'protocol-version', `this control plane speaks policy stream v2: offer the WebSocket subprotocol ${SUBPROTOCOL_V2}`);
      return;
    }
    const nonceHeader = req.headers[NONCE_HEADER];
    const nonce = Array.isArray(nonceHeader) ? undefined : nonceHeader;
    const now = this.#now();
    let check = verifyWorkerToken(this.#o.secret, req.headers.authorization, nonce, now, this.#o.tokenMaxAgeMs ?? TOKEN_MAX_AGE_MS);
    if (check.ok && !this.#nonces.remember(nonce!, now)) check = { ok: false, reason: 'nonce-reused' };
    if (!check.ok) {
      this.#o.logger.warn({ reason: check.reason }, 'stream: refused worker connection');
      this.#refuse(socket, '401 Unauthorized', check.reason, AUTH_FAILURE_TEXT[check.reason]);
      return;
    }
    const workerId = check.workerId;
    this.#wss.handleUpgrade(req, socket, head, (ws) => void this.#onConnection(ws, workerId, nonce!));
  }

  async #onConnection(ws: WebSocket, workerId: string, workerNonce: string): Promise<void> {
    if (this.#closed) {
      ws.terminate();
      return;
    }
    const serverNonce = createServerNonce();
    const key = deriveSessionKey(this.#o.secret, workerNonce, serverNonce);
    const session = new StreamSession(ws, workerId, key, serverProof(this.#o.secret, workerNonce), serverNonce, {
      db: this.#o.db,
      follower: this.follower,
      logger: this.#o.logger,
      metrics: this.#o.metrics,
      serverId: this.#o.replicaId,
      heartbeatMs: this.#o.heartbeatMs,
      tombstoneHorizonMs: this.#o.tombstoneHorizonMs,
      now: this.#now,
      onMessage: (s, m) =>
        handleWorkerFrame({ db: this.#o.db, logger: this.#o.logger, metrics: this.#o.metrics, now: this.#now, onConfirmation: this.#o.onConfirmation }, s, m),
    });
    this.#sessions.add(session);
    this.#o.metrics.streamConnections.set(this.#sessions.size);
    ws.on('error', (err) => this.#o.logger.debug({ workerId, err: err.message }, 'stream: socket error'));
    ws.on('close', () => {
      session.markClosed();
      if (!this.#sessions.delete(session)) return;
      this.#o.metrics.streamConnections.set(this.#sessions.size);
      this.#o.logger.info({ workerId }, 'stream: worker disconnected');
      if (![...this.#sessions].some((s) => s.workerId === workerId)) {
        void this.#o.db.query('DELETE FROM stream_sessions WHERE worker_id = $1 AND replica_id = $2', [workerId, this.#o.replicaId]).catch(() => undefined);
      }
    });
    const now = this.#now();
    await this.#o.db
      .query(
        `INSERT INTO stream_sessions (worker_id, replica_id, connected_at_ms, last_seen_ms) VALUES ($1, $2, $3, $3)
         ON CONFLICT (worker_id, replica_id) DO UPDATE SET last_seen_ms = EXCLUDED.last_seen_ms`,
        [workerId, this.#o.replicaId, now],
      )
      .catch(() => undefined);
    // A recorder writes the audit trail under its workerId: from now on its stream must exist
    // (a stream deleted from the bucket is then a break for `optin audit verify`).
    await registerAuditStream(this.#o.db, workerId, 'stream-hello', now).catch((err: unknown) =>
      this.#o.logger.warn({ workerId, err: (err as Error).message }, 'stream: audit stream not registered'),
    );
    await session.start();
  }

  async #onTick(ok: boolean): Promise<void> {
    this.#o.metrics.dbUp.set(ok ? 1 : 0);
    this.#o.metrics.streamHeadSeq.set(this.follower.head);
    if (!ok) return;
    const live = [...this.#sessions].filter((s) => !s.closed);
    await Promise.all(live.map((s) => s.heartbeat()));
    const workers = [...new Set(live.map((s) => s.workerId))];
    if (workers.length > 0) {
      await this.#o.db
        .query('UPDATE stream_sessions SET last_seen_ms = $1 WHERE replica_id = $2 AND worker_id = ANY($3)', [this.#now(), this.#o.replicaId, workers])
        .catch(() => undefined);
    }
  }
}
