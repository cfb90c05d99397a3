import type { RouteGroup } from '../http/HttpServer.ts';
import type { RecorderApp } from './RecorderApp.ts';
import { accessRoutes } from '../access/routes.ts';

/**
 * Route groups served beside health and metrics (access API, dashboard, call control). Kept in
 * one list so the worker entry point and the tests mount the same thing.
 */
export async function extraRouteGroups(app: RecorderApp): Promise<RouteGroup[]> {
  // Access API (/api/*): recordings, playback, extracts, deletion, audit, compliance.
  const access = accessRoutes({ store: app.store, audit: app.audit, s3: app.s3, jwtSecret: app.config.http.jwtSecret, logger: app.logger });
  return [access.group];
}
