import type { RecorderApp } from './RecorderApp.ts';
import { startHttpServer, type HttpServerHandle, type RouteGroup } from '../http/HttpServer.ts';
import { healthRoutes } from '../http/healthRoutes.ts';
import { dashboardRoutes } from '../dashboard/dashboardRoutes.ts';
import { softphoneRoutes } from '../softphone/softphoneRoutes.ts';
import { callControlRoutes } from '../callcontrol/callControlRoutes.ts';
import { SignallingServer } from '../callcontrol/SignallingServer.ts';
import { RoomDirectory } from '../callcontrol/RoomDirectory.ts';
import { CallTokenVerifier, type TokenAudience } from '../callcontrol/callToken.ts';

export interface RecorderHttp extends HttpServerHandle {
  rooms: RoomDirectory;
  signalling: SignallingServer | undefined;
}

/**
 * Everything the recorder serves over HTTP: health and metrics, the live dashboard, softphone
 * signalling (when callControl.joinSecret is set) and SIP-leg call control (when
 * callControl.sipLegSecret is set). The access API is the control plane's (issue 14): recorders
 * do media only. The worker entry point, the demo and the tests all mount the same set.
 */
export async function startRecorderHttp(
  app: RecorderApp,
  opts: { port?: number; host?: string; onDtmf?: (callId: string, participantId: string, digit: string) => void } = {},
): Promise<RecorderHttp> {
  const rooms = new RoomDirectory(app.recorder, (callId) => app.openCall(callId));
  const cc = app.config.callControl;
  const verifier = (secret: string | undefined, audience: TokenAudience) =>
    secret === undefined ? undefined : new CallTokenVerifier({ secret, audience, maxLifetimeSeconds: cc.maxTokenLifetimeSeconds });
  const joinTokens = verifier(cc.joinSecret, 'softphone-join');
  const legTokens = verifier(cc.sipLegSecret, 'sip-leg');
  const groups: RouteGroup[] = [healthRoutes(app), dashboardRoutes(app)];
  if (joinTokens) groups.push(softphoneRoutes());
  if (legTokens) groups.push(callControlRoutes(rooms, legTokens));
  const http = await startHttpServer({
    host: opts.host ?? app.config.http.host,
    port: opts.port ?? app.config.http.port,
    groups,
    logger: app.logger,
  });
  let signalling: SignallingServer | undefined;
  if (joinTokens) {
    signalling = new SignallingServer({
      tokens: joinTokens,
      recorder: app.recorder,
      rooms,
      logger: app.logger,
      limits: {
        joinTimeoutMs: cc.joinTimeoutMs,
        maxTransportsPerPeer: cc.maxTransportsPerPeer,
        maxProducersPerPeer: cc.maxProducersPerPeer,
        maxConsumersPerPeer: cc.maxConsumersPerPeer,
        allowedOrigins: cc.allowedOrigins,
      },
      ...(opts.onDtmf ? { onDtmf: opts.onDtmf } : {}),
    });
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
