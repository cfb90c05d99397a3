import dgram from 'node:dgram';
import { encodeAlaw, encodeUlaw } from '../../src/media/g711.ts';

export interface PacedTone {
  /** Stops sending (a hold: the SBC forwards nothing); resolves once nothing more is due. */
  pause(): void;
  /**
   * Sends again. The next packet continues the sequence number and the RTP timestamp right after
   * the last one sent, as if no time had passed: what many SBCs and phones do after a hold (the
   * sender's RTP clock stood still), and the case that would compress time if the recorder trusted
   * the timestamps across a hold.
   */
  resume(): void;
  stop(): Promise<number>;
}

/**
 * A G.711 RTP sender paced by the wall clock: packet i leaves at start + 20·i ms (not after a
 * chain of 20 ms timeouts, which drifts late by a millisecond or more per packet on a loaded
 * machine and would read as clock skew to the jitter buffer). Runs until `stop()`.
 */
export function paceTone(opts: { port: number; freq: number; pt?: 0 | 8; ssrc?: number; host?: string }): PacedTone {
  const sock = dgram.createSocket('udp4');
  const pt = opts.pt ?? 0;
  const encode = pt === 8 ? encodeAlaw : encodeUlaw;
  const ssrc = opts.ssrc ?? ((Math.random() * 0xffffffff) >>> 0);
  let start = Date.now();
  let i = 0;
  let stopped = false;
  let paused = false;
  let timer: NodeJS.Timeout | undefined;
  const sendDue = (): void => {
    const due = Math.floor((Date.now() - start) / 20);
    for (; i <= due; i++) {
      const pcm = new Int16Array(160);
      for (let n = 0; n < 160; n++) pcm[n] = Math.round(12000 * Math.sin((2 * Math.PI * opts.freq * (i * 160 + n)) / 8000));
      const header = Buffer.alloc(12);
      header[0] = 0x80;
      header[1] = pt;
      header.writeUInt16BE((1000 + i) & 0xffff, 2);
      header.writeUInt32BE((i * 160) >>> 0, 4);
      header.writeUInt32BE(ssrc, 8);
      sock.send(Buffer.concat([header, encode(pcm)]), opts.port, opts.host ?? '127.0.0.1');
    }
    if (!stopped && !paused) timer = setTimeout(sendDue, 20 - ((Date.now() - start) % 20));
  };
  sendDue();
  return {
    pause() {
      paused = true;
      if (timer) clearTimeout(timer);
    },
    resume() {
      if (!paused || stopped) return;
      paused = false;
      // Packet i (the next one) is due now: the timeline continues where it stopped.
      start = Date.now() - i * 20;
      sendDue();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await new Promise<void>((r) => sock.close(() => r()));
      return i;
    },
  };
}
