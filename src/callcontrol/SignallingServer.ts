import type { IncomingMessage } from 'node:http';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { z } from 'zod';
import type { types } from 'mediasoup';
import type { CallRoom } from '../sfu/CallRoom.ts';
import type { Recorder } from '../recorder/Recorder.ts';
import type { Logger } from '../log/logger.ts';
import { verifyJoinToken } from './joinToken.ts';
import type { RoomDirectory } from './RoomDirectory.ts';
import { isOptinError } from '../errors/OptinError.ts';

/** Requests a softphone page sends; every one is validated and answered by id. */
const RequestSchema = z.discriminatedUnion('method', [
  z.object({ id: z.number().int(), method: z.literal('join'), token: z.string().max(1024) }),
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
}

export interface SignallingOptions {
  secret: string;
  recorder: Recorder;
  /** Finds or creates the call's room (the recorder taps it on creation). */
  rooms: RoomDirectory;
  /** A DTMF digit from a page (the IVR's role: the demo turns "1" into explicit consent, R3). */
  onDtmf?: (callId: string, participantId: string, digit: string) => void;
  logger: Logger;
}

/**
 * WebSocket signalling between softphone pages (mediasoup-client) and the call's Router:
 * transports, producers, consumers, and the call's live recording state (R7) pushed to every
 * page so the agent can always tell the customer whether the call is recorded.
 */
export class SignallingServer {
  readonly #o: SignallingOptions;
  readonly #wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  readonly #peers = new Set<Peer>();

  constructor(opts: SignallingOptions) {
    this.#o = opts;
    opts.recorder.on('state', (callId, state) => {
      for (const p of this.#peers) if (p.callId === callId) this.#push(p.ws, 'recordingState', state);
    });
  }

  /** Attach to an HTTP server: upgrades on `/signal` are ours. */
  attach(server: http.Server): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/signal') return;
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws));
    });
  }

  close(): void {
    for (const p of this.#peers) p.ws.close();
    this.#wss.close();
  }

  #onConnection(ws: WebSocket): void {
    let peer: Peer | undefined;
    ws.on('message', (data) => {
      let msg: z.infer<typeof RequestSchema>;
      try {
        const parsed = RequestSchema.safeParse(JSON.parse(String(data)));
        if (!parsed.success) throw new Error(parsed.error.issues[0]?.message ?? 'invalid request');
        msg = parsed.data;
      } catch (err) {
        ws.send(JSON.stringify({ error: 'bad-request', message: (err as Error).message }));
        return;
      }
      this.#handle(ws, peer, msg).then(
        (result) => {
          if (result && 'peer' in result) peer = result.peer;
          ws.send(JSON.stringify({ id: msg.id, ok: true, data: result?.data ?? {} }));
        },
        (err: Error) => ws.send(JSON.stringify({ id: msg.id, ok: false, error: isOptinError(err) ? err.code : 'failed', message: err.message })),
      );
    });
    ws.on('close', () => {
      if (!peer) return;
      this.#peers.delete(peer);
      for (const t of peer.transports.values()) t.close();
      if (![...this.#peers].some((p) => p.callId === peer!.callId)) peer.room.close();
    });
  }

  async #handle(ws: WebSocket, peer: Peer | undefined, msg: z.infer<typeof RequestSchema>): Promise<{ data?: unknown; peer?: Peer } | undefined> {
    if (msg.method === 'join') {
      if (peer) throw new Error('already joined');
      const claims = verifyJoinToken(this.#o.secret, msg.token);
      const room = await this.#room(claims.callId);
      const joined: Peer = { ws, callId: claims.callId, participantId: claims.participantId, room, transports: new Map() };
      this.#peers.add(joined);
      const others = room.legs.filter((l) => l.participantId !== claims.participantId).map((l) => ({ producerId: l.producer.id, participantId: l.participantId }));
      return {
        peer: joined,
        data: { routerRtpCapabilities: room.router.rtpCapabilities, producers: others, recordingState: this.#o.recorder.lastState(claims.callId) ?? null },
      };
    }
    if (!peer) throw new Error('join first');
    switch (msg.method) {
      case 'createTransport': {
        const t = await peer.room.createWebRtcTransport();
        peer.transports.set(t.id, t);
        return { data: { id: t.id, iceParameters: t.iceParameters, iceCandidates: t.iceCandidates, dtlsParameters: t.dtlsParameters } };
      }
      case 'connectTransport': {
        await this.#transport(peer, msg.transportId).connect({ dtlsParameters: msg.dtlsParameters as types.DtlsParameters });
        return undefined;
      }
      case 'produce': {
        const producer = await this.#transport(peer, msg.transportId).produce({ kind: msg.kind, rtpParameters: msg.rtpParameters as types.RtpParameters });
        // The room announces it (audioproducer) to the recorder and to the other pages.
        peer.room.addProducer(peer.participantId, producer);
        return { data: { id: producer.id } };
      }
      case 'consume': {
        const caps = msg.rtpCapabilities as types.RtpCapabilities;
        if (!peer.room.router.canConsume({ producerId: msg.producerId, rtpCapabilities: caps })) throw new Error('cannot consume this producer');
        const consumer = await this.#transport(peer, msg.transportId).consume({ producerId: msg.producerId, rtpCapabilities: caps });
        return { data: { id: consumer.id, producerId: msg.producerId, kind: consumer.kind, rtpParameters: consumer.rtpParameters } };
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

  #push(ws: WebSocket, event: string, data: unknown): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ event, data }));
  }
}
