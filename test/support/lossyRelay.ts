import dgram from 'node:dgram';

/**
 * A UDP relay on loopback that drops a fraction of the packets passing through: injected network
 * loss between a real sender (ffmpeg) and mediasoup. Deterministic for a given seed.
 */
export async function startLossyRelay(target: { ip: string; port: number }, lossRatio: number, seed = 1): Promise<{ port: number; dropped(): number; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const out = dgram.createSocket('udp4');
  let state = seed >>> 0 || 1;
  const rand = () => {
    // xorshift32: reproducible loss patterns
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
  let dropped = 0;
  sock.on('message', (msg) => {
    if (rand() < lossRatio) {
      dropped++;
      return;
    }
    out.send(msg, target.port, target.ip);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  await new Promise<void>((r) => out.bind(0, '127.0.0.1', r));
  return {
    port: sock.address().port,
    dropped: () => dropped,
    close() {
      sock.close();
      out.close();
    },
  };
}
