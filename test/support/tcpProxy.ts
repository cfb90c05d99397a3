import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy in front of a server (the S3 server in our tests), for outages the code
 * under test must notice:
 *  - `down()`: every connection is reset and new ones are reset at once (noticed immediately);
 *    `up()` forwards again;
 *  - `cut()`: the listening socket closes, so connections are refused (nothing listens) and
 *    established ones are reset; `restore()` listens again on the same port;
 *  - `blackhole()`: connections are accepted and never answered (only timeouts notice);
 *    `restore()` ends it.
 */
export class TcpProxy {
  readonly port: number;
  #server: Server;
  readonly #sockets = new Set<Socket>();
  #mode: 'up' | 'reset' | 'refuse' | 'blackhole' = 'up';
  readonly #target: { host: string; port: number };

  private constructor(server: Server, port: number, target: { host: string; port: number }) {
    this.#server = server;
    this.port = port;
    this.#target = target;
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const proxy = new TcpProxy(server, (server.address() as { port: number }).port, target);
    proxy.#attach(server);
    return proxy;
  }

  /** A proxy in front of an `http://host:port` endpoint (the port defaults to 80). */
  static toEndpoint(endpoint: string): Promise<TcpProxy> {
    const url = new URL(endpoint);
    return TcpProxy.start({ host: url.hostname, port: Number(url.port || 80) });
  }

  /** `endpoint` with its host and port replaced by this proxy's. */
  endpointFor(endpoint: string): string {
    return `${new URL(endpoint).protocol}//127.0.0.1:${this.port}`;
  }

  #attach(server: Server): void {
    server.on('connection', (down) => {
      down.on('error', () => undefined);
      if (this.#mode === 'reset') {
        down.destroy();
        return;
      }
      this.#sockets.add(down);
      down.on('close', () => this.#sockets.delete(down));
      if (this.#mode === 'blackhole') return; // accept, never answer
      const up = connect(this.#target.port, this.#target.host);
      this.#sockets.add(up);
      up.on('close', () => this.#sockets.delete(up));
      up.on('error', () => down.destroy());
      down.on('error', () => up.destroy());
      down.pipe(up);
      up.pipe(down);
    });
  }

  #dropAll(): void {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  /** Resets every connection, and every new one at once. */
  down(): void {
    this.#mode = 'reset';
    this.#dropAll();
  }

  /** Forwards again after `down()`. */
  up(): void {
    this.#mode = 'up';
  }

  /** Connections refused (nothing listens), established ones reset. */
  async cut(): Promise<void> {
    this.#mode = 'refuse';
    await new Promise<void>((r) => {
      this.#server.close(() => r());
      this.#dropAll();
    });
  }

  /** Connections accepted and never answered: only timeouts notice. */
  blackhole(): void {
    this.#mode = 'blackhole';
    this.#dropAll();
  }

  /** Forwards again after `cut()` or `blackhole()` (the swallowed connections are reset). */
  async restore(): Promise<void> {
    if (this.#mode === 'refuse') {
      this.#server = createServer();
      this.#attach(this.#server);
      await new Promise<void>((r) => this.#server.listen(this.port, '127.0.0.1', r));
    }
    this.#mode = 'up';
    this.#dropAll();
  }

  async close(): Promise<void> {
    this.#dropAll();
    await new Promise<void>((r) => (this.#server.listening ? this.#server.close(() => r()) : r()));
  }
}
