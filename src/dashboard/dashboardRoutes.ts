import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RouteGroup } from '../http/HttpServer.ts';
import { sendJson } from '../http/HttpServer.ts';
import { DashboardModel, type DashboardSources } from './snapshot.ts';

const PAGE = readFileSync(fileURLToPath(new URL('./dashboard.html', import.meta.url)), 'utf8');

/**
 * /dashboard: the live media-health page; /dashboard/events: Server-Sent Events, one snapshot a
 * second to every open page (one shared timer, however many pages); /dashboard/snapshot: JSON.
 * Operators' network only: it shows no audio and no identifiers, so it carries no login here.
 */
/** The routes this group serves (docs/openapi.yaml documents each; `/dashboard/` is `/dashboard`). */
export const DASHBOARD_ROUTES = ['GET /dashboard', 'GET /dashboard/snapshot', 'GET /dashboard/events'] as const;

export function dashboardRoutes(app: DashboardSources, opts: { intervalMs?: number } = {}): RouteGroup {
  const model = new DashboardModel(app);
  const clients = new Set<import('node:http').ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  const broadcast = async () => {
    const data = `data: ${JSON.stringify(await model.snapshot())}\n\n`;
    for (const res of clients) res.write(data);
  };
  return async (req, res, url) => {
    if (req.method !== 'GET') return false;
    if (url.pathname === '/dashboard' || url.pathname === '/dashboard/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
      return true;
    }
    if (url.pathname === '/dashboard/snapshot') {
      sendJson(res, 200, await model.snapshot());
      return true;
    }
    if (url.pathname === '/dashboard/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(`data: ${JSON.stringify(await model.snapshot())}\n\n`);
      clients.add(res);
      timer ??= setInterval(() => void broadcast(), opts.intervalMs ?? 1000);
      req.on('close', () => {
        clients.delete(res);
        if (clients.size === 0 && timer) {
          clearInterval(timer);
          timer = undefined;
        }
      });
      return true;
    }
    return false;
  };
}
