/**
 * The user-agent server core (RFC 3261 §8.2, §12, §13.3, §14.2, §15.1.2): transports and
 * transactions below, one handler above (the recording server). It answers on its own what needs
 * no application: OPTIONS (200 only while the handler says it is ready, no body parsing at all on
 * that path), CANCEL (§9.2), BYE, INFO, ACK, unknown and unsupported methods, requests outside any
 * dialog, option tags it does not support (420), malformed messages (400 naming the problem when
 * there is enough to answer, silence otherwise). It hands the handler initial INVITEs (with an
 * AbortSignal a CANCEL fires) and, through the session object the handler returns, re-INVITEs,
 * UPDATEs and the end of the session.
 *
 * Bounded: dialogs (`maxDialogs`; past it, 503 + Retry-After before the handler sees anything),
 * transactions in all and per source (transactions.ts), message sizes (parseMessage.ts),
 * connections (SipTransport.ts).
 */
import net from 'node:net';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { OptinError } from '../errors/OptinError.ts';
import { Dialog, dialogKey, logIdOf, type SessionEndReason } from './Dialog.ts';
import { listValues, optionTags, parseCSeq, parseNameAddr, parseUri, bareHost } from './headerValues.ts';
import type { ParseResult, SipLimits } from './parseMessage.ts';
import { buildResponse, newTag, safeReason, tagOf } from './responses.ts';
import { SipHeaders, makeRequest, serializeMessage, type SipRequest, type SipResponse } from './SipMessage.ts';
import { SipTransport, type Peer, type TransportName } from './SipTransport.ts';
import { TimerQueue } from './TimerQueue.ts';
import { TransactionLayer, newBranch, type ServerTransaction, type SipTimers } from './transactions.ts';

export interface SipAnswer {
  readonly status: number;
  readonly reason?: string | undefined;
  readonly headers?: readonly (readonly [string, string])[] | undefined;
  readonly body?: Buffer | undefined;
  readonly contentType?: string | undefined;
  /** Feature parameters for our Contact in a 2xx (e.g. `+sip.srs`, RFC 7866 §6.1.1). */
  readonly contactParams?: string | undefined;
}

export interface InviteAccept<S> extends SipAnswer {
  readonly session: S;
}

export interface InviteContext {
  readonly request: SipRequest;
  readonly peer: Peer;
  /** Fires when a CANCEL arrived before the final response (the 487 is already sent). */
  readonly signal: AbortSignal;
  /** Pseudonym of the Call-ID for logs. */
  readonly logId: string;
}

/** What the handler gives back for an accepted INVITE: the in-dialog requests go to it. */
export interface UasSession {
  reinvite(req: SipRequest): Promise<SipAnswer>;
  update(req: SipRequest): Promise<SipAnswer>;
  /** The dialog is over (BYE received, ACK never came, CANCEL raced the answer, shutdown...). */
  ended(reason: SessionEndReason): void;
}

export interface UasHandler<S extends UasSession> {
  /** OPTIONS is answered 200 only while this says true. Must be cheap: no parsing, no I/O. */
  ready(): boolean;
  invite(ctx: InviteContext): Promise<SipAnswer | InviteAccept<S>>;
}

export interface SipServerOptions {
  readonly bindAddress: string;
  /** The host put in our Contact and Via: what the SBC can reach (defaults to bindAddress). */
  readonly advertisedHost?: string | undefined;
  readonly udpPort?: number | undefined;
  readonly tcpPort?: number | undefined;
  readonly tlsPort?: number | undefined;
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly ca?: string | Buffer | undefined } | undefined;
  readonly limits: SipLimits;
  readonly timers: SipTimers;
  readonly maxDialogs: number;
  readonly maxTransactions: number;
  readonly maxTransactionsPerSource: number;
  readonly maxConnections: number;
  readonly connectionIdleMs: number;
  /** How long the handler may take to answer an INVITE before we answer 500 ourselves. */
  readonly handlerTimeoutMs: number;
  /** Retry-After seconds on 503 (over the dialog ceiling, not ready). */
  readonly retryAfterSeconds: number;
  /** Option tags we support (a Require naming another gets 420, §8.2.2.3). */
  readonly supported: readonly string[];
  /** Body types we accept (415 otherwise, §8.2.3). */
  readonly accept: readonly string[];
  readonly userAgent?: string | undefined;
}

export type InviteOutcome = 'accepted' | 'rejected' | 'busy' | 'cancelled' | 'error' | 'timeout';

