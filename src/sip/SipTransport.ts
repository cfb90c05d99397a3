/**
 * SIP transports (RFC 3261 §18): UDP, TCP and TLS listeners on configurable ports. Bytes in,
 * parsed messages out; bytes out to a peer, over the connection a request came on when it is still
 * open (§18.2.2) or a new one.
 *
 * Bounded: datagrams and framed stream messages are limited by `SipLimits`; connections by
 * `maxConnections` (beyond it a new connection is closed at once) and idle time. Parsing happens
 * here, so a malformed message is reported with the peer it came from and never reaches the
 * transaction layer.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { OptinError } from '../errors/OptinError.ts';
import { parseMessage, type ParseResult, type SipLimits } from './parseMessage.ts';
import { StreamFramer } from './StreamFramer.ts';
import type { SipMessage } from './SipMessage.ts';

export type TransportName = 'udp' | 'tcp' | 'tls';

/** Where a message came from, or where to send one. */
export interface Peer {
  readonly transport: TransportName;
  readonly address: string;
  readonly port: number;
  /** The stream connection it arrived on (TCP/TLS). */
  readonly connectionId?: number | undefined;
}

export interface SipTransportOptions {
  readonly bindAddress: string;
  /** Port per transport; `undefined` leaves that transport off, 0 picks a free port. */
  readonly udpPort?: number | undefined;
  readonly tcpPort?: number | undefined;
  readonly tlsPort?: number | undefined;
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly ca?: string | Buffer | undefined } | undefined;
  readonly limits: SipLimits;
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
}

type Failure = Extract<ParseResult, { ok: false }>;

export type SipTransportEvents = {
  message: [message: SipMessage, peer: Peer];
  malformed: [failure: Failure, peer: Peer];
  /** A stream connection lost its framing or broke the size bound; it was closed. */
  streamerror: [detail: string, peer: Peer];
  connections: [count: number];
};

interface Connection {
  readonly id: number;
  readonly socket: net.Socket;
  readonly transport: 'tcp' | 'tls';
  readonly address: string;
  readonly port: number;
}

export class SipTransport extends TypedEmitter<SipTransportEvents> {
  readonly #opts: SipTransportOptions;
  #udp: dgram.Socket | undefined;
  #udp6Family = false;
  #tcp: net.Server | undefined;
  #tls: tls.Server | undefined;
  readonly #connections = new Map<number, Connection>();
  readonly #byRemote = new Map<string, number>();
  #nextConnectionId = 1;
  #closed = false;

  constructor(opts: SipTransportOptions) {
    super();
    this.#opts = opts;
  }

