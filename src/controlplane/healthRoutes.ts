import type { FastifyInstance } from 'fastify';
import type { Database } from '../db/Database.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';

/**
 * /healthz: the process answers. /readyz: the database answers within a second (a load balancer
 * sends API traffic elsewhere otherwise). /metrics: Prometheus text. None needs a token (no data
 * about people: counts only); bind them behind the network you trust.
 */
export async function healthRoutes(app: FastifyInstance, deps: { db: Database; metrics: ControlPlaneMetrics }): Promise<void> {
  const noLimit = { rateLimit: false } as const;
  app.get('/healthz', { config: noLimit, schema: { tags: ['operations'], summary: 'Liveness' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: noLimit, schema: { tags: ['operations'], summary: 'Readiness: the database answers' } }, async (_req, reply) => {
    try {
      await Promise.race([
        deps.db.ping(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 1000).unref()),
      ]);
      deps.metrics.dbUp.set(1);
      await reply.send({ status: 'ready', database: 'ok' });
    } catch {
      deps.metrics.dbUp.set(0);
      await reply.code(503).send({ status: 'not-ready', database: 'unreachable' });
    }
  });
  app.get('/metrics', { config: noLimit, schema: { hide: true } }, async (_req, reply) => {
    await reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
}
