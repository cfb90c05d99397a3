import type { RecorderApp } from './RecorderApp.ts';
import { startHttpServer, type HttpServerHandle, type RouteGroup } from '../http/HttpServer.ts';
import { healthRoutes } from '../http/healthRoutes.ts';
import { dashboardRoutes } from '../dashboard/dashboardRoutes.ts';
import { softphoneRoutes } from '../softphone/softphoneRoutes.ts';
import { callControlRoutes } from '../callcontrol/callControlRoutes.ts';
import { SignallingServer } from '../callcontrol/SignallingServer.ts';
import { RoomDirectory } from '../callcontrol/RoomDirectory.ts';

export interface RecorderHttp extends HttpServerHandle {
  rooms: RoomDirectory;
  signalling: SignallingServer | undefined;
}

/**
 * Everything the recorder serves over HTTP: health and metrics, the live dashboard, and (when a
 * call-control secret is configured) softphone signalling and SIP-leg call control. The access
 * API is the control plane's (issue 14): recorders do media only. The worker entry point, the demo and the tests all mount the same set.
 */
export async function startRecorderHttp(
  app: RecorderApp,
  opts: { port?: number; host?: string; onDtmf?: (callId: string, participantId: string, digit: string) => void } = {},
): Promise<RecorderHttp> {
  const rooms = new RoomDirectory(app.recorder, (callId) => app.openCall(callId));
  const secret = app.config.http.callControlSecret;
  const groups: RouteGroup[] = [healthRoutes(app), dashboardRoutes(app)];
  if (secret) groups.push(softphoneRoutes(), callControlRoutes(rooms, secret));
  const http = await startHttpServer({
    host: opts.host ?? app.config.http.host,
    port: opts.port ?? app.config.http.port,
    groups,
    logger: app.logger,
  });
  let signalling: SignallingServer | undefined;
  if (secret) {
    signalling = new SignallingServer({ secret, recorder: app.recorder, rooms, logger: app.logger, ...(opts.onDtmf ? { onDtmf: opts.onDtmf } : {}) });
    signalling.attach(http.server);
  }
  return {
    ...http,
    rooms,
    signalling,
    async close() {
      signalling?.close();
      await http.close();
    },
  };
}
