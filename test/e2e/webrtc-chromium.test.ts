/**
 * Proves the Debian-built worker carries a real browser's WebRTC: headless Debian Chromium sends
 * its (fake) microphone, playing a fixture tone, through ICE + DTLS + SRTP into a WebRtcTransport;
 * the Opus packets the server receives decode to that tone. Before the DTLS BIO fix in
 * scripts/mediasoup-worker/debian.patch this crashed the worker at its first handshake write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import OpusScript from 'opusscript';
import { WorkerPool } from '../../src/sfu/WorkerPool.ts';
import { ROUTER_MEDIA_CODECS } from '../../src/sfu/mediaCodecs.ts';
import { createLogger } from '../../src/log/logger.ts';
import { parseRtp } from '../../src/rtp/RtpPacket.ts';
import { launchChromium, mediasoupClientBundle } from '../support/browser.ts';
import { fixturePath } from '../support/fixtures.ts';
import { toneAdvantageDb } from '../support/audio.ts';

const TONE_HZ = 523; // agent tone of media-fixtures/generate.sh
const CUSTOMER_TONE_HZ = 1230;
let pool: WorkerPool;
let server: http.Server;
let baseUrl: string;

beforeAll(async () => {
  pool = await WorkerPool.create({ size: 1, logger: createLogger('silent') });
  const bundle = mediasoupClientBundle();
  server = http.createServer((req, res) => {
    if (req.url === '/mediasoup-client.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script src="/mediasoup-client.js"></script>');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  await pool.close();
  await new Promise((r) => server.close(r));
});

describe('WebRTC from headless Chromium into the Debian-built worker', () => {
  it('receives the browser microphone over DTLS-SRTP and decodes the fixture tone', async () => {
    const router = await pool.pick().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    const transport = await router.createWebRtcTransport({
      listenInfos: [{ protocol: 'udp', ip: '127.0.0.1' }],
      enableUdp: true,
    });
    const tap = await router.createDirectTransport();
    const packets: Buffer[] = [];
    let dtlsState = 'new';
    transport.on('dtlsstatechange', (s) => (dtlsState = s));

    const browser = await launchChromium(fixturePath('agent-tone-44k.wav'));
    try {
      const page = await browser.context.newPage();
      await page.exposeFunction('connectTransport', async (dtlsParameters: unknown) => {
        await transport.connect({ dtlsParameters: dtlsParameters as never });
      });
      await page.exposeFunction('produce', async (kind: 'audio', rtpParameters: unknown) => {
        const producer = await transport.produce({ kind, rtpParameters: rtpParameters as never });
        const consumer = await tap.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities });
        consumer.on('rtp', (packet) => packets.push(Buffer.from(packet)));
        return producer.id;
      });
      await page.goto(baseUrl);
      await page.evaluate(
        async ({ caps, params }) => {
          // Runs in the page: mediasoup-client is the bundle's global, untyped here.
          type Fn = (...args: unknown[]) => Promise<unknown>;
          const w = window as unknown as { mediasoupClient: { Device: new () => { load(o: unknown): Promise<void>; createSendTransport(p: unknown): { on(e: string, f: (...a: never[]) => void): void; produce(o: unknown): Promise<unknown> } } }; connectTransport: Fn; produce: Fn };
          const device = new w.mediasoupClient.Device();
          await device.load({ routerRtpCapabilities: caps });
          const send = device.createSendTransport(params);
          send.on('connect', ({ dtlsParameters }: { dtlsParameters: unknown }, ok: () => void, fail: (e: Error) => void) =>
            w.connectTransport(dtlsParameters).then(ok, fail));
          send.on('produce', ({ kind, rtpParameters }: { kind: string; rtpParameters: unknown }, ok: (r: { id: string }) => void, fail: (e: Error) => void) =>
            w.produce(kind, rtpParameters).then((id) => ok({ id: id as string }), fail));
          const stream = await navigator.mediaDevices.getUserMedia({
            audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
          });
          await send.produce({ track: stream.getAudioTracks()[0] });
        },
        {
          caps: router.rtpCapabilities,
          params: {
            id: transport.id,
            iceParameters: transport.iceParameters,
            iceCandidates: transport.iceCandidates,
            dtlsParameters: transport.dtlsParameters,
          },
        },
      );
      const deadline = Date.now() + 15_000;
      while (packets.length < 150 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    } finally {
      await browser.close();
    }

    expect(dtlsState).toBe('connected');
    expect(pool.workers.length).toBe(1); // no crash
    expect(packets.length).toBeGreaterThanOrEqual(150);

    // Decode the last ~2 s of Opus (the first packets can hold the fake device's start-up).
    const decoder = new OpusScript(48000, 1);
    const pcm: number[] = [];
    for (const packet of packets.slice(-100)) {
      const parsed = parseRtp(packet);
      if (!parsed.ok) continue;
      const out = decoder.decode(Buffer.from(parsed.packet.payload));
      const samples = new Int16Array(out.buffer, out.byteOffset, out.length / 2);
      for (const s of samples) pcm.push(s / 32768);
    }
    decoder.delete();
    const signal = Float32Array.from(pcm);
    // The fixture's tone dominates: at least 30 dB over the other fixture's frequency.
    expect(toneAdvantageDb(signal, TONE_HZ, CUSTOMER_TONE_HZ)).toBeGreaterThan(30);
    router.close();
  }, 60_000);
});