  async listen(): Promise<void> {
    const o = this.#opts;
    if (o.udpPort !== undefined) {
      this.#udp6Family = net.isIPv6(o.bindAddress);
      const sock = dgram.createSocket({ type: this.#udp6Family ? 'udp6' : 'udp4', recvBufferSize: 4 * 1024 * 1024 });
      sock.on('message', (data, rinfo) => this.#onDatagram(data, rinfo));
      sock.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(o.udpPort, o.bindAddress, () => {
          sock.off('error', reject);
          resolve();
        });
      }).catch((err: unknown) => {
        throw new OptinError('SIP_TRANSPORT_FAILED', `cannot bind SIP UDP ${o.bindAddress}:${o.udpPort}: ${(err as Error).message}; choose a free port (sip.udpPort)`, { cause: err });
      });
      this.#udp = sock;
    }
    if (o.tcpPort !== undefined) {
      this.#tcp = net.createServer((s) => this.#accept(s, 'tcp'));
      await this.#listenServer(this.#tcp, o.tcpPort, 'TCP');
    }
    if (o.tlsPort !== undefined) {
      if (!o.tls) throw new OptinError('CONFIG_INVALID', 'sip.tlsPort is set but no TLS key and certificate were given (sip.tls.keyFile/certFile)');
      this.#tls = tls.createServer({ key: o.tls.key, cert: o.tls.cert, ca: o.tls.ca, minVersion: 'TLSv1.2' }, (s) => this.#accept(s, 'tls'));
      // A failed handshake is the peer's problem, not a server error.
      this.#tls.on('tlsClientError', () => undefined);
      await this.#listenServer(this.#tls, o.tlsPort, 'TLS');
    }
  }

  async #listenServer(server: net.Server, port: number, name: string): Promise<void> {
    server.maxConnections = this.#opts.maxConnections;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.#opts.bindAddress, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      throw new OptinError('SIP_TRANSPORT_FAILED', `cannot listen for SIP ${name} on ${this.#opts.bindAddress}:${port}: ${(err as Error).message}; choose a free port`, { cause: err });
    });
  }

  /** The ports actually bound (useful with port 0). */
  ports(): { udp?: number; tcp?: number; tls?: number } {
    const out: { udp?: number; tcp?: number; tls?: number } = {};
    if (this.#udp) out.udp = this.#udp.address().port;
    const tcp = this.#tcp?.address();
    if (tcp && typeof tcp === 'object') out.tcp = tcp.port;
    const t = this.#tls?.address();
    if (t && typeof t === 'object') out.tls = t.port;
    return out;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /**
   * Sends bytes to a peer. Streams: the connection it names if still open, else an open one to
   * the same address and port, else a new connection (requests only: `connect`). Returns false
   * when nothing could be sent.
   */
  send(data: Buffer, peer: Peer, opts: { connect?: boolean } = {}): boolean {
    if (this.#closed) return false;
    if (peer.transport === 'udp') {
      if (!this.#udp) return false;
      this.#udp.send(data, peer.port, peer.address, () => undefined);
      return true;
    }
    let conn = peer.connectionId === undefined ? undefined : this.#connections.get(peer.connectionId);
    if (!conn) {
      const id = this.#byRemote.get(`${peer.transport}|${peer.address}|${peer.port}`);
      conn = id === undefined ? undefined : this.#connections.get(id);
    }
    if (!conn && opts.connect) conn = this.#connect(peer);
    if (!conn || conn.socket.destroyed) return false;
    conn.socket.write(data);
    return true;
  }

  #connect(peer: Peer): Connection | undefined {
    if (this.#connections.size >= this.#opts.maxConnections) return undefined;
    const socket =
      peer.transport === 'tls'
        ? tls.connect({ host: peer.address, port: peer.port, ca: this.#opts.tls?.ca, rejectUnauthorized: this.#opts.tls?.ca !== undefined })
        : net.connect({ host: peer.address, port: peer.port });
    return this.#register(socket, peer.transport as 'tcp' | 'tls', peer.address, peer.port);
  }

  #accept(socket: net.Socket, transport: 'tcp' | 'tls'): void {
    if (this.#closed || this.#connections.size >= this.#opts.maxConnections) {
      socket.destroy();
      return;
    }
    this.#register(socket, transport, normaliseAddress(socket.remoteAddress ?? ''), socket.remotePort ?? 0);
  }

  #register(socket: net.Socket, transport: 'tcp' | 'tls', address: string, port: number): Connection {
    const conn: Connection = { id: this.#nextConnectionId++, socket, transport, address, port };
    this.#connections.set(conn.id, conn);
    const key = `${transport}|${address}|${port}`;
    this.#byRemote.set(key, conn.id);
    this.safeEmit('connections', this.#connections.size);
    const framer = new StreamFramer(this.#opts.limits);
    const peer: Peer = { transport, address, port, connectionId: conn.id };
    socket.setNoDelay(true);
    socket.setTimeout(this.#opts.idleTimeoutMs, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      for (const out of framer.push(chunk)) {
        if (out.type === 'ping') socket.write('\r\n');
        else if (out.type === 'error') {
          this.safeEmit('streamerror', out.detail, peer);
          socket.destroy();
          return;
        } else this.#deliver(out.data, peer);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#connections.delete(conn.id);
      if (this.#byRemote.get(key) === conn.id) this.#byRemote.delete(key);
      this.safeEmit('connections', this.#connections.size);
    });
    return conn;
  }

  #onDatagram(data: Buffer, rinfo: dgram.RemoteInfo): void {
    // RFC 5626 §4.4.1 STUN keep-alives and stray CRLF keep-alives are not SIP messages.
    if (data.length <= 4 && data.every((b) => b === 0x0d || b === 0x0a)) return;
    if (data.length > 0 && data[0]! < 0x20) return;
    this.#deliver(data, { transport: 'udp', address: normaliseAddress(rinfo.address), port: rinfo.port });
  }

  #deliver(data: Buffer, peer: Peer): void {
    const result = parseMessage(data, this.#opts.limits);
    if (result.ok) this.safeEmit('message', result.message, peer);
    else this.safeEmit('malformed', result, peer);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#connections.values()) c.socket.destroy();
    this.#connections.clear();
    this.#byRemote.clear();
    const closeServer = (s: net.Server | undefined) => new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()));
    await Promise.all([closeServer(this.#tcp), closeServer(this.#tls)]);
    if (this.#udp) {
      const u = this.#udp;
      await new Promise<void>((resolve) => u.close(() => resolve()));
    }
  }
}

/** `::ffff:127.0.0.1` → `127.0.0.1`, so v4 peers compare equal however the socket was opened. */
export function normaliseAddress(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}
