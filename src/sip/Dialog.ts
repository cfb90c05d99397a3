/**
 * A dialog seen from the user-agent server (RFC 3261 §12.1.1): identified by Call-ID, our tag
 * and the remote tag; its route set is the INVITE's Record-Route in order, its remote target the
 * INVITE's Contact (refreshed by re-INVITE and UPDATE, §12.2.2). We keep the request's From and To
 * values only to build our own BYE; they hold AoRs and display names, so they are never logged:
 * `logId` (a hash of the Call-ID) stands for the dialog in logs.
 */
import { createHash } from 'node:crypto';
import type { Peer } from './SipTransport.ts';
import type { TimerHandle } from './TimerQueue.ts';

export type DialogState = 'awaiting-ack' | 'confirmed' | 'terminated';

export type SessionEndReason = 'bye' | 'ack-timeout' | 'cancelled' | 'shutdown' | 'media-timeout' | 'error';

export function dialogKey(callId: string, localTag: string, remoteTag: string): string {
  return `${callId}\n${localTag}\n${remoteTag}`;
}

/** A short stable pseudonym of a Call-ID for logs (a Call-ID may embed a host name or number). */
export function logIdOf(callId: string): string {
  return createHash('sha256').update(callId).digest('base64url').slice(0, 12);
}

export class Dialog<S> {
  readonly key: string;
  readonly callId: string;
  readonly localTag: string;
  readonly remoteTag: string;
  readonly logId: string;
  /** Our side's To value (with our tag): the From of requests we send. */
  readonly localNameAddr: string;
  /** The peer's From value (with its tag): the To of requests we send. */
  readonly remoteNameAddr: string;
  readonly routeSet: readonly string[];
  remoteTarget: string;
  remoteCseq: number;
  localCseq = 0;
  /** Where the INVITE came from: the connection to reuse for in-dialog requests. */
  readonly peer: Peer;
  state: DialogState = 'awaiting-ack';
  /** CSeq of the INVITE whose 2xx awaits its ACK, with the retransmission timer. */
  pendingAck: { cseq: number; timer: TimerHandle | undefined } | undefined;
  /** A re-INVITE or UPDATE is being answered: a second one gets 500 + Retry-After (§14.2). */
  busy = false;
  readonly session: S;
  readonly createdAt = Date.now();

  constructor(init: {
    callId: string;
    localTag: string;
    remoteTag: string;
    localNameAddr: string;
    remoteNameAddr: string;
    routeSet: readonly string[];
    remoteTarget: string;
    remoteCseq: number;
    peer: Peer;
    session: S;
  }) {
    this.callId = init.callId;
    this.localTag = init.localTag;
    this.remoteTag = init.remoteTag;
    this.key = dialogKey(init.callId, init.localTag, init.remoteTag);
    this.logId = logIdOf(init.callId);
    this.localNameAddr = init.localNameAddr;
    this.remoteNameAddr = init.remoteNameAddr;
    this.routeSet = init.routeSet;
    this.remoteTarget = init.remoteTarget;
    this.remoteCseq = init.remoteCseq;
    this.peer = init.peer;
    this.session = init.session;
  }
}
