/**
 * A small SIP user-agent client for tests: it plays the Session Recording Client (an SBC) against
 * our recording server over UDP or TCP. It builds requests by hand (so tests control every header
 * and can break them), retransmits INVITEs and non-INVITE requests over UDP like RFC 3261 Timers A
 * and E, ACKs 2xx unless told not to, answers the server's BYE, and records everything received.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { parseMessage, DEFAULT_SIP_LIMITS } from '../../src/sip/parseMessage.ts';
import { StreamFramer } from '../../src/sip/StreamFramer.ts';
import { SipHeaders, makeResponseMessage, serializeMessage, type SipMessage, type SipRequest, type SipResponse } from '../../src/sip/SipMessage.ts';
import { listValues, parseNameAddr } from '../../src/sip/headerValues.ts';
import { tagOf } from '../../src/sip/responses.ts';

export type UacTransport = 'udp' | 'tcp' | 'tls';

export interface Received {
  readonly message: SipMessage;
  readonly at: number;
}

export interface RequestSpec {
  readonly method: string;
  readonly uri?: string;
  readonly callId: string;
  readonly fromTag: string;
  readonly toTag?: string | undefined;
  readonly cseq: number;
  readonly branch?: string;
  readonly headers?: readonly (readonly [string, string])[];
  readonly body?: string | Buffer;
  readonly contentType?: string;
  /** Route headers (in-dialog requests). */
  readonly route?: readonly string[];
}

const T1 = 100;

export class SipUac {
  readonly transport: UacTransport;
  readonly server: { host: string; port: number };
  readonly received: Received[] = [];
  readonly #udp: dgram.Socket | undefined;
  readonly #tcp: net.Socket | undefined;
  #waiters: { pred: (m: SipMessage) => boolean; resolve: (m: SipMessage) => void }[] = [];
  /** Answer requests from the server (BYE) with 200 automatically. */
  autoAnswer = true;

  private constructor(transport: UacTransport, server: { host: string; port: number }, udp?: dgram.Socket, tcp?: net.Socket) {
    this.transport = transport;
    this.server = server;
    this.#udp = udp;
    this.#tcp = tcp;
  }

