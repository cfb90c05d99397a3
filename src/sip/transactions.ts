/**
 * The transaction layer (RFC 3261 §17) for a user-agent server that sends only BYE as a client:
 *
 * - INVITE server transactions (§17.2.1 with RFC 6026): Proceeding → (non-2xx) Completed, the final
 *   response retransmitted on Timer G over UDP until the ACK (→ Confirmed, Timer I) or Timer H;
 *   (2xx) Accepted, retransmitted INVITEs absorbed until Timer L. The 2xx itself is retransmitted
 *   by the dialog (§13.3.1.4), not here.
 * - non-INVITE server transactions (§17.2.2): the last response re-sent for every retransmitted
 *   request until Timer J.
 * - non-INVITE client transactions (§17.1.2) for BYE: Timer E retransmission over UDP, Timer F
 *   timeout, Timer K to absorb retransmitted responses. INVITE client transactions (Timers A, B,
 *   D) are not implemented: a recording server never sends an INVITE.
 *
 * Matching follows §17.2.3 (branch with the magic cookie, sent-by, method; ACK matches INVITE) and
 * §17.1.3 for responses. Every timer runs on the shared TimerQueue. Bounded: at most
 * `maxTransactions` live server transactions in all and `maxPerSource` per source address; past
 * either, new requests are dropped unanswered (answering a flood would amplify it).
 */
import { randomBytes } from 'node:crypto';
import { listValues, parseVia, parseCSeq, type Via } from './headerValues.ts';
import { serializeMessage, type SipRequest, type SipResponse } from './SipMessage.ts';
import type { Peer, SipTransport } from './SipTransport.ts';
import type { TimerHandle, TimerQueue } from './TimerQueue.ts';

export interface SipTimers {
  /** RTT estimate, §17.1.1.1 (500 ms). */
  readonly t1: number;
  /** Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s). */
  readonly t2: number;
  /** Maximum time a message stays in the network (5 s). */
  readonly t4: number;
}

export const RFC_TIMERS: SipTimers = { t1: 500, t2: 4000, t4: 5000 };

const MAGIC_COOKIE = 'z9hG4bK';

export function newBranch(): string {
  return MAGIC_COOKIE + randomBytes(12).toString('base64url');
}

export function topVia(req: SipRequest | SipResponse): Via | undefined {
  const first = listValues(req.headers.getAll('via'))[0];
  return first === undefined ? undefined : parseVia(first);
}

/** §17.2.3 server transaction key; RFC 2543 requests (no magic cookie) fall back to §17.2.3's older rule. */
export function serverTransactionKey(req: SipRequest, via: Via): string {
  const method = req.method === 'ACK' ? 'INVITE' : req.method;
  const branch = via.params.get('branch') ?? '';
  const sentBy = `${via.host.toLowerCase()}:${via.port ?? ''}`;
  if (branch.startsWith(MAGIC_COOKIE)) return `${branch}|${sentBy}|${method}`;
  const cseq = parseCSeq(req.headers.get('cseq') ?? '');
  return `2543|${req.headers.get('call-id')}|${cseq?.seq}|${method}|${sentBy}|${branch}`;
}

type InviteState = 'proceeding' | 'completed' | 'confirmed' | 'accepted' | 'terminated';
type NonInviteState = 'trying' | 'proceeding' | 'completed' | 'terminated';

export class ServerTransaction {
  readonly key: string;
  readonly request: SipRequest;
  readonly peer: Peer;
  readonly isInvite: boolean;
  state: InviteState | NonInviteState;
  /** The status of the last response sent (0 before any). */
  lastStatus = 0;
  #last: Buffer | undefined;
  #timers: TimerHandle[] = [];
  readonly #layer: TransactionLayer;

  constructor(layer: TransactionLayer, key: string, request: SipRequest, peer: Peer) {
    this.#layer = layer;
    this.key = key;
    this.request = request;
    this.peer = peer;
    this.isInvite = request.method === 'INVITE';
    this.state = this.isInvite ? 'proceeding' : 'trying';
  }

  get hasFinal(): boolean {
    return this.lastStatus >= 200;
  }

