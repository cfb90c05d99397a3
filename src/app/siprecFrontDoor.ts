import type { OptinConfig } from '../config/config.ts';
import type { ControlClient } from '../control/ControlClient.ts';
import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Recorder } from '../recorder/Recorder.ts';
import { RecordingServer } from '../siprec/RecordingServer.ts';
import { UdpMediaPlane } from '../siprec/UdpMediaPlane.ts';
import { ThreadedMediaPlane } from '../mediathreads/ThreadedMediaPlane.ts';
import type { MediaThreadPool } from '../mediathreads/MediaThreadPool.ts';
import { SiprecMediaBridge } from './SiprecMediaBridge.ts';

export interface SiprecFrontDoor {
  readonly server: RecordingServer;
  /** Sockets in the media threads (ThreadedMediaPlane) or, with `mediaThreads: 0`, on the main thread. */
  readonly media: UdpMediaPlane | ThreadedMediaPlane;
  readonly bridge: SiprecMediaBridge;
  close(): Promise<void>;
}

/**
 * Starts the SIPREC recording server on a recorder worker: SIP listeners, the direct UDP media
 * plane, and the bridge that puts each received stream under the recorder's per-packet gate.
 *
 * Ready (OPTIONS 200, INVITEs admitted) only while the recorder could keep what it receives:
 * the policy stream fresh, the spool not full, the admission ceiling not reached. An SBC sees
 * anything else as 503 + Retry-After and tries the next recording server.
 */
export async function startSiprec(
  config: OptinConfig,
  deps: { recorder: Recorder; control: ControlClient; store: { isSpoolFull(): boolean }; metrics: Metrics; logger: Logger; mediaThreads?: MediaThreadPool | undefined },
): Promise<SiprecFrontDoor> {
  const { recorder, control, store, metrics, logger } = deps;
  const sc = config.siprec;
  const bridge = new SiprecMediaBridge(recorder, logger);
  const ready = (): boolean =>
    control.fresh && !store.isSpoolFull() && recorder.streams < config.admission.maxStreams && recorder.eventLoopLagP99Ms <= config.admission.maxEventLoopLagMs;
  const maxStreams = Math.min(sc.media.maxStreams, config.admission.maxStreams);
  const media = deps.mediaThreads
    ? new ThreadedMediaPlane(deps.mediaThreads, { maxStreams, retryAfterSeconds: sc.retryAfterSeconds, isReady: ready, sink: bridge })
    : new UdpMediaPlane({
        bindAddress: sc.media.bindAddress ?? sc.bindAddress,
        advertisedAddress: sc.media.advertisedAddress,
        portMin: sc.media.portMin,
        portMax: sc.media.portMax,
        maxStreams,
        retryAfterSeconds: sc.retryAfterSeconds,
        strictSourcePort: sc.media.strictSourcePort,
        isReady: ready,
        sink: bridge,
      });
  const server = new RecordingServer(sc, { media, registry: metrics.registry, logger });
  try {
    await server.listen();
  } catch (err) {
    await media.close();
    throw err;
  }
  logger.info({ udpPort: sc.udpPort, tcpPort: sc.tcpPort, tlsPort: sc.tlsPort }, 'SIPREC recording server listening');
  return {
    server,
    media,
    bridge,
    async close() {
      // BYE to every live session: the SBC then records elsewhere instead of waiting on a timeout.
      await server.close({ bye: true });
      await media.close();
    },
  };
}
