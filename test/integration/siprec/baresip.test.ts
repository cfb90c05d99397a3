/**
 * A SIP user agent nobody here wrote: Debian's baresip places a plain SIP recording leg to our
 * recording server (Request-URI `sip:rec.<callId>.<participantId>@...`, the default plain-leg
 * rule), its `ausine` module sending a 440 Hz tone. The RTP must arrive at the media plane's sink
 * under that call and participant, and its payload must decode (src/media/g711.ts) to the tone.
 * Recording through the gate (a recorder worker) is tested in recorded.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingServer } from '../../../src/siprec/RecordingServer.ts';
import { UdpMediaPlane } from '../../../src/siprec/UdpMediaPlane.ts';
import { assertBaresip, baresipCall } from '../../support/baresip.ts';
import { CollectingSink, decodeG711Packets, testSiprecConfig, toneAdvantage8k } from '../../support/siprecFixtures.ts';


const sink = new CollectingSink();
let media: UdpMediaPlane;
let srs: RecordingServer;
let dir: string;

beforeAll(async () => {
  // A missing baresip fails the test (scripts/setup.sh installs baresip-core); it never skips.
  assertBaresip();
  const config = testSiprecConfig({ timers: { t1: 500, t2: 4000, t4: 5000 }, codecs: ['PCMU', 'PCMA', 'opus'] });
  media = new UdpMediaPlane({ bindAddress: '127.0.0.1', portMin: config.media.portMin, portMax: config.media.portMax, maxStreams: 10, retryAfterSeconds: 5, isReady: () => true, sink });
  srs = new RecordingServer(config, { media });
  await srs.listen();
  dir = mkdtempSync(path.join(tmpdir(), 'optin-baresip-'));
});

afterAll(async () => {
  await srs?.close();
  await media?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const runBaresip = (codec: 'PCMU' | 'PCMA' | 'opus', uri: string, seconds: number, transport: 'udp' | 'tcp', srtp = false): Promise<string> =>
  baresipCall({ dir, codec, uri, seconds, transport, srtp });

describe('baresip places a plain SIP recording leg', () => {
  it.each([
    ['PCMU', 'udp'],
    ['PCMA', 'tcp'],
  ] as const)('%s over %s: the 440 Hz tone arrives at the receive callback under its call and participant', async (codec, transport) => {
    const callId = `bs-${codec.toLowerCase()}`;
    const participantId = 'agent-1';
    const port = transport === 'udp' ? srs.ports().udp! : srs.ports().tcp!;
    const uri = `sip:rec.${callId}.${participantId}@127.0.0.1:${port}${transport === 'tcp' ? ';transport=tcp' : ''}`;
    const out = await runBaresip(codec, uri, 4, transport);
    expect(out).toContain('Call established');
    const got = sink.streams.get(`${callId}/${participantId}`);
    expect(got, 'no RTP reached the sink').toBeDefined();
    // ~3.5 s of 20 ms packets after the call is up; leave room for start-up on a loaded machine.
    expect(got!.packets.length).toBeGreaterThan(100);
    const pt = codec === 'PCMA' ? 8 : 0;
    expect(got!.packets.every((p) => (p[1]! & 0x7f) === pt)).toBe(true);
    // Skip the first packets (resampler start-up), then the tone must dominate.
    const pcm = decodeG711Packets(got!.packets.slice(10), pt);
    expect(toneAdvantage8k(pcm, 440, 660)).toBeGreaterThan(30);
    expect(toneAdvantage8k(pcm, 440, 1000)).toBeGreaterThan(30);
    // baresip hung up with a BYE: nothing left open.
    await sink.waitFor(() => srs.sip.dialogCount === 0 && media.streamCount === 0, 3000);
    const opened = sink.events.find((e) => e.type === 'opened' && e.callId === callId);
    expect(opened?.type === 'opened' && opened.codec.name).toBe(codec);
    expect(sink.events.some((e) => e.type === 'closed' && e.callId === callId && e.reason === 'bye')).toBe(true);
    console.log(`[baresip ${codec}/${transport}] ${got!.packets.length} RTP packets, 440 Hz advantage ${toneAdvantage8k(pcm, 440, 660).toFixed(1)} dB`);
  });

  it('SRTP keyed by SDES (RFC 4568): baresip encrypts, the media plane authenticates and decrypts to the tone', async () => {
    const callId = 'bs-srtp';
    const uri = `sip:rec.${callId}.agent-3@127.0.0.1:${srs.ports().udp!}`;
    await runBaresip('PCMU', uri, 3, 'udp', true);
    const got = sink.streams.get(`${callId}/agent-3`);
    expect(got, 'no decrypted RTP reached the sink').toBeDefined();
    expect(got!.packets.length).toBeGreaterThan(50);
    const opened = sink.events.find((e) => e.type === 'opened' && e.callId === callId);
    expect(opened?.type === 'opened' && opened.srtp).toBe(true);
    const pcm = decodeG711Packets(got!.packets.slice(10), 0);
    expect(toneAdvantage8k(pcm, 440, 660)).toBeGreaterThan(30);
  });

  it('opus: packets arrive with the negotiated dynamic payload type', async () => {
    const callId = 'bs-opus';
    const uri = `sip:rec.${callId}.agent-2@127.0.0.1:${srs.ports().udp!}`;
    await runBaresip('opus', uri, 3, 'udp');
    const got = sink.streams.get(`${callId}/agent-2`);
    expect(got!.packets.length).toBeGreaterThan(50);
    const opened = sink.events.find((e) => e.type === 'opened' && e.callId === callId);
    expect(opened?.type === 'opened' && opened.codec.name).toBe('opus');
    const pt = opened?.type === 'opened' ? opened.codec.payloadType : -1;
    expect(got!.packets.every((p) => (p[1]! & 0x7f) === pt)).toBe(true);
  });
});
