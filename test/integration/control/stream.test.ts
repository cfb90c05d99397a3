import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { ControlClient, type ControlClientEvents, type ControlClientOptions } from '../../../src/control/ControlClient.ts';
import { PolicyServer, type PolicyServerEvents, type PolicyServerOptions } from '../../../src/control/PolicyServer.ts';
import { NONCE_HEADER, createNonce, createWorkerToken } from '../../../src/control/auth.ts';
import { MAX_MESSAGE_BYTES } from '../../../src/control/protocol.ts';
import type { ConsentEvidence, Participant } from '../../../src/gate/facts.ts';
import type { EventMap, TypedEmitter } from '../../../src/events/TypedEmitter.ts';
import { decideGate } from '../../../src/gate/decideGate.ts';

/**
 * The control stream end to end: a real PolicyServer, a real ControlClient,
 * real WebSocket connections over loopback.
 */

const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef';
const HEARTBEAT_MS = 50;
const participants: Participant[] = [
  { participantId: 'p-agent', role: 'agent', subjectId: 'agent-1', teamLeadId: 'lead-1' },
  { participantId: 'p-cust', role: 'customer', subjectId: 'cust-1' },
];
const evidence = (): ConsentEvidence => ({ method: 'dtmf', at: Date.now(), infoVersion: 'info-v3', ref: 'ivr-42' });

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startServer(options: Partial<PolicyServerOptions> = {}): Promise<PolicyServer> {
  const server = new PolicyServer({ secret: SECRET, heartbeatMs: HEARTBEAT_MS, ...options });
  await server.listen();
  cleanups.push(() => server.close());
  return server;
}

function startClient(url: string, options: Partial<ControlClientOptions> = {}): ControlClient {
  const client = new ControlClient({ url, workerId: 'worker-1', secret: SECRET, backoff: { minMs: 10, maxMs: 100 }, ...options });
  cleanups.push(() => client.close());
  client.start();
  return client;
}

/** The next emission of `event` matching `match`, or a timeout. */
function next<K extends keyof ControlClientEvents & string>(
  emitter: ControlClient, event: K, match?: (...args: ControlClientEvents[K]) => boolean, timeoutMs?: number,
): Promise<ControlClientEvents[K]>;
function next<K extends keyof PolicyServerEvents & string>(
  emitter: PolicyServer, event: K, match?: (...args: PolicyServerEvents[K]) => boolean, timeoutMs?: number,
): Promise<PolicyServerEvents[K]>;
function next(
  emitter: TypedEmitter<EventMap>,
  event: string,
  match: (...args: unknown[]) => boolean = () => true,
  timeoutMs = 5000,
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]): void => {
      if (!match(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    emitter.on(event, listener);
  });
}

async function connected(options: Partial<PolicyServerOptions> = {}): Promise<{ server: PolicyServer; client: ControlClient }> {
  const server = await startServer(options);
  const client = startClient(server.url);
  await client.waitFresh();
  return { server, client };
}

describe('snapshot, deltas, heartbeats', () => {
  it('sends the existing state as a snapshot, then numbered deltas; heartbeats keep it fresh', async () => {
    const server = await startServer();
    const future = Date.now() + 60_000;
    server.setSchedule('agent-1', [{ start: Date.now() - 1, end: future }], 5);
    server.startCall('c1', participants);
    const client = startClient(server.url);
    await client.waitFresh();
    expect(client.lastSeq).toBe(server.seq);
    expect(client.state.call('c1')?.participants.size).toBe(2);
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toEqual(['no-consent']);

    const facts: string[] = [];
    client.on('fact', (fact, seq) => facts.push(`${seq}:${fact.type}`));
    const change = next(client, 'change', (id) => id === 'c1');
    const d = server.grantConsent('c1', 'p-cust', evidence());
    await change;
    expect(facts).toEqual([`${d.seq}:consent.granted`]);
    expect(decideGate(client.state, 'c1', Date.now())).toMatchObject({ open: true, evidence: [d.fact.type === 'consent.granted' ? d.fact.evidence : null] });

    // Several heartbeat timeouts without facts: still fresh, nothing stale.
    const stale = spy(client, 'stale');
    await sleep(HEARTBEAT_MS * 8);
    expect(client.fresh).toBe(true);
    expect(stale.calls).toBe(0);

    const ended = next(client, 'change', (id) => id === 'c1');
    server.endCall('c1');
    await ended;
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toEqual(['call-ended']);
  });

  it('splits a snapshot larger than 64 KiB into parts and applies it atomically', async () => {
    const server = await startServer();
    for (let i = 0; i < 400; i++) {
      server.startCall(`call-${i}`, participants.map((p) => ({ ...p, participantId: `${p.participantId}-${i}` })));
      server.grantConsent(`call-${i}`, `p-cust-${i}`, evidence());
    }
    const sizes: number[] = [];
    const client = new ControlClient({ url: server.url, workerId: 'worker-1', secret: SECRET });
    cleanups.push(() => client.close());
    const freshAt = next(client, 'fresh');
    client.on('change', () => sizes.push([...client.state.activeCallIds()].length));
    client.start();
    await freshAt;
    expect([...client.state.activeCallIds()]).toHaveLength(400);
    expect(sizes[0]).toBe(400); // the first change already sees the whole snapshot
    expect(client.lastSeq).toBe(800);
  });
});