export type SipServerEvents = {
  /** Initial INVITE outcomes, by class (bounded labels for metrics). */
  invite: [outcome: InviteOutcome, status: number];
  reinvite: [status: number];
  dialogs: [count: number];
  /** A request we did not process: limit, malformed, unknown... (bounded reasons). */
  dropped: [why: string];
  malformed: [reason: string, answered: boolean];
  request: [method: string];
  ended: [reason: SessionEndReason];
};

export const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO';
/** Methods of RFC 3261 and its extensions that we recognise but do not support: 405 (§8.2.1). */
const KNOWN_UNSUPPORTED = new Set(['REGISTER', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'REFER', 'MESSAGE', 'PUBLISH']);

export class SipServer<S extends UasSession> extends TypedEmitter<SipServerEvents> {
  readonly #opts: SipServerOptions;
  readonly #handler: UasHandler<S>;
  readonly transport: SipTransport;
  readonly #queue = new TimerQueue();
  readonly #tx: TransactionLayer;
  readonly #dialogs = new Map<string, Dialog<S>>();
  /** INVITEs handed to the handler and not yet answered, by transaction key. */
  readonly #pendingInvites = new Map<string, AbortController>();
  /** Call-ID + From tag of pending INVITEs and live dialogs: a second INVITE for them is a merged request (§8.2.2.2). */
  readonly #origins = new Map<string, number>();
  #closed = false;

