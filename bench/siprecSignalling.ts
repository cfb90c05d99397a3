/**
 * SIPREC signalling cost on this machine: N recording sessions set up and torn down in a loop
 * (INVITE with SDP + rs-metadata for two streams → 200 → ACK → BYE → 200), `concurrency` at a
 * time, over UDP or TCP on loopback. Prints INVITE→200 latency percentiles as the client sees
 * them and sessions per second. Media is not sent: this measures the front door only.
 *
 *   npx tsx bench/siprecSignalling.ts [sessions=2000] [concurrency=20] [udp|tcp]
 */
import { RecordingServer } from '../src/siprec/RecordingServer.ts';
import { UdpMediaPlane } from '../src/siprec/UdpMediaPlane.ts';
import { SipUac } from '../test/support/sipUac.ts';
import { CollectingSink, SIPREC_HEADERS, rsMetadata, sdpOffer, siprecBody, testSiprecConfig } from '../test/support/siprecFixtures.ts';

const sessions = Number(process.argv[2] ?? 2000);
const concurrency = Number(process.argv[3] ?? 20);
const transport = (process.argv[4] ?? 'udp') as 'udp' | 'tcp';

const config = testSiprecConfig({ timers: { t1: 500, t2: 4000, t4: 5000 }, mediaTimeoutSeconds: 0, maxTransactionsPerSource: 100_000, maxTransactions: 200_000 });
const media = new UdpMediaPlane({ bindAddress: '127.0.0.1', portMin: 30000, portMax: 34999, maxStreams: 4 * concurrency + 10, retryAfterSeconds: 5, isReady: () => true, sink: new CollectingSink() });
const srs = new RecordingServer(config, { media });
await srs.listen();
const port = transport === 'udp' ? srs.ports().udp! : srs.ports().tcp!;

const md = rsMetadata({
  participants: [
    { id: 'p1', aor: 'sip:+15550001@sbc', sends: ['s1'], recvs: ['s2'] },
    { id: 'p2', aor: 'sip:4001@pbx', sends: ['s2'], recvs: ['s1'] },
  ],
  streams: [
    { id: 's1', label: '1' },
    { id: 's2', label: '2' },
  ],
});
const body = siprecBody(sdpOffer([{ port: 20000, label: '1' }, { port: 20002, label: '2' }]), md);

const latencies: number[] = [];
let failures = 0;
let next = 0;
const cpu0 = process.cpuUsage();
const t0 = performance.now();

async function worker(): Promise<void> {
  const uac = await SipUac.open(transport, { host: '127.0.0.1', port });
  while (next < sessions) {
    const i = next++;
    const start = performance.now();
    const { response, dialog } = await uac.invite({ ...body, headers: [...SIPREC_HEADERS, ['X-Optin-Call-Id', `bench-${i}`]] });
    latencies.push(performance.now() - start);
    if (response.status !== 200 || !dialog) {
      failures++;
      continue;
    }
    const bye = await dialog.bye();
    if (bye.status !== 200) failures++;
  }
  await uac.close();
}

await Promise.all(Array.from({ length: concurrency }, () => worker()));
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
latencies.sort((a, b) => a - b);
const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(2);
console.log(
  JSON.stringify({
    transport,
    sessions,
    concurrency,
    failures,
    sessionsPerSecond: Math.round(sessions / elapsed),
    inviteTo200Ms: { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: q(1) },
    cpuSecondsPerSession_ms: (((cpu.user + cpu.system) / 1e6 / sessions) * 1000).toFixed(3),
    note: 'client and server in one process on loopback; CPU includes both',
    dialogsLeft: srs.sip.dialogCount,
    streamsLeft: media.streamCount,
  }),
);
await srs.close();
await media.close();