/** Counts emissions (a tiny spy that needs no mocking library). */
function spy<E extends EventMap, K extends keyof E & string>(emitter: TypedEmitter<E>, event: K): { calls: number } {
  const counter = { calls: 0 };
  emitter.on(event, (() => counter.calls++) as never);
  return counter;
}

describe('authentication', () => {
  it('a worker with a wrong secret gets HTTP 401 with the reason and stays stale', async () => {
    const server = await startServer();
    const failure = next(server, 'auth-failure');
    const client = startClient(server.url, { secret: 'wrong-secret-0123456789abcdef-0123456789abcdef' });
    const [reason] = await next(client, 'auth-failed');
    expect(reason).toBe('HTTP 401 bad-signature');
    expect(await failure).toEqual(['bad-signature']);
    expect(client.fresh).toBe(false);
    expect(server.connectionCount).toBe(0);
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toContain('control-stale');
  });

  it('401 carries a readable reason; a replayed nonce and a missing token are refused', async () => {
    const server = await startServer();
    const nonce = createNonce();
    const headers = { authorization: `Bearer ${createWorkerToken(SECRET, 'worker-1', nonce)}`, [NONCE_HEADER]: nonce };
    const first = new WebSocket(server.url, { headers });
    cleanups.push(() => first.terminate());
    await new Promise((resolve, reject) => first.once('open', resolve).once('error', reject));

    const attempt = (h: Record<string, string>): Promise<{ status: number; reason: string | undefined; body: string }> =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(server.url, { headers: h });
        ws.on('error', () => undefined);
        ws.once('open', () => reject(new Error('unexpectedly accepted')));
        ws.once('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            ws.terminate();
            resolve({ status: res.statusCode ?? 0, reason: res.headers['x-optin-auth-error'] as string | undefined, body });
          });
        });
      });
    const replay = await attempt(headers);
    expect(replay).toMatchObject({ status: 401, reason: 'nonce-reused' });
    expect(replay.body).toMatch(/fresh nonce/);
    const missing = await attempt({ [NONCE_HEADER]: createNonce() });
    expect(missing).toMatchObject({ status: 401, reason: 'missing-token' });
    expect(missing.body).not.toContain(SECRET);
  });

  it('a server that cannot prove the secret is refused: socket closed, state stays stale', async () => {
    // An impostor that accepts any worker and sends a plausible stream with a forged proof.
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => new Promise((r) => wss.close(r)));
    await new Promise((r) => wss.once('listening', r));
    const closes: number[] = [];
    wss.on('connection', (ws) => {
      ws.on('close', (code) => closes.push(code));
      ws.send(JSON.stringify({ v: 1, type: 'hello', serverId: 'evil', proof: 'A'.repeat(43), heartbeatMs: 50 }));
      ws.send(JSON.stringify({ v: 1, type: 'snapshot', seq: 0, at: Date.now(), part: 0, parts: 1, calls: [], agents: [] }));
    });
    const port = (wss.address() as { port: number }).port;
    const client = startClient(`ws://127.0.0.1:${port}`);
    const fresh = spy(client, 'fresh');
    const [reason] = await next(client, 'auth-failed');
    expect(reason).toBe('bad-proof');
    await sleep(100);
    expect(fresh.calls).toBe(0);
    expect(client.fresh).toBe(false);
    expect(closes).toContain(4003);
  });

  it('speaks TLS: wss:// with a private CA; refuses an unknown CA', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'optin-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=optin-test', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const cert = readFileSync(join(dir, 'cert.pem'));
    const server = await startServer({ https: { cert, key: readFileSync(join(dir, 'key.pem')) } });
    expect(server.url).toMatch(/^wss:\/\//);
    const client = startClient(server.url, { ca: cert });
    await client.waitFresh();
    expect(client.fresh).toBe(true);

    const untrusting = startClient(server.url);
    await sleep(300);
    expect(untrusting.fresh).toBe(false);
  });
});

