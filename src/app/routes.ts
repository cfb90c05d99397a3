import type { RouteGroup } from '../http/HttpServer.ts';
import type { RecorderApp } from './RecorderApp.ts';

/**
 * Route groups served beside health and metrics (access API, dashboard, call control). Kept in
 * one list so the worker entry point and the tests mount the same thing.
 */
export async function extraRouteGroups(_app: RecorderApp): Promise<RouteGroup[]> {
  return [];
}
