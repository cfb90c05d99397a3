import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger.ts';

/**
 * A route group: handles the request and returns true, or returns false to let the next group
 * try. Groups (health, metrics, dashboard, access API, softphone) live in their own folders;
 * this server only composes them, so each concern stays testable on its own.
 */
export type RouteGroup = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean;

export interface HttpServerHandle {
  server: http.Server;
  url: string;
  close(): Promise<void>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export async function startHttpServer(opts: { host: string; port: number; groups: RouteGroup[]; logger: Logger }): Promise<HttpServerHandle> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    void (async () => {
      for (const group of opts.groups) if (await group(req, res, url)) return;
      sendJson(res, 404, { error: 'not-found', message: `no route for ${req.method} ${url.pathname}` });
    })().catch((err: Error) => {
      opts.logger.error({ err: err.message, route: url.pathname }, 'http handler failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal', message: 'internal error' });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://${opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host}:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