  static async open(transport: UacTransport, server: { host: string; port: number }): Promise<SipUac> {
    if (transport === 'udp') {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      const uac = new SipUac('udp', server, sock);
      sock.on('message', (data) => uac.#onData(data));
      return uac;
    }
    // TLS: tests use a self-signed certificate, so the server is not verified here.
    const sock = transport === 'tls' ? tls.connect({ host: server.host, port: server.port, rejectUnauthorized: false }) : net.connect({ host: server.host, port: server.port });
    await new Promise<void>((resolve, reject) => {
      sock.once(transport === 'tls' ? 'secureConnect' : 'connect', () => resolve());
      sock.once('error', reject);
    });
    sock.on('error', () => undefined);
    const uac = new SipUac(transport, server, undefined, sock);
    const framer = new StreamFramer({ ...DEFAULT_SIP_LIMITS, maxMessageBytes: 1 << 20 });
    sock.on('data', (chunk: Buffer) => {
      for (const out of framer.push(chunk)) if (out.type === 'message') uac.#onData(out.data);
    });
    return uac;
  }

  get localPort(): number {
    if (this.#udp) return this.#udp.address().port;
    return this.#tcp!.localPort ?? 0;
  }

  get viaTransport(): string {
    return this.transport.toUpperCase();
  }

  get contact(): string {
    return `<sip:src@127.0.0.1:${this.localPort}${this.transport === 'udp' ? '' : `;transport=${this.transport}`}>;+sip.src`;
  }

  #onData(data: Buffer): void {
    const r = parseMessage(data, { ...DEFAULT_SIP_LIMITS, maxMessageBytes: 1 << 20 });
    if (!r.ok) return;
    const m = r.message;
    this.received.push({ message: m, at: performance.now() });
    if (m.kind === 'request' && this.autoAnswer && m.method !== 'ACK') {
      const h = new SipHeaders();
      for (const v of m.headers.getAll('via')) h.append('Via', v);
      h.append('From', m.headers.get('from') ?? '');
      h.append('To', m.headers.get('to') ?? '');
      h.append('Call-ID', m.headers.get('call-id') ?? '');
      h.append('CSeq', m.headers.get('cseq') ?? '');
      this.sendRaw(serializeMessage(makeResponseMessage(200, 'OK', h)));
    }
    const still: { pred: (m: SipMessage) => boolean; resolve: (m: SipMessage) => void }[] = [];
    for (const w of this.#waiters) {
      if (w.pred(m)) w.resolve(m);
      else still.push(w);
    }
    this.#waiters = still;
  }

  sendRaw(data: Buffer | string): void {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (this.#udp) this.#udp.send(buf, this.server.port, this.server.host);
    else this.#tcp!.write(buf);
  }

  /** Resolves with the first message (received from now on, or already when `past`) matching `pred`. */
  waitFor(pred: (m: SipMessage) => boolean, timeoutMs = 3000, past = false): Promise<SipMessage> {
    if (past) {
      const found = this.received.find((r) => pred(r.message));
      if (found) return Promise.resolve(found.message);
    }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (m: SipMessage) => (clearTimeout(timer), resolve(m)) };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(new Error(`no matching SIP message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  build(spec: RequestSpec): SipRequest {
    const branch = spec.branch ?? 'z9hG4bK' + randomBytes(8).toString('hex');
    const uri = spec.uri ?? `sip:srs@${this.server.host}:${this.server.port}`;
    const h = new SipHeaders();
    h.append('Via', `SIP/2.0/${this.viaTransport} 127.0.0.1:${this.localPort};branch=${branch};rport`);
    h.append('Max-Forwards', '70');
    for (const r of spec.route ?? []) h.append('Route', r);
    h.append('From', `"Src" <sip:src@127.0.0.1>;tag=${spec.fromTag}`);
    h.append('To', `<${uri}>${spec.toTag ? `;tag=${spec.toTag}` : ''}`);
    h.append('Call-ID', spec.callId);
    h.append('CSeq', `${spec.cseq} ${spec.method}`);
    h.append('Contact', this.contact);
    for (const [n, v] of spec.headers ?? []) h.append(n, v);
    const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body);
    if (body.length > 0 && spec.contentType) h.append('Content-Type', spec.contentType);
    return { kind: 'request', method: spec.method, uri, headers: h, body };
  }

  /**
   * Sends a request and resolves with its final response. Over UDP it retransmits (INVITE until
   * any response, Timer A; others until the final response, Timer E), as an SBC would.
   */
  async request(req: SipRequest, timeoutMs = 5000): Promise<SipResponse> {
    const bytes = serializeMessage(req);
    const branch = /branch=([^;]+)/.exec(req.headers.get('via') ?? '')?.[1];
    const cseq = req.headers.get('cseq');
    const isFinal = (m: SipMessage): m is SipResponse =>
      m.kind === 'response' && m.status >= 200 && m.headers.get('cseq') === cseq && (m.headers.get('via') ?? '').includes(`branch=${branch}`);
    const anyResponse = (m: SipMessage) => m.kind === 'response' && m.headers.get('cseq') === cseq && (m.headers.get('via') ?? '').includes(`branch=${branch}`);
    const final = this.waitFor(isFinal, timeoutMs) as Promise<SipResponse>;
    this.sendRaw(bytes);
    if (this.transport === 'udp') {
      let stop = false;
      const stopOn = req.method === 'INVITE' ? anyResponse : isFinal;
      void this.waitFor(stopOn, timeoutMs).then(
        () => (stop = true),
        () => (stop = true),
      );
      void (async () => {
        for (let interval = T1; !stop; interval = Math.min(interval * 2, 4000)) {
          await new Promise((r) => setTimeout(r, interval));
          if (!stop) this.sendRaw(bytes);
        }
      })();
    }
    return final;
  }

  /** The ACK for a 2xx: its own transaction (§13.2.2.4), to the Contact, with the route set. */
  ack(dialog: UacDialog, cseq: number): void {
    const req = this.build({ method: 'ACK', uri: dialog.remoteTarget, callId: dialog.callId, fromTag: dialog.fromTag, toTag: dialog.toTag, cseq, route: dialog.routeSet });
    this.sendRaw(serializeMessage(req));
  }

  /** The ACK for a non-2xx final response: same branch as the INVITE (§17.1.1.3). */
  ackFailure(invite: SipRequest, res: SipResponse): void {
    const h = new SipHeaders();
    h.append('Via', invite.headers.get('via') ?? '');
    h.append('Max-Forwards', '70');
    h.append('From', invite.headers.get('from') ?? '');
    h.append('To', res.headers.get('to') ?? '');
    h.append('Call-ID', invite.headers.get('call-id') ?? '');
    h.append('CSeq', `${(invite.headers.get('cseq') ?? '1').split(' ')[0]} ACK`);
    this.sendRaw(serializeMessage({ kind: 'request', method: 'ACK', uri: invite.uri, headers: h, body: Buffer.alloc(0) }));
  }

  /** Sends an INVITE, waits for the final response; ACKs a 2xx unless `ack: false`. */
  async invite(opts: { body: string | Buffer; contentType: string; headers?: readonly (readonly [string, string])[]; uri?: string; ack?: boolean; callId?: string }): Promise<{ response: SipResponse; dialog: UacDialog | undefined; request: SipRequest }> {
    const callId = opts.callId ?? randomBytes(8).toString('hex') + '@src.test';
    const fromTag = randomBytes(4).toString('hex');
    const request = this.build({ method: 'INVITE', uri: opts.uri, callId, fromTag, cseq: 1, headers: opts.headers, body: opts.body, contentType: opts.contentType });
    const response = await this.request(request);
    if (response.status >= 300) {
      this.ackFailure(request, response);
      return { response, dialog: undefined, request };
    }
    const toTag = tagOf(response.headers.get('to')) ?? '';
    const contact = parseNameAddr(listValues(response.headers.getAll('contact'))[0] ?? '');
    const dialog = new UacDialog(this, callId, fromTag, toTag, contact?.uri ?? request.uri, listValues(response.headers.getAll('record-route')).reverse());
    if (opts.ack !== false) this.ack(dialog, 1);
    return { response, dialog, request };
  }

  async close(): Promise<void> {
    this.#udp?.close();
    this.#tcp?.destroy();
  }
}

export class UacDialog {
  cseq = 1;
  constructor(
    readonly uac: SipUac,
    readonly callId: string,
    readonly fromTag: string,
    readonly toTag: string,
    readonly remoteTarget: string,
    readonly routeSet: readonly string[],
  ) {}

  async send(method: string, opts: { body?: string | Buffer; contentType?: string; headers?: readonly (readonly [string, string])[] } = {}): Promise<SipResponse> {
    this.cseq++;
    const req = this.uac.build({ method, uri: this.remoteTarget, callId: this.callId, fromTag: this.fromTag, toTag: this.toTag, cseq: this.cseq, route: this.routeSet, ...opts });
    const res = await this.uac.request(req);
    if (method === 'INVITE' && res.status >= 200 && res.status < 300) this.uac.ack(this, this.cseq);
    return res;
  }

  reinvite(body: string | Buffer, contentType: string): Promise<SipResponse> {
    return this.send('INVITE', { body, contentType });
  }

  update(body: string | Buffer, contentType: string): Promise<SipResponse> {
    return this.send('UPDATE', { body, contentType });
  }

  bye(): Promise<SipResponse> {
    return this.send('BYE');
  }
}
