import type { types } from 'mediasoup';
import type { AudioCodec } from '../sfu/mediaCodecs.ts';
import type { CodecChoice } from '../siprec/MediaPlane.ts';
import type { PendingTap, ThreadTaps } from '../recorder/RecorderTrack.ts';
import type { MediaThreadPool } from './MediaThreadPool.ts';

const NAMES: Readonly<Record<AudioCodec, CodecChoice['name']>> = { opus: 'opus', pcmu: 'PCMU', pcma: 'PCMA' };

/**
 * The tap of an SFU leg into the media threads: a PlainTransport consumer per leg, on loopback,
 * sending to a socket of the thread of the leg's call, where the packets meet the call's track and
 * gate word exactly like a SIPREC stream's. The main thread carries no packet of the leg (the
 * DirectTransport tap delivered every packet to it over mediasoup's channel, one message each).
 */
export class MediaThreadTaps implements ThreadTaps {
  readonly #pool: MediaThreadPool;

  constructor(pool: MediaThreadPool) {
    this.#pool = pool;
  }

  async tap(router: types.Router, callId: string, participantId: string, producerId: string, codec: AudioCodec): Promise<PendingTap> {
    const transport = await router.createPlainTransport({ listenInfo: { protocol: 'udp', ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
    try {
      const consumer = await transport.consume({ producerId, rtpCapabilities: router.rtpCapabilities });
      const c = consumer.rtpParameters.codecs[0]!;
      const stream = await this.#pool.openStream(
        {
          callId,
          participantId,
          speakers: [participantId],
          codec: { name: NAMES[codec], payloadType: c.payloadType, clockRate: c.clockRate, channels: c.channels ?? 1 },
          remote: { address: '127.0.0.1', rtpPort: transport.tuple.localPort, rtcpPort: transport.tuple.localPort, rtcpMux: true },
          held: false,
        },
        { tap: true },
      );
      const close = (): void => {
        transport.close();
        stream.close('removed');
      };
      consumer.observer.once('close', close);
      return {
        consumer,
        connect: async () => {
          await transport.connect({ ip: '127.0.0.1', port: stream.local.rtpPort });
        },
        close,
      };
    } catch (err) {
      transport.close();
      throw err;
    }
  }
}