describe('bad frames get an error reply and change nothing', () => {
  async function expectRejected(server: PolicyServer, client: ControlClient, send: () => void, code: string): Promise<void> {
    const seq = client.lastSeq;
    const paused = client.state.call('c1')?.paused;
    const reply = next(server, 'worker-error');
    send();
    const [err] = await reply;
    expect(err.code).toBe(code);
    expect(client.fresh).toBe(true);
    expect(client.lastSeq).toBe(seq);
    expect(client.state.call('c1')?.paused).toBe(paused);
  }

  it('malformed, oversized, unknown, invalid, duplicate, out-of-order, misfit', async () => {
    const { server, client } = await connected();
    server.startCall('c1', participants);
    const d1 = server.pause('c1');
    const d2 = server.resume('c1');
    await next(client, 'fact', (_f, seq) => seq === d2.seq);
    const stale = spy(client, 'stale');

    await expectRejected(server, client, () => server.sendRaw('{"v":1, "type": "delta", '), 'bad-json');
    await expectRejected(server, client, () => server.sendRaw(JSON.stringify({ v: 1, type: 'heartbeat', seq: 0, at: 0, pad: 'x'.repeat(MAX_MESSAGE_BYTES) })), 'too-large');
    await expectRejected(server, client, () => server.sendRaw(JSON.stringify({ v: 1, type: 'consent.assumed', seq: 9 })), 'unknown-type');
    await expectRejected(server, client, () => server.sendRaw(JSON.stringify({ v: 2, type: 'delta' })), 'bad-version');
    await expectRejected(server, client, () => server.sendRaw(JSON.stringify({ ...d1, seq: server.seq + 1, fact: { type: 'call.paused', callId: 'c 1' } })), 'invalid-message');
    await expectRejected(server, client, () => server.sendDuplicate(d2), 'duplicate');
    await expectRejected(server, client, () => server.sendDuplicate(d1), 'duplicate'); // late: would re-pause
    expect(client.state.call('c1')?.paused).toBe(false);

    // A well-formed, in-sequence fact that does not fit the state: refused, seq consumed, no gap.
    const misfit = { v: 1, type: 'delta', seq: server.seq + 1, at: Date.now(), fact: { type: 'call.paused', callId: 'ghost' } };
    const reply = next(server, 'worker-error');
    server.sendRaw(JSON.stringify(misfit));
    server.skipSeq(); // keep the server's counter in step with what it "sent"
    expect((await reply)[0]).toMatchObject({ code: 'unknown-call', ref: String(misfit.seq) });
    const after = next(client, 'fact');
    server.pause('c1');
    await after;
    expect(client.state.call('c1')?.paused).toBe(true);
    expect(stale.calls).toBe(0);
  });

  it('answers bad worker frames with an error too', async () => {
    const server = await startServer();
    const nonce = createNonce();
    const ws = new WebSocket(server.url, { headers: { authorization: `Bearer ${createWorkerToken(SECRET, 'worker-1', nonce)}`, [NONCE_HEADER]: nonce } });
    cleanups.push(() => ws.terminate());
    const errors: string[] = [];
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; code?: string };
      if (m.type === 'error') errors.push(m.code!);
    });
    await new Promise((r) => ws.once('open', r));
    ws.send('nonsense');
    ws.send(JSON.stringify({ v: 1, type: 'recording-state', callId: 'c1', recording: true, reasons: ['paused'], at: 1 }));
    await sleep(100);
    expect(errors).toEqual(['bad-json', 'invalid-message']);
  });
});