  /** Sends a response in this transaction (later finals are ignored, §17.2.1). */
  respond(res: SipResponse): void {
    if (this.state === 'terminated' || this.hasFinal) return;
    const bytes = serializeMessage(res);
    this.#last = bytes;
    this.lastStatus = res.status;
    this.#layer.sendResponseBytes(bytes, this);
    if (res.status < 200) {
      if (!this.isInvite) this.state = 'proceeding';
      return;
    }
    const { t1, t2 } = this.#layer.timers;
    const reliable = this.peer.transport !== 'udp';
    if (!this.isInvite) {
      this.state = 'completed';
      // Timer J: 64*T1 for UDP, zero for reliable transports (§17.2.2).
      this.#after(reliable ? 0 : 64 * t1, () => this.terminate());
      return;
    }
    if (res.status < 300) {
      // RFC 6026 §7.1: Accepted; Timer L = 64*T1 absorbs retransmitted INVITEs.
      this.state = 'accepted';
      this.#after(64 * t1, () => this.terminate());
      return;
    }
    this.state = 'completed';
    if (!reliable) {
      // Timer G: retransmit the final response, doubling from T1 up to T2.
      const resend = (interval: number) => {
        this.#after(interval, () => {
          if (this.state !== 'completed') return;
          this.#layer.sendResponseBytes(bytes, this);
          resend(Math.min(2 * interval, t2));
        });
      };
      resend(t1);
    }
    // Timer H: give up waiting for the ACK.
    this.#after(64 * t1, () => {
      if (this.state === 'completed') this.terminate();
    });
  }

  /** A retransmission of the request arrived: re-send the last response (§17.2.1, §17.2.2). */
  retransmitted(): void {
    // RFC 6026: in Accepted, retransmitted INVITEs are absorbed; the dialog retransmits the 2xx.
    if (this.state === 'accepted' || this.state === 'confirmed' || this.state === 'terminated') return;
    if (this.#last) this.#layer.sendResponseBytes(this.#last, this);
  }

  /** The ACK for a non-2xx final response (§17.2.1): Confirmed, then Timer I. */
  acked(): void {
    if (this.state !== 'completed') return;
    this.state = 'confirmed';
    this.#after(this.peer.transport === 'udp' ? this.#layer.timers.t4 : 0, () => this.terminate());
  }

  terminate(): void {
    if (this.state === 'terminated') return;
    this.state = 'terminated';
    for (const t of this.#timers) t.cancel();
    this.#timers = [];
    this.#layer.remove(this);
  }

  #after(ms: number, fn: () => void): void {
    this.#timers.push(this.#layer.queue.after(ms, fn));
  }
}

interface ClientTransaction {
  readonly key: string;
  readonly resolve: (r: SipResponse | undefined) => void;
  timers: TimerHandle[];
  done: boolean;
}

export type ReceiveOutcome =
  | { type: 'new'; tx: ServerTransaction }
  | { type: 'retransmission' }
  | { type: 'ack-absorbed' }
  /** An ACK that matched no server transaction: the ACK for a 2xx, for the dialog (§17.2.3). */
  | { type: 'ack-for-dialog' }
  | { type: 'dropped'; why: 'limit-total' | 'limit-source' | 'bad-via' };

export interface TransactionLayerOptions {
  readonly timers: SipTimers;
  readonly maxTransactions: number;
  readonly maxPerSource: number;
}

export class TransactionLayer {
  readonly timers: SipTimers;
  readonly queue: TimerQueue;
  readonly #transport: SipTransport;
  readonly #opts: TransactionLayerOptions;
  readonly #server = new Map<string, ServerTransaction>();
  readonly #perSource = new Map<string, number>();
  readonly #client = new Map<string, ClientTransaction>();

  constructor(transport: SipTransport, queue: TimerQueue, opts: TransactionLayerOptions) {
    this.#transport = transport;
    this.queue = queue;
    this.#opts = opts;
    this.timers = opts.timers;
  }

  get serverCount(): number {
    return this.#server.size;
  }

  get clientCount(): number {
    return this.#client.size;
  }

