import type { RouteGroup } from './HttpServer.ts';
import { sendJson } from './HttpServer.ts';
import type { Metrics } from '../metrics/metrics.ts';

/**
 * What the health routes read from the running worker. Declared here, in the words of the
 * routes, so http/ does not depend on the composition root: `app/RecorderApp.ts` satisfies it
 * as it stands and `app/recorderHttp.ts` passes the app in.
 */
export interface HealthSources {
  readonly control: { readonly fresh: boolean; readonly silentMs: number };
  readonly store: { spoolState(): { readonly bytes: number }; isSpoolFull(): boolean };
  readonly pool: { readonly workers: readonly unknown[] };
  readonly config: { readonly mediasoup: { readonly workers: number } };
  readonly recorder: { refreshGauges(): void };
  readonly metrics: Pick<Metrics, 'controlLagSeconds' | 'registry'>;
}

/**
 * /healthz: the process answers. /readyz: it can record lawfully and durably right now: the
 * control stream is fresh, the store is reachable or the spool has room, and every mediasoup
 * worker is alive. /metrics: Prometheus text (no per-call labels).
 */
/** The routes this group serves (docs/openapi.yaml documents each). */
export const HEALTH_ROUTES = ['GET /healthz', 'GET /readyz', 'GET /metrics'] as const;

export function healthRoutes(app: HealthSources): RouteGroup {
  return async (req, res, url) => {
    if (req.method !== 'GET') return false;
    if (url.pathname === '/healthz') {
      sendJson(res, 200, { status: 'alive' });
      return true;
    }
    if (url.pathname === '/readyz') {
      const spool = app.store.spoolState();
      const checks = {
        controlFresh: app.control.fresh,
        storage: !app.store.isSpoolFull(),
        spoolBytes: spool.bytes,
        mediaWorkers: app.pool.workers.length,
        mediaWorkersWanted: app.config.mediasoup.workers,
      };
      const ready = checks.controlFresh && checks.storage && checks.mediaWorkers === checks.mediaWorkersWanted;
      sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not-ready', checks });
      return true;
    }
    if (url.pathname === '/metrics') {
      app.recorder.refreshGauges();
      const silent = app.control.silentMs;
      app.metrics.controlLagSeconds.set(Number.isFinite(silent) ? silent / 1000 : -1);
      const body = await app.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': app.metrics.registry.contentType });
      res.end(body);
      return true;
    }
    return false;
  };
}
