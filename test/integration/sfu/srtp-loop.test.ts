/**
 * Proves the Debian-built mediasoup worker (libsrtp2 through our libsrtp3 shim, Debian's OpenSSL)
 * encrypts and decrypts SRTP: RTP injected into Router A goes out of an SRTP PlainTransport, into
 * another SRTP PlainTransport on Router B, and must come out of B byte-identical in payload.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { types } from 'mediasoup';
import { WorkerPool } from '../../../src/sfu/WorkerPool.ts';
import { ROUTER_MEDIA_CODECS, plainAudioRtpParameters } from '../../../src/sfu/mediaCodecs.ts';
import { createLogger } from '../../../src/log/logger.ts';

let pool: WorkerPool;
beforeAll(async () => {
  pool = await WorkerPool.create({ size: 1, logger: createLogger('silent') });
});
afterAll(async () => {
  await pool.close();
});

function rtp(seq: number, ts: number, ssrc: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 0x80;
  h[1] = 100;
  h.writeUInt16BE(seq & 0xffff, 2);
  h.writeUInt32BE(ts >>> 0, 4);
  h.writeUInt32BE(ssrc >>> 0, 8);
  return Buffer.concat([h, payload]);
}

/** RTP payload (RFC 3550 §5.1): skips CSRCs and the header extension the consumer may add. */
function rtpPayload(packet: Buffer): Buffer {
  let offset = 12 + 4 * (packet[0]! & 0x0f);
  if (packet[0]! & 0x10) offset += 4 + 4 * packet.readUInt16BE(offset + 2);
  return packet.subarray(offset);
}

async function loop(suite: types.SrtpCryptoSuite): Promise<{ sent: Buffer[]; got: Buffer[] }> {
  const worker = pool.pick();
  const routerA = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  const routerB = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  try {
    const listenInfo = { protocol: 'udp' as const, ip: '127.0.0.1' };
    const a = await routerA.createPlainTransport({ listenInfo, rtcpMux: true, comedia: false, enableSrtp: true, srtpCryptoSuite: suite });
    const b = await routerB.createPlainTransport({ listenInfo, rtcpMux: true, comedia: false, enableSrtp: true, srtpCryptoSuite: suite });
    await a.connect({ ip: '127.0.0.1', port: b.tuple.localPort, srtpParameters: b.srtpParameters });
    await b.connect({ ip: '127.0.0.1', port: a.tuple.localPort, srtpParameters: a.srtpParameters });

    // Source: a producer on A fed from Node through a DirectTransport.
    const injector = await routerA.createDirectTransport();
    const ssrc = 0x1234567;
    const source = await injector.produce({ kind: 'audio', rtpParameters: plainAudioRtpParameters('opus', ssrc) });
    const out = await a.consume({ producerId: source.id, rtpCapabilities: routerB.rtpCapabilities });
    // B receives what A's consumer sends, with A's consumer's RTP parameters.
    const remote = await b.produce({ kind: 'audio', rtpParameters: out.rtpParameters });
    const tap = await routerB.createDirectTransport();
    const sink = await tap.consume({ producerId: remote.id, rtpCapabilities: routerB.rtpCapabilities });
    const got: Buffer[] = [];
    sink.on('rtp', (packet) => got.push(Buffer.from(rtpPayload(packet))));
    await new Promise((r) => setTimeout(r, 100));

    const sent: Buffer[] = [];
    for (let i = 0; i < 50; i++) {
      const payload = Buffer.from(`opus-frame-${suite}-${i}`.padEnd(80, '.'));
      sent.push(payload);
      source.send(rtp(1000 + i, 960 * i, ssrc, payload));
      await new Promise((r) => setTimeout(r, 5));
    }
    const deadline = Date.now() + 3000;
    while (got.length < sent.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // B decrypted at least every payload byte A sent (plus headers): SRTP really carried them.
    const stats = await b.getStats();
    expect(stats[0]?.rtpBytesReceived).toBeGreaterThanOrEqual(sent.reduce((n, p) => n + p.length, 0));
    return { sent, got };
  } finally {
    routerA.close();
    routerB.close();
  }
}

describe('SRTP through the Debian-built worker', () => {
  for (const suite of ['AES_CM_128_HMAC_SHA1_80', 'AEAD_AES_256_GCM'] as const) {
    it(`loops RTP through an SRTP PlainTransport pair with ${suite}`, async () => {
      const { sent, got } = await loop(suite);
      expect(got.length).toBe(sent.length);
      expect(got.map((b) => b.toString())).toEqual(sent.map((b) => b.toString()));
      expect(pool.workers.length).toBe(1); // the worker survived
    });
  }
});
