import { WebSocket } from 'ws';
import { FrameOpener, FrameSealer } from '../control/frameAuth.ts';
import {
  PROTOCOL_VERSION_2,
  encodeV2,
  errorV2,
  parseWorkerMessageV2,
  type ErrorCodeV2,
  type ServerMessageV2,
  type WorkerMessageV2,
} from '../control/protocolV2.ts';
import type { Database } from '../db/Database.ts';
import { readFactsAfter, type StoredFact } from '../db/factLog.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import type { FactFollower } from './FactFollower.ts';
import { buildSnapshot, snapshotFrames } from './snapshot.ts';

/** WebSocket close codes of the v2 stream (docs/control-protocol.md §3). */
export const CLOSE = {
  normal: 1000,
  going: 1001,
  protocol: 4000,
  badFrameMac: 4001,
  slowConsumer: 4002,
} as const;

/** A session whose socket buffers more than this is too slow to follow: closed, it reconnects. */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
const CATCH_UP_BATCH = 500;
/**
 * Worker frames waiting to be handled. A recorder legitimately sends bursts (every call's R7
 * report when its stream turns fresh, catalogue reports, cap questions): past PAUSE_INBOX we stop
 * reading its socket (TCP backpressure slows the worker, nothing is lost) and read again below
 * RESUME_INBOX. Only a worker that still floods past MAX_INBOX (frames already read off the
 * socket when it was paused cannot exceed a few hundred) is cut off.
 */
const PAUSE_INBOX = 128;
const RESUME_INBOX = 32;
const MAX_INBOX = 4096;
/**
 * Cap questions handled at once per session. Each is one short transaction of a few round trips
 * (caps/capDecision.ts), safe to run side by side: it locks the agents' counter rows, so two
 * admissions for one agent queue on the row. One after the other, a recorder's burst of new calls
 * (750 consents within seconds) waited longer than its question's deadline (2 s) and every late
 * answer turned into a retry and a warning on the worker.
 */
const CAP_LANES = 4;

export interface SessionDeps {
  db: Database;
  follower: FactFollower;
  logger: Logger;
  metrics: ControlPlaneMetrics;
  serverId: string;
  heartbeatMs: number;
  tombstoneHorizonMs: number;
  now: () => number;
  onMessage: (session: StreamSession, message: WorkerMessageV2) => Promise<void>;
}

/**
 * One worker's policy stream: hello, a snapshot read from the database, then every fact after
 * the snapshot's seq, in order, each exactly once, and heartbeats when the replica's database
 * read succeeded. Every frame after hello is MAC'd (frameAuth.ts); a worker frame whose MAC fails
 * ends the session (4001), since nothing after it can be trusted.
 */
export class StreamSession {
  readonly workerId: string;
  readonly #ws: WebSocket;
  readonly #deps: SessionDeps;
  readonly #sealer: FrameSealer;
  readonly #opener: FrameOpener;
  readonly #proof: string;
  readonly #serverNonce: string;
  #state: 'snapshot' | 'live' | 'closed' = 'snapshot';
  #sentSeq = -1;
  #pumping: Promise<boolean> | undefined;
  /**
   * Worker frames are handled one after the other, in arrival order (a call's reports in the order
   * it sent them), except cap questions: up to CAP_LANES of those at once, beside the others (their
   * answers name their question; none depends on a report).
   */
  #inbox: Promise<void> = Promise.resolve();
  #inboxDepth = 0;
  #capsRunning = 0;
  readonly #capsWaiting: (() => Promise<void>)[] = [];

