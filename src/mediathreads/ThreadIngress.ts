import type { LegIngress } from '../sfu/LegIngress.ts';
import type { IngressPorts } from './protocol.ts';
import type { TrackThread } from './ThreadedTrack.ts';

/**
 * The main thread's handle on a plain leg's ingress that runs in the call's media thread (issue 16
 * item 2): the gateway's RTP is read, checked and rewritten there and sent on to the leg's
 * PlainTransport over loopback; nothing of it crosses to the main thread. Its drops and SSRC
 * changes reach the metrics through the thread's stats (MediaThreadPool).
 */
export class ThreadIngress implements LegIngress {
  readonly rtpPort: number;
  readonly rtcpPort: number;
  readonly inner: IngressPorts['inner'];
  readonly #thread: TrackThread;
  readonly #iid: number;
  #closed = false;

  constructor(thread: TrackThread, iid: number, ports: IngressPorts) {
    this.#thread = thread;
    this.#iid = iid;
    this.rtpPort = ports.rtpPort;
    this.rtcpPort = ports.rtcpPort;
    this.inner = ports.inner;
  }

  attach(target: { rtpPort: number; rtcpPort: number }): void {
    if (!this.#closed) this.#thread.send({ t: 'ingress.attach', iid: this.#iid, target: { rtpPort: target.rtpPort, rtcpPort: target.rtcpPort } });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#thread.send({ t: 'ingress.close', iid: this.#iid });
  }
}