  constructor(opts: SipServerOptions, handler: UasHandler<S>) {
    super();
    this.#opts = opts;
    this.#handler = handler;
    this.transport = new SipTransport({
      bindAddress: opts.bindAddress,
      udpPort: opts.udpPort,
      tcpPort: opts.tcpPort,
      tlsPort: opts.tlsPort,
      tls: opts.tls,
      limits: opts.limits,
      maxConnections: opts.maxConnections,
      idleTimeoutMs: opts.connectionIdleMs,
    });
    this.#tx = new TransactionLayer(this.transport, this.#queue, {
      timers: opts.timers,
      maxTransactions: opts.maxTransactions,
      maxPerSource: opts.maxTransactionsPerSource,
    });
    this.transport.on('message', (msg, peer) => {
      if (msg.kind === 'response') this.#tx.receiveResponse(msg, peer);
      else this.#onRequest(msg, peer);
    });
    this.transport.on('malformed', (failure, peer) => this.#onMalformed(failure, peer));
    this.transport.on('streamerror', () => this.safeEmit('malformed', 'stream-framing', false));
  }

  async listen(): Promise<void> {
    await this.transport.listen();
  }

  ports(): { udp?: number; tcp?: number; tls?: number } {
    return this.transport.ports();
  }

  get dialogCount(): number {
    return this.#dialogs.size;
  }

  get transactionCount(): number {
    return this.#tx.serverCount + this.#tx.clientCount;
  }

  get pendingInviteCount(): number {
    return this.#pendingInvites.size;
  }

  /** Sessions of live dialogs (for draining and tests). */
  sessions(): S[] {
    return [...this.#dialogs.values()].map((d) => d.session);
  }

  // --- incoming requests ---------------------------------------------------------------------

  #onRequest(req: SipRequest, peer: Peer): void {
    if (this.#closed) return;
    const outcome = this.#tx.receive(req, peer);
    if (outcome.type === 'dropped') {
      this.safeEmit('dropped', outcome.why);
      return;
    }
    if (outcome.type === 'retransmission' || outcome.type === 'ack-absorbed') return;
    if (outcome.type === 'ack-for-dialog') {
      this.#onAck(req);
      return;
    }
    const tx = outcome.tx;
    this.safeEmit('request', KNOWN_UNSUPPORTED.has(req.method) || ALLOW.includes(req.method) ? req.method : 'other');
    try {
      this.#dispatch(req, tx);
    } catch {
      // A bug in a handler must cost one request a 500, never the server.
      this.#respond(tx, 500);
    }
  }

  #dispatch(req: SipRequest, tx: ServerTransaction): void {
    const method = req.method;
    if (method === 'CANCEL') return this.#onCancel(req, tx);
    if (method === 'OPTIONS') return this.#onOptions(req, tx);
    // §8.2.2.3: an extension we do not support in Require → 420 listing it.
    const unsupported = optionTags(req.headers.getAll('require')).filter((t) => !this.#opts.supported.includes(t));
    if (unsupported.length > 0) return this.#respond(tx, 420, { headers: [['Unsupported', unsupported.join(', ')]] });

    const toTag = tagOf(req.headers.get('to'));
    if (toTag !== undefined) return this.#inDialog(req, tx, toTag);

    if (method === 'INVITE') return void this.#onInitialInvite(req, tx);
    if (method === 'BYE' || method === 'UPDATE' || method === 'INFO') return this.#respond(tx, 481);
    return this.#methodNotHandled(tx, method);
  }

  #hold(origin: string): void {
    this.#origins.set(origin, (this.#origins.get(origin) ?? 0) + 1);
  }

  #release(origin: string): void {
    const n = (this.#origins.get(origin) ?? 1) - 1;
    if (n <= 0) this.#origins.delete(origin);
    else this.#origins.set(origin, n);
  }

  #methodNotHandled(tx: ServerTransaction, method: string): void {
    if (KNOWN_UNSUPPORTED.has(method)) this.#respond(tx, 405, { headers: [['Allow', ALLOW]] });
    else this.#respond(tx, 501, { headers: [['Allow', ALLOW]] });
  }

  #onOptions(req: SipRequest, tx: ServerTransaction): void {
    // Deliberately nothing but the readiness callback: a flood of pings must stay cheap.
    if (!this.#handler.ready()) {
      this.#respond(tx, 503, { headers: [['Retry-After', String(this.#opts.retryAfterSeconds)]] });
      return;
    }
    this.#respond(tx, 200, {
      toTag: tagOf(req.headers.get('to')) === undefined ? newTag() : undefined,
      headers: [
        ['Allow', ALLOW],
        ['Accept', this.#opts.accept.join(', ')],
        ['Supported', this.#opts.supported.join(', ')],
      ],
    });
  }

  #onCancel(req: SipRequest, tx: ServerTransaction): void {
    const invite = this.#tx.findInviteFor(req);
    if (!invite) return this.#respond(tx, 481);
    this.#respond(tx, 200, { toTag: tagOf(req.headers.get('to')) });
    if (invite.hasFinal) return; // §9.2: a CANCEL after the final response has no effect
    const ctrl = this.#pendingInvites.get(invite.key);
    this.#pendingInvites.delete(invite.key);
    this.#respond(invite, 487, { toTag: newTag() });
    this.safeEmit('invite', 'cancelled', 487);
    ctrl?.abort();
  }

  async #onInitialInvite(req: SipRequest, tx: ServerTransaction): Promise<void> {
    // §17.2.1: 100 Trying at once, so the SBC's Timer A stops retransmitting.
    this.#respond(tx, 100);
    if (this.#dialogs.size + this.#pendingInvites.size >= this.#opts.maxDialogs) {
      this.#respond(tx, 503, { reason: 'Dialog limit reached', headers: [['Retry-After', String(this.#opts.retryAfterSeconds)]] });
      this.safeEmit('dropped', 'dialog-limit');
      this.safeEmit('invite', 'busy', 503);
      return;
    }
    const contentType = req.headers.get('content-type');
    if (req.body.length > 0 && contentType) {
      const type = contentType.split(';')[0]!.trim().toLowerCase();
      if (!this.#opts.accept.includes(type)) {
        this.#respond(tx, 415, { headers: [['Accept', this.#opts.accept.join(', ')]] });
        this.safeEmit('invite', 'rejected', 415);
        return;
      }
    }
    const callId = req.headers.get('call-id') ?? '';
    const from = req.headers.get('from') ?? '';
    const remoteTag = tagOf(from);
    // §8.2.2.2: the same INVITE arriving by another path (a new branch) must not open a second session.
    const origin = `${callId}\n${remoteTag ?? ''}`;
    if (this.#origins.has(origin)) {
      this.#respond(tx, 482);
      this.safeEmit('invite', 'rejected', 482);
      return;
    }
    this.#hold(origin);
    const ctrl = new AbortController();
    this.#pendingInvites.set(tx.key, ctrl);
    let answer: SipAnswer | InviteAccept<S>;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const handled = this.#handler.invite({ request: req, peer: tx.peer, signal: ctrl.signal, logId: logIdOf(callId) });
    try {
      answer = await Promise.race([
        handled,
        new Promise<SipAnswer>((resolve) => {
          timer = setTimeout(() => {
            timedOut = true;
            resolve({ status: 500, reason: 'Recording server timed out' });
          }, this.#opts.handlerTimeoutMs);
        }),
      ]);
    } catch (err) {
      answer = { status: 500, reason: err instanceof OptinError ? err.message : 'Recording server error' };
    } finally {
      clearTimeout(timer);
    }
    if (timedOut) {
      // The handler may still finish: whatever session it opens late is closed, never leaked.
      ctrl.abort();
      handled.then(
        (late) => ('session' in late ? late.session.ended('error') : undefined),
        () => undefined,
      );
    }
    const cancelled = (ctrl.signal.aborted && !timedOut) || this.#closed;
    this.#pendingInvites.delete(tx.key);
    this.#release(origin);
    const session = 'session' in answer ? answer.session : undefined;
    if (cancelled) {
      session?.ended('cancelled');
      return;
    }
    if (answer.status < 200 || answer.status >= 300 || !session) {
      const status = answer.status >= 300 ? answer.status : 500;
      this.#respond(tx, status, { reason: answer.reason, headers: answer.headers, toTag: newTag() });
      this.safeEmit('invite', answer.status === 500 && answer.reason === 'Recording server timed out' ? 'timeout' : status === 503 ? 'busy' : status >= 500 ? 'error' : 'rejected', status);
      return;
    }
    if (remoteTag === undefined) {
      // §8.1.1.3: the From tag is mandatory; without it there is no dialog to identify.
      session.ended('error');
      this.#respond(tx, 400, { reason: 'From tag missing', toTag: newTag() });
      this.safeEmit('invite', 'rejected', 400);
      return;
    }
    const localTag = newTag();
    const contact = parseNameAddr(listValues(req.headers.getAll('contact'))[0] ?? '');
    const dialog = new Dialog<S>({
      callId,
      localTag,
      remoteTag,
      localNameAddr: `${req.headers.get('to') ?? ''};tag=${localTag}`,
      remoteNameAddr: from,
      // §12.1.1: the UAS's route set is the Record-Route list in order.
      routeSet: listValues(req.headers.getAll('record-route')),
      remoteTarget: contact?.uri ?? '',
      remoteCseq: parseCSeq(req.headers.get('cseq') ?? '')?.seq ?? 0,
      peer: tx.peer,
      session,
    });
    this.#dialogs.set(dialog.key, dialog);
    this.#hold(origin);
    this.safeEmit('dialogs', this.#dialogs.size);
    const headers: [string, string][] = [];
    // §12.1.1: the 2xx that creates the dialog copies Record-Route.
    for (const rr of req.headers.getAll('record-route')) headers.push(['Record-Route', rr]);
    headers.push(['Contact', this.#contact(tx.peer.transport, answer.contactParams)]);
    headers.push(['Allow', ALLOW], ['Supported', this.#opts.supported.join(', ')]);
    if (this.#opts.userAgent) headers.push(['Server', this.#opts.userAgent]);
    for (const h of answer.headers ?? []) headers.push([h[0], h[1]]);
    const res = buildResponse(req, answer.status, { reason: answer.reason, toTag: localTag, headers, body: answer.body, contentType: answer.contentType });
    this.#send2xx(dialog, tx, res);
    this.safeEmit('invite', 'accepted', answer.status);
  }

  #inDialog(req: SipRequest, tx: ServerTransaction, toTag: string): void {
    const callId = req.headers.get('call-id') ?? '';
    const fromTag = tagOf(req.headers.get('from')) ?? '';
    const dialog = this.#dialogs.get(dialogKey(callId, toTag, fromTag));
    if (!dialog) {
      this.safeEmit('dropped', 'no-dialog');
      return this.#respond(tx, 481);
    }
    const cseq = parseCSeq(req.headers.get('cseq') ?? '')?.seq ?? 0;
    // §12.2.2: a lower CSeq than the last one is out of order → 500.
    if (cseq < dialog.remoteCseq || (cseq === dialog.remoteCseq && req.method !== 'ACK')) return this.#respond(tx, 500, { reason: 'CSeq out of order' });
    dialog.remoteCseq = cseq;
    switch (req.method) {
      case 'BYE':
        this.#respond(tx, 200);
        this.#endDialog(dialog, 'bye');
        return;
      case 'INFO':
        // Answered so the SRC does not tear the session down; nothing in INFO matters to a recorder.
        return this.#respond(tx, 200);
      case 'INVITE':
      case 'UPDATE':
        return void this.#onTargetRefresh(req, tx, dialog);
      default:
        return this.#methodNotHandled(tx, req.method);
    }
  }

  async #onTargetRefresh(req: SipRequest, tx: ServerTransaction, dialog: Dialog<S>): Promise<void> {
    if (req.method === 'INVITE') this.#respond(tx, 100);
    // §14.2: a re-INVITE while another INVITE transaction of ours is open gets 500 + Retry-After
    // (a random value between 0 and 10 s).
    if (dialog.busy || (req.method === 'INVITE' && dialog.pendingAck)) {
      return this.#respond(tx, 500, { headers: [['Retry-After', String(Math.floor(Math.random() * 10))]] });
    }
    dialog.busy = true;
    let answer: SipAnswer;
    try {
      answer = await (req.method === 'INVITE' ? dialog.session.reinvite(req) : dialog.session.update(req));
    } catch (err) {
      answer = { status: 500, reason: err instanceof OptinError ? err.message : 'Recording server error' };
    } finally {
      dialog.busy = false;
    }
    if (dialog.state === 'terminated') return this.#respond(tx, 481);
    if (answer.status >= 200 && answer.status < 300) {
      // §12.2.2: target refresh.
      const contact = parseNameAddr(listValues(req.headers.getAll('contact'))[0] ?? '');
      if (contact) dialog.remoteTarget = contact.uri;
    }
    const headers: [string, string][] = [['Contact', this.#contact(tx.peer.transport, answer.contactParams)]];
    for (const h of answer.headers ?? []) headers.push([h[0], h[1]]);
    const res = buildResponse(req, answer.status, { reason: answer.reason, headers, body: answer.body, contentType: answer.contentType });
    this.safeEmit('reinvite', answer.status);
    if (req.method === 'INVITE' && answer.status >= 200 && answer.status < 300) this.#send2xx(dialog, tx, res);
    else tx.respond(res);
  }

  #onAck(req: SipRequest): void {
    const dialog = this.#dialogs.get(dialogKey(req.headers.get('call-id') ?? '', tagOf(req.headers.get('to')) ?? '', tagOf(req.headers.get('from')) ?? ''));
    if (!dialog?.pendingAck) return;
    const cseq = parseCSeq(req.headers.get('cseq') ?? '')?.seq;
    if (cseq !== dialog.pendingAck.cseq) return;
    dialog.pendingAck.timer?.cancel();
    dialog.pendingAck = undefined;
    if (dialog.state === 'awaiting-ack') dialog.state = 'confirmed';
  }

  /**
   * Sends a 2xx to an INVITE and retransmits it, from T1 doubling up to T2, until the ACK
   * (§13.3.1.4). No ACK within 64*T1: the dialog is confirmed but the session ends with a BYE.
   */
  #send2xx(dialog: Dialog<S>, tx: ServerTransaction, res: SipResponse): void {
    tx.respond(res);
    const bytes = serializeMessage(res);
    const cseq = parseCSeq(res.headers.get('cseq') ?? '')?.seq ?? 0;
    const peer = this.#tx.responsePeer(tx);
    const { t1, t2 } = this.#opts.timers;
    const deadline = performance.now() + 64 * t1;
    dialog.pendingAck = { cseq, timer: undefined };
    const pending = dialog.pendingAck;
    const step = (interval: number) => {
      pending.timer = this.#queue.after(interval, () => {
        if (dialog.pendingAck !== pending || dialog.state === 'terminated') return;
        if (performance.now() >= deadline) {
          dialog.pendingAck = undefined;
          if (dialog.state === 'awaiting-ack') dialog.state = 'confirmed';
          void this.#bye(dialog);
          this.#endDialog(dialog, 'ack-timeout');
          return;
        }
        this.transport.send(bytes, peer);
        step(Math.min(2 * interval, t2));
      });
    };
    step(t1);
  }

  #endDialog(dialog: Dialog<S>, reason: SessionEndReason): void {
    if (dialog.state === 'terminated') return;
    dialog.state = 'terminated';
    dialog.pendingAck?.timer?.cancel();
    dialog.pendingAck = undefined;
    this.#dialogs.delete(dialog.key);
    this.#release(`${dialog.callId}\n${dialog.remoteTag}`);
    this.safeEmit('dialogs', this.#dialogs.size);
    this.safeEmit('ended', reason);
    try {
      dialog.session.ended(reason);
    } catch {
      // The session's clean-up failing must not keep the dialog around.
    }
  }

  /**
   * Ends a session from our side (media timeout, drain): BYE to the SRC, dialog closed at once
   * (we do not wait for the 200: the session is over for us either way).
   */
  terminate(session: S, reason: SessionEndReason): void {
    for (const d of this.#dialogs.values()) {
      if (d.session !== session) continue;
      void this.#bye(d);
      this.#endDialog(d, reason);
      return;
    }
  }

  /** Sends a BYE in the dialog (§15.1.1) along its route set (§12.2.1.1, loose routing). */
  async #bye(dialog: Dialog<S>): Promise<SipResponse | undefined> {
    const route = dialog.routeSet;
    const firstRoute = route[0] === undefined ? undefined : parseNameAddr(route[0]);
    const next = parseUri(firstRoute?.uri ?? dialog.remoteTarget);
    const transport = dialog.peer.transport;
    let peer: Peer = dialog.peer;
    if (transport === 'udp' && next && next.scheme !== 'tel') {
      const host = bareHost(next.host);
      // Only literal addresses are used; a host name falls back to where the INVITE came from.
      peer = { transport: 'udp', address: net.isIP(host) ? host : dialog.peer.address, port: next.port ?? 5060 };
    }
    dialog.localCseq = dialog.localCseq === 0 ? 1 : dialog.localCseq + 1;
    const h = new SipHeaders();
    h.append('Via', `SIP/2.0/${transport.toUpperCase()} ${this.#advertisedHostPort(transport)};branch=${newBranch()};rport`);
    h.append('Max-Forwards', '70');
    for (const r of route) h.append('Route', r);
    h.append('From', dialog.localNameAddr);
    h.append('To', dialog.remoteNameAddr);
    h.append('Call-ID', dialog.callId);
    h.append('CSeq', `${dialog.localCseq} BYE`);
    if (this.#opts.userAgent) h.append('User-Agent', this.#opts.userAgent);
    const uri = dialog.remoteTarget || (firstRoute?.uri ?? '');
    return this.#tx.request(makeRequest('BYE', uri, h), peer);
  }

  #advertisedHostPort(transport: TransportName): string {
    const host = this.#opts.advertisedHost ?? this.#opts.bindAddress;
    const shown = net.isIPv6(host) ? `[${host}]` : host;
    const ports = this.transport.ports();
    const port = ports[transport] ?? ports.udp ?? 5060;
    return `${shown}:${port}`;
  }

  #contact(transport: TransportName, params?: string): string {
    const t = transport === 'udp' ? '' : `;transport=${transport === 'tls' ? 'tls' : 'tcp'}`;
    return `<sip:srs@${this.#advertisedHostPort(transport)}${t}>${params ? `;${params}` : ''}`;
  }

  #respond(tx: ServerTransaction, status: number, opts: { reason?: string | undefined; toTag?: string | undefined; headers?: readonly (readonly [string, string])[] | undefined } = {}): void {
    tx.respond(buildResponse(tx.request, status, { toTag: opts.toTag ?? (status > 100 ? newTag() : undefined), reason: opts.reason, headers: opts.headers }));
  }

  #onMalformed(failure: Extract<ParseResult, { ok: false }>, peer: Peer): void {
    const req = failure.request;
    // Never answer an ACK (§17), and answer only what we could identify.
    if (!req || req.method === 'ACK' || this.#closed) {
      this.safeEmit('malformed', failure.reason, false);
      return;
    }
    const status = failure.status ?? 400;
    const res = buildResponse(req, status, { reason: safeReason(`${status === 400 ? 'Bad Request' : status === 513 ? 'Message Too Large' : 'Version Not Supported'}: ${failure.detail}`), toTag: newTag() });
    // Through the transaction layer so a retransmitted bad request is answered once per copy but counted once.
    const outcome = this.#tx.receive(req, peer);
    if (outcome.type === 'new') outcome.tx.respond(res);
    this.safeEmit('malformed', failure.reason, outcome.type === 'new' || outcome.type === 'retransmission');
  }

  /** Ends every dialog (BYE to each SRC when `bye`), stops listening. */
  async close(opts: { bye?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const ctrl of this.#pendingInvites.values()) ctrl.abort();
    const byes: Promise<unknown>[] = [];
    for (const d of [...this.#dialogs.values()]) {
      if (opts.bye) byes.push(this.#bye(d));
      this.#endDialog(d, 'shutdown');
    }
    // Give the BYEs a moment on the wire before the sockets close.
    if (byes.length > 0) await Promise.race([Promise.allSettled(byes), new Promise((r) => setTimeout(r, 500))]);
    this.#tx.close();
    this.#queue.close();
    await this.transport.close();
  }
}

