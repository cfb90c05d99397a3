/**
 * The Session Recording Server (RFC 7866): the SIP front door for SBCs and PBXs that fork calls
 * to optin, over SIPREC or as plain SIP recording legs. It admits or refuses (503 + Retry-After,
 * so the SRC tries the next recording server), reads the offer and metadata, maps the session to
 * the control plane's call and participant ids, opens receive streams on the media plane, and
 * answers. It answers whatever the consent: the gate decides per packet what is kept.
 *
 * OPTIONS never reaches this file's parsing: the SIP core answers it from `media.ready()` alone.
 */
import type { Registry } from 'prom-client';
import { readFileSync } from 'node:fs';
import type { Logger } from '../log/logger.ts';
import { SipServer, type InviteAccept, type InviteContext, type SipAnswer, type UasHandler } from '../sip/SipServer.ts';
import { readInviteBody } from './inviteBody.ts';
import { resolveCallId, resolveParticipantId } from './mapping.ts';
import type { MediaPlane } from './MediaPlane.ts';
import { RecordingSession, refuse, type SessionEnv } from './RecordingSession.ts';
import { parseRsMetadata, type RsMetadata } from './rsMetadata.ts';
import type { SiprecConfig } from './siprecConfig.ts';
import { createSiprecMetrics, type SiprecMetrics } from './siprecMetrics.ts';

export interface RecordingServerDeps {
  readonly media: MediaPlane;
  readonly registry?: Registry | undefined;
  readonly logger?: Logger | undefined;
}

export const ACCEPTED_BODIES = ['application/sdp', 'multipart/mixed', 'application/rs-metadata+xml', 'application/rs-metadata'];

export class RecordingServer implements UasHandler<RecordingSession> {
  readonly sip: SipServer<RecordingSession>;
  readonly metrics: SiprecMetrics | undefined;
  readonly #config: SiprecConfig;
  readonly #media: MediaPlane;
  readonly #logger: Logger | undefined;
  readonly #env: SessionEnv;
  #tick: NodeJS.Timeout | undefined;
  readonly #heldSince = new WeakMap<RecordingSession, number>();

