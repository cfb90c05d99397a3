import type { IncomingMessage } from 'node:http';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { z } from 'zod';
import type { types } from 'mediasoup';
import type { CallRoom } from '../sfu/CallRoom.ts';
import type { Recorder } from '../recorder/Recorder.ts';
import type { Logger } from '../log/logger.ts';
import type { CallTokenVerifier } from './callToken.ts';
import type { RoomDirectory } from './RoomDirectory.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';

/** Requests a softphone page sends; every one is validated and answered by id. */
const RequestSchema = z.discriminatedUnion('method', [
  z.object({ id: z.number().int(), method: z.literal('join'), token: z.string().max(2048) }),
  z.object({ id: z.number().int(), method: z.literal('createTransport'), direction: z.enum(['send', 'recv']) }),
  z.object({ id: z.number().int(), method: z.literal('connectTransport'), transportId: z.string().max(64), dtlsParameters: z.unknown() }),
  z.object({ id: z.number().int(), method: z.literal('produce'), transportId: z.string().max(64), kind: z.enum(['audio', 'video']), rtpParameters: z.unknown() }),
  z.object({ id: z.number().int(), method: z.literal('consume'), transportId: z.string().max(64), producerId: z.string().max(64), rtpCapabilities: z.unknown() }),
  z.object({ id: z.number().int(), method: z.literal('dtmf'), digit: z.string().regex(/^[0-9*#]$/) }),
]);

interface Peer {
  ws: WebSocket;
  callId: string;
  participantId: string;
  room: CallRoom;
  transports: Map<string, types.WebRtcTransport>;
  producers: number;
  consumers: number;
}

/** Per-socket state: a socket joins once; a second join (even while the first runs) is refused. */
interface Connection {
  state: 'new' | 'joining' | 'joined' | 'closed';
  peer: Peer | undefined;
  timer: NodeJS.Timeout | undefined;
}

export interface SignallingLimits {
  /** A socket that has not joined after this long is closed (4408). */
  joinTimeoutMs: number;
  maxTransportsPerPeer: number;
  maxProducersPerPeer: number;
  maxConsumersPerPeer: number;
  /** Origins allowed besides the page's own (same host as the request). */
  allowedOrigins: readonly string[];
}

export const DEFAULT_SIGNALLING_LIMITS: SignallingLimits = {
  joinTimeoutMs: 10_000,
  maxTransportsPerPeer: 2,
  maxProducersPerPeer: 2,
  maxConsumersPerPeer: 32,
  allowedOrigins: [],
};

export interface SignallingOptions {
  /** Verifies softphone-join tokens (audience softphone-join, single use). */
  tokens: CallTokenVerifier;
  recorder: Recorder;
  /** Finds or creates the call's room (the recorder taps it on creation). */
  rooms: RoomDirectory;
  /** A DTMF digit from a page (the IVR's role: the demo turns "1" into explicit consent, R3). */
  onDtmf?: (callId: string, participantId: string, digit: string) => void;
  logger: Logger;
  limits?: Partial<SignallingLimits>;
}

/** The WebSocket upgrade this server takes (docs/openapi.yaml; protocol in docs/call-control.md). */
export const SIGNAL_ROUTES = ['GET /signal'] as const;

/** WebSocket close codes (4000-4999: application), documented in docs/call-control.md. */
export const SIGNAL_CLOSE = { joinTimeout: 4408 } as const;

/**
 * WebSocket signalling between softphone pages (mediasoup-client) and the call's Router:
 * transports, producers, consumers, and the call's live recording state (R7) pushed to every
 * page so the agent can always tell the customer whether the call is recorded.
 *
 * Hardening (docs/call-control.md): the upgrade is refused unless the page's Origin is its own
 * host or an allowed origin (no cross-site WebSocket); the join token travels in the first
 * message, never in the URL, and is single use; a socket that does not join in time is closed;
 * each peer has bounded transports, producers and consumers.
 */
export class SignallingServer {
  readonly #o: SignallingOptions;
  readonly #limits: SignallingLimits;
  readonly #allowed: Set<string>;
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  readonly #peers = new Set<Peer>();

  constructor(opts: SignallingOptions) {
    this.#o = opts;
    this.#limits = { ...DEFAULT_SIGNALLING_LIMITS, ...(opts.limits ?? {}) };
    this.#allowed = new Set(this.#limits.allowedOrigins.map((o) => new URL(o).origin));
    opts.recorder.on('state', (callId, state) => {
      for (const p of this.#peers) if (p.callId === callId) this.#push(p.ws, 'recordingState', state);
    });
  }

  /** Peers joined right now (tests check that refused or abandoned joins leave none behind). */
  get peerCount(): number {
    return this.#peers.size;
  }

  /** Attach to an HTTP server: upgrades on `/signal` are ours. */
  attach(server: http.Server): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/signal') return;
      const refused = this.#originProblem(req);
      if (refused !== undefined) {
        this.#o.logger.warn({ reason: refused }, 'signal: upgrade refused');
        socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${refused}\n`);
        return;
      }
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws));
    });
  }

  close(): void {
    for (const p of this.#peers) p.ws.close();
    for (const ws of this.#wss.clients) ws.close();
    this.#wss.close();
  }

  /** Browsers always send Origin on a WebSocket upgrade; a page of another site must not connect. */
  #originProblem(req: IncomingMessage): string | undefined {
    const origin = req.headers.origin;
    if (origin === undefined) return 'Origin header required';
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      return 'Origin header invalid';
    }
    if (this.#allowed.has(parsed.origin)) return undefined;
    if (req.headers.host !== undefined && parsed.host === req.headers.host) return undefined;
    return 'Origin not allowed (same origin, or callControl.allowedOrigins)';
  }

  #onConnection(ws: WebSocket): void {
    const conn: Connection = { state: 'new', peer: undefined, timer: undefined };
    conn.timer = setTimeout(() => {
      if (conn.state === 'new' || conn.state === 'joining') ws.close(SIGNAL_CLOSE.joinTimeout, 'join timeout');
    }, this.#limits.joinTimeoutMs);
    conn.timer.unref();
    ws.on('message', (data) => {
      let msg: z.infer<typeof RequestSchema>;
      try {
        const parsed = RequestSchema.safeParse(JSON.parse(String(data)));
        if (!parsed.success) throw new Error(parsed.error.issues[0]?.message ?? 'invalid request');
        msg = parsed.data;
      } catch (err) {
        this.#send(ws, { error: 'bad-request', message: (err as Error).message });
        return;
      }
      this.#handle(ws, conn, msg).then(
        (result) => this.#send(ws, { id: msg.id, ok: true, data: result ?? {} }),
        (err: Error) => this.#send(ws, { id: msg.id, ok: false, error: isOptinError(err) ? err.code : 'failed', message: err.message }),
      );
    });
    ws.on('close', () => {
      clearTimeout(conn.timer);
      conn.state = 'closed';
      if (conn.peer !== undefined) this.#leave(conn.peer);
      conn.peer = undefined;
    });
  }

  /**
   * A page left: its transports (and its legs with them) close; the room closes only when no page
   * and no leg of either kind is left in it (CallRoom.closeIfIdle): a SIP leg still up keeps the
   * call and its recording, and a page that reloads comes back into the same recording (a new run).
   */
  #leave(peer: Peer): void {
    this.#peers.delete(peer);
    for (const t of peer.transports.values()) t.close();
    peer.room.leavePage();
  }

  async #handle(ws: WebSocket, conn: Connection, msg: z.infer<typeof RequestSchema>): Promise<unknown> {
    if (msg.method === 'join') {
      if (conn.state !== 'new') throw new OptinError('JOIN_DENIED', conn.state === 'joining' ? 'a join is already in progress on this socket' : 'already joined');
      conn.state = 'joining';
      let claims;
      let room: CallRoom;
      try {
        claims = this.#o.tokens.verify(msg.token);
        room = await this.#room(claims.callId);
      } catch (err) {
        if (conn.state === 'joining') conn.state = 'new';
        throw err;
      }
      // The socket may have closed (or timed out) while the room opened: join nobody then.
      if (conn.state !== 'joining') {
        room.closeIfIdle();
        throw new OptinError('JOIN_DENIED', 'the socket closed during the join');
      }
      const peer: Peer = { ws, callId: claims.callId, participantId: claims.participantId, room, transports: new Map(), producers: 0, consumers: 0 };
      conn.state = 'joined';
      conn.peer = peer;
      clearTimeout(conn.timer);
      this.#peers.add(peer);
      room.enterPage();
      const others = room.legs.filter((l) => l.participantId !== claims.participantId).map((l) => ({ producerId: l.producer.id, participantId: l.participantId }));
      return { routerRtpCapabilities: room.router.rtpCapabilities, producers: others, recordingState: this.#o.recorder.lastState(claims.callId) ?? null };
    }
    const peer = conn.peer;
    if (conn.state !== 'joined' || peer === undefined) throw new OptinError('JOIN_DENIED', 'join first');
    switch (msg.method) {
      case 'createTransport': {
        if (peer.transports.size >= this.#limits.maxTransportsPerPeer) throw new OptinError('PEER_LIMIT', `at most ${this.#limits.maxTransportsPerPeer} transports per peer`);
        const t = await peer.room.createWebRtcTransport();
        if (conn.state !== 'joined') {
          t.close();
          throw new OptinError('JOIN_DENIED', 'the socket closed');
        }
        peer.transports.set(t.id, t);
        return { id: t.id, iceParameters: t.iceParameters, iceCandidates: t.iceCandidates, dtlsParameters: t.dtlsParameters };
      }
      case 'connectTransport': {
        await this.#transport(peer, msg.transportId).connect({ dtlsParameters: msg.dtlsParameters as types.DtlsParameters });
        return undefined;
      }
      case 'produce': {
        if (peer.producers >= this.#limits.maxProducersPerPeer) throw new OptinError('PEER_LIMIT', `at most ${this.#limits.maxProducersPerPeer} producers per peer`);
        peer.producers++;
        try {
          const producer = await this.#transport(peer, msg.transportId).produce({ kind: msg.kind, rtpParameters: msg.rtpParameters as types.RtpParameters });
          // The room announces it (audioproducer) to the recorder and to the other pages.
          peer.room.addProducer(peer.participantId, producer);
          return { id: producer.id };
        } catch (err) {
          peer.producers--;
          throw err;
        }
      }
      case 'consume': {
        if (peer.consumers >= this.#limits.maxConsumersPerPeer) throw new OptinError('PEER_LIMIT', `at most ${this.#limits.maxConsumersPerPeer} consumers per peer`);
        const caps = msg.rtpCapabilities as types.RtpCapabilities;
        if (!peer.room.router.canConsume({ producerId: msg.producerId, rtpCapabilities: caps })) throw new Error('cannot consume this producer');
        peer.consumers++;
        try {
          const consumer = await this.#transport(peer, msg.transportId).consume({ producerId: msg.producerId, rtpCapabilities: caps });
          return { id: consumer.id, producerId: msg.producerId, kind: consumer.kind, rtpParameters: consumer.rtpParameters };
        } catch (err) {
          peer.consumers--;
          throw err;
        }
      }
      case 'dtmf': {
        this.#o.onDtmf?.(peer.callId, peer.participantId, msg.digit);
        return undefined;
      }
    }
  }

  #transport(peer: Peer, id: string): types.WebRtcTransport {
    const t = peer.transports.get(id);
    if (!t) throw new Error('unknown transport');
    return t;
  }

  async #room(callId: string): Promise<CallRoom> {
    return this.#watch(await this.#o.rooms.get(callId));
  }

  readonly #watched = new WeakSet<CallRoom>();

  /** Every audio leg of the room (WebRTC or SIP/PlainTransport) is offered to the other pages. */
  #watch(room: CallRoom): CallRoom {
    if (this.#watched.has(room)) return room;
    this.#watched.add(room);
    room.on('audioproducer', (leg) => {
      for (const p of this.#peers) {
        if (p.room === room && p.participantId !== leg.participantId) {
          this.#push(p.ws, 'newProducer', { producerId: leg.producer.id, participantId: leg.participantId });
        }
      }
    });
    return room;
  }

  #send(ws: WebSocket, body: unknown): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(body));
  }

  #push(ws: WebSocket, event: string, data: unknown): void {
    this.#send(ws, { event, data });
  }
}