describe('fail closed', () => {
  it('a sequence gap makes the state stale until the next snapshot', async () => {
    const { server, client } = await connected();
    server.setSchedule('agent-1', [{ start: Date.now() - 1, end: Date.now() + 60_000 }], 5);
    server.startCall('c1', participants);
    server.grantConsent('c1', 'p-cust', evidence());
    await next(client, 'fact', (f) => f.type === 'consent.granted');
    expect(decideGate(client.state, 'c1', Date.now()).open).toBe(true);

    const stale = next(client, 'stale');
    const gapReply = next(server, 'worker-error', (e) => e.code === 'seq-gap');
    server.skipSeq();
    server.pause('c1'); // arrives as seq + 2
    expect(await stale).toEqual(['seq-gap']);
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toContain('control-stale');
    await gapReply;
    await next(client, 'fresh');
    // The fact behind the gap arrives with the snapshot.
    expect(client.state.call('c1')?.paused).toBe(true);
    expect(client.lastSeq).toBe(server.seq);
  });

  it('a lost trailing delta is revealed by the next heartbeat', async () => {
    const { server, client } = await connected();
    const stale = next(client, 'stale', undefined, HEARTBEAT_MS * 4);
    server.skipSeq(); // nothing else is sent: only the heartbeat's seq tells
    expect(await stale).toEqual(['seq-gap']);
  });

  it('missed heartbeats make the state stale within the timeout', async () => {
    const { server, client } = await connected();
    const timeout = 3 * HEARTBEAT_MS;
    const t0 = performance.now();
    server.stopHeartbeats();
    const [reason] = await next(client, 'stale');
    const elapsed = performance.now() - t0;
    expect(reason).toBe('heartbeat-missed');
    // Silence is counted from the last heartbeat, which came at most one interval before we stopped them.
    expect(elapsed).toBeGreaterThanOrEqual(timeout - HEARTBEAT_MS - 5);
    expect(elapsed).toBeLessThan(timeout + 120); // timer slack on a loaded 2-core machine
    console.log(`control: stale ${elapsed.toFixed(0)} ms after heartbeats stopped (timeout ${timeout} ms)`);
    server.startHeartbeats();
    await next(client, 'fresh');
  });

  it('a closed socket makes the state stale; the client reconnects and is fresh after the snapshot', async () => {
    const { server, client } = await connected();
    server.startCall('c1', participants);
    await next(client, 'fact');
    const stale = next(client, 'stale');
    const fresh = next(client, 'fresh');
    const reconnected = next(server, 'connection');
    server.dropConnections();
    expect(await stale).toEqual(['socket-closed']);
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toContain('control-stale');
    await reconnected;
    await fresh;
    expect(client.state.call('c1')).toBeDefined();
  });

  it('reconnects with exponential backoff, bounded', async () => {
    // A TCP server that accepts and immediately drops every connection.
    const attempts: number[] = [];
    const tcp: NetServer = createNetServer((socket) => {
      attempts.push(performance.now());
      socket.destroy();
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => tcp.close(r)));
    const port = (tcp.address() as { port: number }).port;
    // random() = 1 makes the full-jitter delay its upper bound: 20, 40, 80, 160, 160, ...
    const client = startClient(`ws://127.0.0.1:${port}`, { backoff: { minMs: 20, maxMs: 160 }, random: () => 0.999 });
    await sleep(900);
    client.close();
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    expect(gaps.length).toBeGreaterThanOrEqual(4);
    const expected = [20, 40, 80, 160, 160, 160];
    gaps.slice(0, 5).forEach((g, i) => {
      expect(g).toBeGreaterThanOrEqual(expected[i]! - 2);
      expect(g).toBeLessThan(expected[i]! + 60);
    });
    expect(client.fresh).toBe(false);
  });

  it('an unreachable server leaves every gate closed', async () => {
    const server = await startServer();
    const url = server.url;
    await server.close();
    const client = startClient(url);
    await sleep(200);
    expect(client.fresh).toBe(false);
    expect(decideGate(client.state, 'c1', Date.now()).reasons).toEqual(['control-stale', 'unknown-call']);
  });
});

describe('recording state (R7)', () => {
  it('reports reach the server, are dropped while disconnected, and the last one is resent after reconnect', async () => {
    const { server, client } = await connected();
    server.startCall('c1', participants);
    await next(client, 'fact');
    const got = next(server, 'recording-state');
    client.reportRecordingState({ callId: 'c1', recording: false, reasons: ['no-consent'], at: Date.now() });
    const [state, workerId] = await got;
    expect(workerId).toBe('worker-1');
    expect(state).toMatchObject({ callId: 'c1', recording: false, reasons: ['no-consent'] });
    expect(server.lastRecordingState('c1')?.reasons).toEqual(['no-consent']);

    const stale = next(client, 'stale');
    server.dropConnections();
    await stale;
    const received = spy(server, 'recording-state');
    client.reportRecordingState({ callId: 'c1', recording: true, reasons: [], at: Date.now(), recordingId: 'r_0123456789abcdef' });
    await sleep(5);
    expect(received.calls).toBe(0); // dropped while disconnected...
    const resent = next(server, 'recording-state');
    await next(client, 'fresh');
    expect((await resent)[0]).toMatchObject({ callId: 'c1', recording: true, recordingId: 'r_0123456789abcdef' }); // ...resent after
  });

  it('refuses an invalid report (a recorder bug) with a clear error', async () => {
    const { client } = await connected();
    expect(() => client.reportRecordingState({ callId: 'c1', recording: false, reasons: [], at: Date.now() })).toThrow(/recording=false needs at least one/);
  });
});

describe('lifecycle', () => {
  it('close() is idempotent on both sides; a listener that throws does not stop the others', async () => {
    const { server, client } = await connected();
    const seen: string[] = [];
    client.on('change', () => {
      throw new Error('boom');
    });
    client.on('change', (id) => seen.push(id));
    const errors = { calls: 0 };
    client.on('listenererror', () => errors.calls++);
    server.startCall('c1', participants);
    await next(client, 'fact');
    expect(seen).toContain('c1');
    expect(errors.calls).toBeGreaterThan(0);
    client.close();
    client.close();
    expect(client.phase).toBe('closed');
    expect(client.fresh).toBe(false);
    await Promise.all([server.close(), server.close()]);
  });
});