  constructor(ws: WebSocket, workerId: string, key: Buffer, proof: string, serverNonce: string, deps: SessionDeps) {
    this.#ws = ws;
    this.workerId = workerId;
    this.#deps = deps;
    this.#sealer = new FrameSealer(key, 's2w');
    this.#opener = new FrameOpener(key, 'w2s');
    this.#proof = proof;
    this.#serverNonce = serverNonce;
    ws.on('message', (data, isBinary) => this.#onFrame(data as Buffer, isBinary));
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  get sentSeq(): number {
    return this.#sentSeq;
  }

  /** hello, then the snapshot, then whatever facts arrived meanwhile. */
  async start(): Promise<void> {
    this.#ws.send(
      JSON.stringify({
        v: PROTOCOL_VERSION_2,
        type: 'hello',
        serverId: this.#deps.serverId,
        proof: this.#proof,
        serverNonce: this.#serverNonce,
        heartbeatMs: this.#deps.heartbeatMs,
      } satisfies ServerMessageV2),
    );
    const t0 = performance.now();
    let frames: string[];
    let seq: number;
    try {
      const at = this.#deps.now();
      const content = await buildSnapshot(this.#deps.db, { nowMs: at, tombstoneHorizonMs: this.#deps.tombstoneHorizonMs });
      frames = snapshotFrames(content, at);
      seq = content.seq;
    } catch (err) {
      this.#deps.logger.warn({ workerId: this.workerId, err: (err as Error).message }, 'stream: snapshot failed; closing so the worker retries');
      this.close(1011, 'snapshot-unavailable');
      return;
    }
    this.#deps.metrics.snapshotSeconds.observe((performance.now() - t0) / 1000);
    if (this.closed) return;
    for (const frame of frames) this.#sendJson(frame);
    this.#sentSeq = seq;
    this.#state = 'live';
    this.#deps.logger.info({ workerId: this.workerId, seq, parts: frames.length }, 'stream: worker connected');
    await this.pump();
  }

  /**
   * Sends every fact after sentSeq up to the follower's head, from its ring or the database.
   * Serialised; resolves true when the session is caught up.
   */
  pump(): Promise<boolean> {
    if (this.#state !== 'live') return Promise.resolve(false);
    if (this.#pumping !== undefined) {
      // Another pump runs: chain one more after it so facts that arrived since are sent too.
      return this.#pumping.then(() => this.pump());
    }
    const run = (async () => {
      // Yield once so `#pumping` is set before the body can finish (and clear it).
      await null;
      try {
        while (this.#state === 'live' && this.#sentSeq < this.#deps.follower.head) {
          const facts: StoredFact[] =
            this.#deps.follower.since(this.#sentSeq, CATCH_UP_BATCH) ?? (await readFactsAfter(this.#deps.db, this.#sentSeq, CATCH_UP_BATCH));
          if (facts.length === 0) break;
          for (const f of facts) {
            if (f.seq !== this.#sentSeq + 1) {
              this.#deps.logger.error({ workerId: this.workerId, expected: this.#sentSeq + 1, got: f.seq }, 'stream: fact gap; closing so the worker takes a new snapshot');
              this.close(CLOSE.protocol, 'fact-gap');
              return false;
            }
            this.#send({ v: PROTOCOL_VERSION_2, type: 'delta', seq: f.seq, at: f.at, fact: f.fact });
            this.#sentSeq = f.seq;
            this.#deps.metrics.deltasSent.inc();
          }
        }
        return this.#state === 'live' && this.#sentSeq >= this.#deps.follower.head;
      } catch (err) {
        this.#deps.logger.warn({ workerId: this.workerId, err: (err as Error).message }, 'stream: catch-up read failed');
        return false;
      } finally {
        this.#pumping = undefined;
      }
    })();
    this.#pumping = run;
    return run;
  }

  /** After a successful database read in this tick: catch up, then prove liveness. */
  async heartbeat(): Promise<void> {
    if (this.#state !== 'live') return;
    const caughtUp = await this.pump();
    if (!caughtUp || this.#state !== 'live') return;
    this.#send({ v: PROTOCOL_VERSION_2, type: 'heartbeat', seq: this.#sentSeq, at: this.#deps.now() });
    this.#deps.metrics.heartbeatsSent.inc();
  }

  send(message: ServerMessageV2): void {
    this.#send(message);
  }

  sendError(code: ErrorCodeV2, message: string, ref?: string): void {
    this.#send(errorV2(code, message, ref));
  }

  close(code: number = CLOSE.normal, reason = ''): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) this.#ws.close(code, reason);
    // A peer that does not complete the closing handshake is cut after a second.
    setTimeout(() => this.#ws.terminate(), 1000).unref();
  }

  /** The socket went away (either side): no more sends. */
  markClosed(): void {
    this.#state = 'closed';
  }

  #send(message: ServerMessageV2): void {
    this.#sendJson(encodeV2(message));
  }

  #sendJson(json: string): void {
    if (this.#ws.readyState !== WebSocket.OPEN) return;
    if (this.#ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.#deps.logger.warn({ workerId: this.workerId }, 'stream: worker too slow to follow; closing');
      this.close(CLOSE.slowConsumer, 'slow-consumer');
      return;
    }
    // Sealed at send time, in send order: the counter is the frame's index on the wire.
    this.#ws.send(this.#sealer.seal(json));
  }

  #onFrame(data: Buffer, isBinary: boolean): void {
    if (this.#state === 'closed') return;
    if (isBinary) {
      this.#deps.metrics.frameMacFailures.inc();
      this.close(CLOSE.badFrameMac, 'binary-frame');
      return;
    }
    const opened = this.#opener.open(data.toString('utf8'));
    if (!opened.ok) {
      this.#deps.metrics.frameMacFailures.inc();
      this.#deps.logger.warn({ workerId: this.workerId, reason: opened.reason }, 'stream: worker frame failed authentication; closing');
      this.close(CLOSE.badFrameMac, 'bad-frame-mac');
      return;
    }
    const parsed = parseWorkerMessageV2(opened.json);
    if (!parsed.ok) {
      this.#deps.metrics.workerFrames.inc({ type: 'invalid', result: parsed.code });
      this.sendError(parsed.code, parsed.message, parsed.ref);
      return;
    }
    const message = parsed.message;
    if (this.#inboxDepth >= MAX_INBOX) {
      this.#deps.logger.warn({ workerId: this.workerId }, 'stream: worker sends faster than we can handle; closing');
      this.close(CLOSE.slowConsumer, 'inbox-full');
      return;
    }
    this.#inboxDepth++;
    if (this.#inboxDepth === PAUSE_INBOX) this.#ws.pause();
    const handle = (): Promise<void> =>
      this.#deps.onMessage(this, message).then(
        () => this.#deps.metrics.workerFrames.inc({ type: message.type, result: 'ok' }),
        (err: unknown) => {
          this.#deps.metrics.workerFrames.inc({ type: message.type, result: 'failed' });
          this.#deps.logger.warn({ workerId: this.workerId, type: message.type, err: (err as Error).message }, 'stream: handling a worker frame failed');
          this.sendError('unavailable', 'the control plane could not handle this frame now; retry', frameRef(message));
        },
      ).finally(() => {
        this.#inboxDepth--;
        if (this.#inboxDepth === RESUME_INBOX && this.#ws.isPaused) this.#ws.resume();
      });
    if (message.type === 'cap.request') {
      this.#capsWaiting.push(handle);
      this.#runCaps();
    } else {
      this.#inbox = this.#inbox.then(handle);
    }
  }

  /** Starts waiting cap questions while fewer than CAP_LANES run. */
  #runCaps(): void {
    while (this.#capsRunning < CAP_LANES && this.#capsWaiting.length > 0) {
      const next = this.#capsWaiting.shift()!;
      this.#capsRunning++;
      void next().finally(() => {
        this.#capsRunning--;
        this.#runCaps();
      });
    }
  }
}

/** What names a worker frame in an `unavailable` answer, so the worker knows which one to send again. */
function frameRef(message: WorkerMessageV2): string | undefined {
  switch (message.type) {
    case 'cap.request':
      return message.requestId;
    case 'recording.report':
      return message.recordingId;
    case 'erasure.done':
      return message.erasureId;
    case 'deletion.done':
      return message.deletionId;
    default:
      return undefined;
  }
}
