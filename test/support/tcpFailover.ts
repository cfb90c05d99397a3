import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP load balancer on loopback in front of several control-plane replicas, as a deployment
 * puts one (HAProxy, a Kubernetes Service) in front of them: each new connection goes to the first
 * upstream that accepts it, bytes are passed through untouched (the worker's session, its MACs and
 * TLS if any, are end to end with the replica). A dead replica refuses connections, so a
 * reconnecting worker lands on the next one.
 */
export class TcpFailover {
  readonly #server: Server;
  readonly #upstreams: number[];
  readonly #sockets = new Set<Socket>();
  /** The upstream port each accepted connection went to, in order. */
  readonly routed: number[] = [];

  private constructor(server: Server, upstreams: number[]) {
    this.#server = server;
    this.#upstreams = upstreams;
  }

  static async start(upstreams: number[]): Promise<TcpFailover> {
    const server = createServer();
    const self = new TcpFailover(server, upstreams);
    server.on('connection', (client) => self.#route(client, 0));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return self;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  #route(client: Socket, index: number): void {
    if (index === 0) client.on('error', () => client.destroy());
    const port = this.#upstreams[index];
    if (port === undefined) {
      client.destroy();
      return;
    }
    client.pause();
    const upstream = connect(port, '127.0.0.1');
    upstream.once('error', () => {
      upstream.destroy();
      if (!client.destroyed) this.#route(client, index + 1);
    });
    upstream.once('connect', () => {
      upstream.removeAllListeners('error');
      this.routed.push(port);
      this.#sockets.add(client);
      this.#sockets.add(upstream);
      const end = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      for (const s of [client, upstream]) {
        s.on('error', end);
        s.on('close', end);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
