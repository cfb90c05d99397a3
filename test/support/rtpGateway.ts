import dgram from 'node:dgram';
import { OpusWasmEncoder } from '../../src/media/OpusWasmEncoder.ts';
import { buildRtp } from '../../src/rtp/RtpPacket.ts';

/** One stretch of a gateway's stream: from `fromMs` to `toMs` (after the start) on one SSRC and payload type. */
export interface GatewayPhase {
  fromMs: number;
  toMs: number;
  ssrc: number;
  payloadType: number;
  /** First sequence number and timestamp of the stretch (a new source starts anywhere, RFC 3550 §5.1). */
  seq0: number;
  ts0: number;
}

export interface GatewayPacket {
  /** When it was sent (Date.now()). */
  at: number;
  ssrc: number;
  payloadType: number;
  seq: number;
  ts: number;
}

/**
 * An Opus RTP sender that behaves like a SIP gateway across re-INVITEs: it sends a 440 Hz tone in
 * 20 ms packets from a fixed local port, paced by the wall clock (packet k leaves at start + 20·k
 * ms), switching SSRC, sequence, timestamp base and payload type at the phase boundaries, and
 * sending nothing between phases (a hold). Within a phase the timestamp advances with the clock.
 * `sendRaw` injects any packet from the same port (a reordered straggler).
 */
export async function startOpusGateway(opts: { host: string; port: number; fromPort: number; phases: readonly GatewayPhase[] }): Promise<{
  readonly startedAt: number;
  readonly sent: readonly GatewayPacket[];
  sendRaw(packet: Buffer): void;
  /** A 20 ms Opus frame of the tone (for hand-built packets). */
  frame(): Buffer;
  stop(): Promise<void>;
}> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => sock.once('error', reject).bind(opts.fromPort, '127.0.0.1', () => resolve()));
  const encoder = new OpusWasmEncoder({ sampleRate: 48_000, channels: 1, bitrate: 32_000 });
  let sample = 0;
  const frame = (): Buffer => {
    const pcm = new Int16Array(960);
    for (let n = 0; n < 960; n++) pcm[n] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * (sample + n)) / 48_000));
    sample += 960;
    return encoder.encode(pcm);
  };
  const sent: GatewayPacket[] = [];
  const counts = new Map<GatewayPhase, number>();
  const startedAt = Date.now();
  let k = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const sendDue = (): void => {
    const due = Math.floor((Date.now() - startedAt) / 20);
    for (; k <= due; k++) {
      const t = k * 20;
      const phase = opts.phases.find((p) => t >= p.fromMs && t < p.toMs);
      if (!phase) continue;
      const n = counts.get(phase) ?? 0;
      counts.set(phase, n + 1);
      const seq = (phase.seq0 + n) & 0xffff;
      const ts = (phase.ts0 + ((t - phase.fromMs) / 20) * 960) >>> 0;
      sock.send(buildRtp({ payloadType: phase.payloadType, sequenceNumber: seq, timestamp: ts, ssrc: phase.ssrc, payload: frame(), marker: n === 0 }), opts.port, opts.host);
      sent.push({ at: Date.now(), ssrc: phase.ssrc, payloadType: phase.payloadType, seq, ts });
    }
    if (!stopped) timer = setTimeout(sendDue, 20 - ((Date.now() - startedAt) % 20));
  };
  sendDue();
  return {
    startedAt,
    sent,
    sendRaw: (packet) => sock.send(packet, opts.port, opts.host),
    frame,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await new Promise<void>((r) => sock.close(() => r()));
      encoder.close();
    },
  };
}