  constructor(config: SiprecConfig, deps: RecordingServerDeps) {
    this.#config = config;
    this.#media = deps.media;
    this.#logger = deps.logger;
    this.metrics = deps.registry ? createSiprecMetrics(deps.registry) : undefined;
    const mediaAddress = config.media.advertisedAddress ?? config.media.bindAddress ?? config.advertisedHost ?? config.bindAddress;
    this.#env = {
      media: deps.media,
      mapping: config.mapping,
      codecs: config.codecs,
      sdes: config.sdes,
      mediaAddress,
      retryAfterSeconds: config.retryAfterSeconds,
      metrics: this.metrics,
      logger: deps.logger,
    };
    const tls = config.tls
      ? { key: readFileSync(config.tls.keyFile), cert: readFileSync(config.tls.certFile), ca: config.tls.caFile ? readFileSync(config.tls.caFile) : undefined }
      : undefined;
    this.sip = new SipServer<RecordingSession>(
      {
        bindAddress: config.bindAddress,
        advertisedHost: config.advertisedHost,
        udpPort: config.udpPort ?? undefined,
        tcpPort: config.tcpPort ?? undefined,
        tlsPort: config.tlsPort ?? undefined,
        tls,
        limits: config.limits,
        timers: config.timers,
        maxDialogs: config.maxDialogs,
        maxTransactions: config.maxTransactions,
        maxTransactionsPerSource: config.maxTransactionsPerSource,
        maxConnections: config.maxConnections,
        connectionIdleMs: config.connectionIdleSeconds * 1000,
        handlerTimeoutMs: config.handlerTimeoutMs,
        retryAfterSeconds: config.retryAfterSeconds,
        supported: ['siprec'],
        accept: ACCEPTED_BODIES,
        userAgent: 'optin-srs',
      },
      this,
    );
    const m = this.metrics;
    if (m) {
      this.sip.on('invite', (outcome) => m.invites.inc({ outcome }));
      this.sip.on('dialogs', (n) => m.dialogs.set(n));
      this.sip.on('request', (method) => m.requests.inc({ method }));
      this.sip.on('malformed', (reason, answered) => m.malformed.inc({ reason, answered: String(answered) }));
      this.sip.on('dropped', (why) => {
        m.dropped.inc({ why });
        if (why === 'dialog-limit') m.unavailable.inc({ reason: 'dialogs' });
      });
    }
  }

  async listen(): Promise<void> {
    await this.sip.listen();
    const timeoutMs = this.#config.mediaTimeoutSeconds * 1000;
    const holdMs = this.#config.holdTimeoutSeconds * 1000;
    if (timeoutMs > 0 || holdMs > 0) {
      // One shared tick for every session (no per-session timers).
      const every = Math.max(250, Math.min(5000, (timeoutMs || holdMs) / 4));
      this.#tick = setInterval(() => this.#sweep(timeoutMs, holdMs), every);
      this.#tick.unref();
    }
    this.#logger?.info({ ports: this.sip.ports() }, 'SIP recording server listening');
  }

  ports(): { udp?: number; tcp?: number; tls?: number } {
    return this.sip.ports();
  }

  /** Ends sessions whose media stopped without a BYE, so no dialog outlives its call. */
  #sweep(timeoutMs: number, holdMs: number): void {
    const now = Date.now();
    for (const s of this.sip.sessions()) {
      const idle = s.idleMs(now);
      if (idle === undefined) {
        const since = this.#heldSince.get(s) ?? now;
        this.#heldSince.set(s, since);
        if (holdMs > 0 && now - since > holdMs) this.sip.terminate(s, 'media-timeout');
        continue;
      }
      this.#heldSince.delete(s);
      if (timeoutMs > 0 && idle > timeoutMs) this.sip.terminate(s, 'media-timeout');
    }
  }

  ready(): boolean {
    return this.#media.ready();
  }

  async invite(ctx: InviteContext): Promise<SipAnswer | InviteAccept<RecordingSession>> {
    const t0 = performance.now();
    const answer = await this.#invite(ctx);
    this.metrics?.inviteSeconds.observe((performance.now() - t0) / 1000);
    return answer;
  }

  async #invite(ctx: InviteContext): Promise<SipAnswer | InviteAccept<RecordingSession>> {
    const req = ctx.request;
    // Cheap refusal first: no parsing while over capacity or not ready.
    const pre = this.#media.admit(1);
    if (!pre.ok) {
      this.metrics?.unavailable.inc({ reason: pre.reason });
      return refuse(503, `Recording server ${pre.reason === 'streams' ? 'at capacity' : pre.reason}`, pre.retryAfterSeconds);
    }
    const body = readInviteBody(req);
    if (!body.ok) return refuse(body.status, body.problem);
    if (body.body.sdp === undefined) return refuse(488, 'INVITE without an SDP offer is not supported: send the offer in the INVITE');
    let metadata: RsMetadata | undefined;
    if (body.body.metadata) {
      const parsed = parseRsMetadata(body.body.metadata);
      if (!parsed.ok) {
        this.metrics?.metadataErrors.inc();
        this.#logger?.warn({ dialog: ctx.logId, problem: parsed.problem }, 'rs-metadata refused');
        return refuse(400, `Bad rs-metadata: ${parsed.problem}`);
      }
      metadata = parsed.metadata;
    }
    const kind = body.body.siprec ? 'siprec' : 'plain';
    const mapping = this.#config.mapping;
    const call = resolveCallId(kind === 'siprec' ? mapping.siprec.call : mapping.plain.call, req, metadata, mapping.key);
    if (!call.ok) return refuse(400, `Cannot map the call: ${call.problem}`);
    let plainParticipantId: string | undefined;
    if (kind === 'plain') {
      const p = resolveParticipantId(mapping.plain.participant, { participant: undefined, stream: undefined, position: 0, request: req }, mapping.key);
      if (!p.ok) return refuse(404, `No recording target: ${p.problem}`);
      plainParticipantId = p.id;
    }
    if (ctx.signal.aborted) return refuse(487, 'Request Terminated');
    const created = await RecordingSession.create(this.#env, req, { callId: call.id, plainParticipantId }, kind, metadata, body.body.sdp, ctx.logId, ctx.peer.address, ctx.signal);
    if (!created.ok) {
      this.#logger?.info({ dialog: ctx.logId, status: created.answer.status, reason: created.answer.reason }, 'recording session refused');
      return created.answer;
    }
    if (ctx.signal.aborted) {
      created.session.ended('cancelled');
      return refuse(487, 'Request Terminated');
    }
    return { ...created.answer, session: created.session };
  }

  /** Stops taking sessions; ends every session with a BYE when `bye`. */
  async close(opts: { bye?: boolean } = {}): Promise<void> {
    if (this.#tick) clearInterval(this.#tick);
    await this.sip.close(opts);
  }
}