  /** Matches an incoming request to a server transaction, creating one when it is new. */
  receive(req: SipRequest, peer: Peer): ReceiveOutcome {
    const via = topVia(req);
    if (!via) return { type: 'dropped', why: 'bad-via' };
    const key = serverTransactionKey(req, via);
    const existing = this.#server.get(key);
    if (req.method === 'ACK') {
      if (existing && existing.isInvite && existing.state === 'completed') {
        existing.acked();
        return { type: 'ack-absorbed' };
      }
      if (existing && existing.isInvite && existing.state !== 'accepted') return { type: 'ack-absorbed' };
      return { type: 'ack-for-dialog' };
    }
    if (existing) {
      existing.retransmitted();
      return { type: 'retransmission' };
    }
    if (this.#server.size >= this.#opts.maxTransactions) return { type: 'dropped', why: 'limit-total' };
    const n = this.#perSource.get(peer.address) ?? 0;
    if (n >= this.#opts.maxPerSource) return { type: 'dropped', why: 'limit-source' };
    const tx = new ServerTransaction(this, key, req, peer);
    this.#server.set(key, tx);
    this.#perSource.set(peer.address, n + 1);
    return { type: 'new', tx };
  }

  /** The INVITE server transaction a CANCEL refers to (§9.2: same key but the method). */
  findInviteFor(cancel: SipRequest): ServerTransaction | undefined {
    const via = topVia(cancel);
    if (!via) return undefined;
    const tx = this.#server.get(serverTransactionKey({ ...cancel, method: 'INVITE' }, via));
    return tx?.isInvite ? tx : undefined;
  }

  remove(tx: ServerTransaction): void {
    if (this.#server.get(tx.key) !== tx) return;
    this.#server.delete(tx.key);
    const n = (this.#perSource.get(tx.peer.address) ?? 1) - 1;
    if (n <= 0) this.#perSource.delete(tx.peer.address);
    else this.#perSource.set(tx.peer.address, n);
  }

  /** §18.2.2: where a response goes. Streams: the connection the request came on. */
  responsePeer(tx: ServerTransaction): Peer {
    if (tx.peer.transport !== 'udp') return tx.peer;
    const via = topVia(tx.request);
    // RFC 3581: with rport, answer the source port; else the sent-by port (5060 by default),
    // always at the source address (the `received` address, §18.2.2).
    const port = via?.params.has('rport') ? tx.peer.port : (via?.port ?? 5060);
    return { transport: 'udp', address: tx.peer.address, port };
  }

  sendResponseBytes(bytes: Buffer, tx: ServerTransaction): void {
    this.#transport.send(bytes, this.responsePeer(tx));
  }

  /**
   * Sends a non-INVITE request (BYE) as a client transaction and resolves with its final
   * response, or `undefined` on Timer F or when it could not be sent.
   */
  request(req: SipRequest, peer: Peer): Promise<SipResponse | undefined> {
    const via = topVia(req);
    const branch = via?.params.get('branch');
    if (!branch) return Promise.resolve(undefined);
    const key = `${branch}|${req.method}`;
    const bytes = serializeMessage(req);
    return new Promise((resolve) => {
      const ct: ClientTransaction = { key, resolve, timers: [], done: false };
      this.#client.set(key, ct);
      if (!this.#transport.send(bytes, peer, { connect: true })) {
        this.#finishClient(ct, undefined, 0);
        return;
      }
      const { t1, t2 } = this.timers;
      if (peer.transport === 'udp') {
        const resend = (interval: number) => {
          ct.timers.push(
            this.queue.after(interval, () => {
              if (ct.done) return;
              this.#transport.send(bytes, peer);
              resend(Math.min(2 * interval, t2));
            }),
          );
        };
        resend(t1); // Timer E
      }
      ct.timers.push(this.queue.after(64 * t1, () => this.#finishClient(ct, undefined, 0))); // Timer F
    });
  }

  /** A response arrived: give it to its client transaction (§17.1.3); strays are dropped. */
  receiveResponse(res: SipResponse, peer: Peer): void {
    const via = topVia(res);
    const cseq = parseCSeq(res.headers.get('cseq') ?? '');
    const branch = via?.params.get('branch');
    if (!branch || !cseq) return;
    const ct = this.#client.get(`${branch}|${cseq.method}`);
    if (!ct || ct.done || res.status < 200) return;
    // Timer K: T4 over UDP absorbs retransmitted responses, zero on streams.
    this.#finishClient(ct, res, peer.transport === 'udp' ? this.timers.t4 : 0);
  }

  #finishClient(ct: ClientTransaction, res: SipResponse | undefined, linger: number): void {
    if (ct.done) return;
    ct.done = true;
    for (const t of ct.timers) t.cancel();
    ct.timers = [];
    ct.resolve(res);
    if (linger === 0) this.#client.delete(ct.key);
    else this.queue.after(linger, () => this.#client.delete(ct.key));
  }

  /** Ends every transaction (shutdown). */
  close(): void {
    for (const tx of [...this.#server.values()]) tx.terminate();
    for (const ct of [...this.#client.values()]) this.#finishClient(ct, undefined, 0);
  }
}
