import { CALL_CONTROL_ROUTES } from '../callcontrol/callControlRoutes.ts';
import { SIGNAL_ROUTES } from '../callcontrol/SignallingServer.ts';
import { DASHBOARD_ROUTES } from '../dashboard/dashboardRoutes.ts';
import { HEALTH_ROUTES } from '../http/healthRoutes.ts';
import { SOFTPHONE_ROUTES } from '../softphone/softphoneRoutes.ts';

/**
 * Every route the recorder serves (`startRecorderHttp`: health and metrics, dashboard,
 * softphone and its /signal WebSocket, SIP-gateway call control), as `METHOD /path/{param}`.
 * docs/openapi.yaml documents each; test/unit/http/recorder-openapi.test.ts holds the two together.
 */
export const RECORDER_ROUTES: readonly string[] = [
  ...HEALTH_ROUTES,
  ...DASHBOARD_ROUTES,
  ...SOFTPHONE_ROUTES,
  ...SIGNAL_ROUTES,
  ...CALL_CONTROL_ROUTES,
];
