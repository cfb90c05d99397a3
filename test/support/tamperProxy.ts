import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy for man-in-the-middle tests: it can cut the link (down/up), rewrite the
 * bytes flowing either way (`transform`), and inject bytes of its own into a live connection.
 * `down` = towards the client (the server's replies), `up` = towards the server.
 */

export type Direction = 'down' | 'up';

export class TamperProxy {
  readonly port: number;
  readonly #server: Server;
  readonly #pairs = new Set<{ client: Socket; server: Socket }>();
  #up = true;
  transform: ((direction: Direction, chunk: Buffer) => Buffer) | undefined;

  private constructor(server: Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  static async start(target: { host: string; port: number }): Promise<TamperProxy> {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const proxy = new TamperProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => {
      client.on('error', () => undefined);
      if (!proxy.#up) {
        client.destroy();
        return;
      }
      const upstream = connect(target.port, target.host);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      const pair = { client, server: upstream };
      proxy.#pairs.add(pair);
      const drop = (): void => {
        proxy.#pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', drop);
      upstream.on('close', drop);
      client.on('data', (chunk: Buffer) => upstream.write(proxy.transform ? proxy.transform('up', chunk) : chunk));
      upstream.on('data', (chunk: Buffer) => client.write(proxy.transform ? proxy.transform('down', chunk) : chunk));
    });
    return proxy;
  }

  get connections(): number {
    return this.#pairs.size;
  }

  /** Writes raw bytes into every live connection, in one direction. */
  inject(direction: Direction, bytes: Buffer): void {
    for (const p of this.#pairs) (direction === 'down' ? p.client : p.server).write(bytes);
  }

  /** Cuts every connection and refuses new ones (an unreachable peer). */
  down(): void {
    this.#up = false;
    for (const p of this.#pairs) {
      p.client.destroy();
      p.server.destroy();
    }
    this.#pairs.clear();
  }

  up(): void {
    this.#up = true;
  }

  async close(): Promise<void> {
    this.down();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

/** An unmasked WebSocket text frame (server -> client framing, RFC 6455 §5.2). */
export function wsTextFrame(text: string): Buffer {
  const payload = Buffer.from(text, 'utf8');
  const n = payload.length;
  const header = n < 126 ? Buffer.from([0x81, n]) : n < 65536 ? Buffer.from([0x81, 126, n >> 8, n & 0xff]) : undefined;
  if (header === undefined) throw new RangeError('frame too long for this helper');
  return Buffer.concat([header, payload]);
}
