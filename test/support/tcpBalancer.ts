import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP balancer, the stand-in for a deployment's load balancer (HAProxy in
 * docker/compose.yaml) in the cluster test: each new connection goes to the next target in turn,
 * and to the one after it when a target refuses (a killed gateway); `setTargets` moves every new
 * connection elsewhere and resets the established ones (a database failover: the proxy now points
 * at the promoted standby). Counts what it did, for the test's report.
 */

export interface BalancerTarget {
  host: string;
  port: number;
}

export class TcpBalancer {
  readonly port: number;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #open = new Map<string, number>();
  #targets: BalancerTarget[];
  #next = 0;
  /** Connections forwarded, and connects a target refused (each retried on the next target). */
  readonly stats = { forwarded: 0, refused: 0, failed: 0 };

  private constructor(server: Server, port: number, targets: BalancerTarget[]) {
    this.#server = server;
    this.port = port;
    this.#targets = targets;
  }

  static async start(targets: BalancerTarget[]): Promise<TcpBalancer> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const balancer = new TcpBalancer(server, (server.address() as { port: number }).port, targets);
    server.on('connection', (down) => balancer.#accept(down));
    return balancer;
  }

  /** `http://127.0.0.1:<port>` and the like. */
  url(protocol = 'http:'): string {
    return `${protocol}//127.0.0.1:${this.port}`;
  }

  get targets(): readonly BalancerTarget[] {
    return this.#targets;
  }

  /** Open forwarded connections by target (`host:port`). */
  openConnections(): Map<string, number> {
    return new Map(this.#open);
  }

  /** New connections go to `targets` from now on; established ones are reset. */
  setTargets(targets: BalancerTarget[]): void {
    this.#targets = targets;
    this.#next = 0;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  #accept(down: Socket): void {
    down.on('error', () => undefined);
    down.pause();
    this.#sockets.add(down);
    down.on('close', () => this.#sockets.delete(down));
    const targets = this.#targets;
    const first = this.#next++;
    const attempt = (tries: number): void => {
      if (tries >= targets.length || down.destroyed) {
        this.stats.failed++;
        down.destroy();
        return;
      }
      const target = targets[(first + tries) % targets.length]!;
      const up = connect(target.port, target.host);
      let connected = false;
      up.once('connect', () => {
        connected = true;
        this.stats.forwarded++;
        this.#sockets.add(up);
        const key = `${target.host}:${target.port}`;
        this.#open.set(key, (this.#open.get(key) ?? 0) + 1);
        up.on('close', () => {
          this.#sockets.delete(up);
          this.#open.set(key, (this.#open.get(key) ?? 1) - 1);
        });
        down.pipe(up);
        up.pipe(down);
        down.resume();
        down.on('close', () => up.destroy());
        up.on('close', () => down.destroy());
      });
      up.on('error', () => {
        if (connected) {
          down.destroy();
          return;
        }
        this.stats.refused++;
        attempt(tries + 1);
      });
    };
    attempt(0);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}
