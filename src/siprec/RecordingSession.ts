/**
 * One recording session: a SIPREC recording session (RFC 7866) or a plain SIP recording leg. It
 * holds the metadata we know, one entry per offered m-line (its receive stream and speaker), and
 * turns every offer (INVITE, re-INVITE) and metadata update (re-INVITE or UPDATE, RFC 7866 §7.3)
 * into stream opens, updates (hold, resume, remote change, a new speaker after a transfer) and
 * closes, then into an SDP answer.
 *
 * An update is validated completely (metadata, SDP, speakers, admission, new sockets) before
 * anything changes, so a refused re-INVITE leaves the session as it was (RFC 3261 §14.2).
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { Logger } from '../log/logger.ts';
import type { SessionEndReason } from '../sip/Dialog.ts';
import type { SipAnswer, UasSession } from '../sip/SipServer.ts';
import type { SipRequest } from '../sip/SipMessage.ts';
import { readInviteBody } from './inviteBody.ts';
import { resolveParticipantId, type MappingConfig } from './mapping.ts';
import type { AudioCodecName, MediaPlane, ReceiveStream, StreamCloseReason } from './MediaPlane.ts';
import { mergeMetadata, parseRsMetadata, type RsMetadata } from './rsMetadata.ts';
import { readOffer, renderAnswer, type AnswerLine, type OfferedLine } from './sdpAnswer.ts';
import type { SiprecMetrics } from './siprecMetrics.ts';
import { assignLine, type LineAssignment } from './streamAssignment.ts';

export interface SessionEnv {
  readonly media: MediaPlane;
  readonly mapping: MappingConfig;
  readonly codecs: readonly AudioCodecName[];
  readonly sdes: boolean;
  /** The address in our SDP's c= line. */
  readonly mediaAddress: string;
  readonly retryAfterSeconds: number;
  readonly metrics?: SiprecMetrics | undefined;
  readonly logger?: Logger | undefined;
}

interface Line {
  offered: OfferedLine;
  stream: ReceiveStream | undefined;
  assignment: LineAssignment | undefined;
  localCrypto: string | undefined;
  codec: string | undefined;
}

/** A refusal with the SIP status and a reason phrase that names the problem. */
export function refuse(status: number, problem: string, retryAfter?: number): SipAnswer {
  const headers: [string, string][] = [['Warning', `399 optin "${problem.replace(/["\\]/g, "'").slice(0, 160)}"`]];
  if (retryAfter !== undefined) headers.push(['Retry-After', String(retryAfter)]);
  return { status, reason: problem, headers };
}

type Plan = { index: number; offered: OfferedLine; assignment: LineAssignment | undefined; refusedWhy?: string };

export class RecordingSession implements UasSession {
  readonly kind: 'siprec' | 'plain';
  readonly callId: string;
  readonly logId: string;
  readonly #env: SessionEnv;
  readonly #fallbackAddress: string;
  readonly #sdpSessionId = randomInt(1, 2 ** 31);
  #sdpVersion = 0;
  #metadata: RsMetadata | undefined;
  #lines: Line[] = [];
  #lastAnswer: string | undefined;
  #closed = false;
  readonly startedAt = Date.now();

  private constructor(env: SessionEnv, kind: 'siprec' | 'plain', callId: string, logId: string, fallbackAddress: string) {
    this.#env = env;
    this.kind = kind;
    this.callId = callId;
    this.logId = logId;
    this.#fallbackAddress = fallbackAddress;
  }

  /** Reads an initial INVITE; resolves with the session and its 200, or a refusal. */
  static async create(
    env: SessionEnv,
    req: SipRequest,
    ids: { callId: string; plainParticipantId?: string | undefined },
    kind: 'siprec' | 'plain',
    metadata: RsMetadata | undefined,
    sdp: string,
    logId: string,
    fallbackAddress: string,
    signal?: AbortSignal,
  ): Promise<{ ok: true; session: RecordingSession; answer: SipAnswer } | { ok: false; answer: SipAnswer }> {
    const session = new RecordingSession(env, kind, ids.callId, logId, fallbackAddress);
    session.#metadata = metadata;
    const result = await session.#applyOffer(req, sdp, metadata, ids.plainParticipantId, signal);
    if (result.status !== 200) return { ok: false, answer: result };
    return { ok: true, session, answer: result };
  }

  get metadata(): RsMetadata | undefined {
    return this.#metadata;
  }

  /** The participant of each m-line (undefined where refused), for tests and the dashboard. */
  lines(): { participantId: string | undefined; speakers: readonly string[]; held: boolean; port: number | undefined; codec: string | undefined }[] {
    return this.#lines.map((l) => ({
      participantId: l.assignment?.participantId,
      speakers: l.assignment?.speakers ?? [],
      held: l.offered.verdict.accept ? l.offered.verdict.held : false,
      port: l.stream?.local.rtpPort,
      codec: l.codec,
    }));
  }

  streams(): ReceiveStream[] {
    return this.#lines.flatMap((l) => (l.stream ? [l.stream] : []));
  }

  /** Milliseconds since the last packet on any stream not on hold (undefined when all are held). */
  idleMs(now: number): number | undefined {
    let newest = -1;
    let live = false;
    for (const l of this.#lines) {
      if (!l.stream || !l.offered.verdict.accept || l.offered.verdict.held) continue;
      live = true;
      newest = Math.max(newest, l.stream.stats.lastArrivalMs || this.startedAt);
    }
    return live ? now - newest : undefined;
  }

  reinvite(req: SipRequest): Promise<SipAnswer> {
    return this.#modify(req);
  }

  update(req: SipRequest): Promise<SipAnswer> {
    return this.#modify(req);
  }

  ended(reason: SessionEndReason): void {
    if (this.#closed) return;
    this.#closed = true;
    const why: StreamCloseReason = reason === 'error' ? 'error' : reason;
    for (const l of this.#lines) this.#closeStream(l, why);
    this.#env.metrics?.sessionsEnded.inc({ reason });
    this.#env.logger?.info({ dialog: this.logId, callId: this.callId, reason }, 'recording session ended');
  }

  async #modify(req: SipRequest): Promise<SipAnswer> {
    if (this.#closed) return refuse(481, 'session is closed');
    const body = readInviteBody(req);
    if (!body.ok) return refuse(body.status, body.problem);
    let md = this.#metadata;
    if (body.body.metadata) {
      const parsed = parseRsMetadata(body.body.metadata);
      if (!parsed.ok) {
        this.#env.metrics?.metadataErrors.inc();
        return refuse(400, `Bad rs-metadata: ${parsed.problem}`);
      }
      md = mergeMetadata(this.#metadata, parsed.metadata);
    }
    if (body.body.sdp !== undefined) return this.#applyOffer(req, body.body.sdp, md, undefined);
    // Metadata only (or nothing): speakers may change; media stays as negotiated.
    const plans: Plan[] = [];
    for (let i = 0; i < this.#lines.length; i++) {
      const l = this.#lines[i]!;
      if (!l.stream) {
        plans.push({ index: i, offered: l.offered, assignment: undefined });
        continue;
      }
      const a = this.#assign(md, l.offered, this.#audioPosition(this.#lines.map((x) => x.offered), i), req, undefined);
      if (!a.ok && 'left' in a && a.left) {
        plans.push({ index: i, offered: l.offered, assignment: undefined, refusedWhy: 'left' });
        continue;
      }
      if (!a.ok) return refuse(400, `Cannot map stream ${i + 1}: ${a.problem}`);
      plans.push({ index: i, offered: l.offered, assignment: a.assignment });
    }
    this.#metadata = md;
    for (const p of plans) {
      const line = this.#lines[p.index]!;
      if (p.refusedWhy === 'left') this.#closeStream(line, 'removed');
      else this.#reassign(line, p.assignment);
    }
    // A re-INVITE without an offer gets our current description as the offer (RFC 3261 §14.2).
    if (req.method === 'INVITE' && this.#lastAnswer) return { status: 200, body: Buffer.from(this.#lastAnswer), contentType: 'application/sdp' };
    return { status: 200 };
  }

  #audioPosition(offered: readonly OfferedLine[], index: number): number {
    let pos = 0;
    for (let i = 0; i < index; i++) if (offered[i]!.type === 'audio') pos++;
    return pos;
  }

  #assign(md: RsMetadata | undefined, line: OfferedLine, position: number, req: SipRequest, plainParticipantId: string | undefined) {
    if (this.kind === 'plain') {
      const current = this.#lines.find((l) => l.assignment)?.assignment;
      const id = plainParticipantId ?? current?.participantId;
      if (id !== undefined) return { ok: true as const, assignment: { participantId: id, speakers: [id], streamId: undefined, via: 'rules-only' as const } };
      const r = resolveParticipantId(this.#env.mapping.plain.participant, { participant: undefined, stream: undefined, position, request: req }, this.#env.mapping.key);
      if (!r.ok) return r;
      return { ok: true as const, assignment: { participantId: r.id, speakers: [r.id], streamId: undefined, via: 'rules-only' as const } };
    }
    return assignLine(md, line.label, position, this.#env.mapping.siprec.participant, req, this.#env.mapping.key);
  }

  async #applyOffer(req: SipRequest, sdp: string, md: RsMetadata | undefined, plainParticipantId: string | undefined, signal?: AbortSignal): Promise<SipAnswer> {
    const offer = readOffer(sdp, { codecs: this.#env.codecs, sdes: this.#env.sdes, fallbackAddress: this.#fallbackAddress });
    if (!offer.ok) return refuse(488, `SDP: ${offer.problem}`);
    if (offer.lines.length < this.#lines.length) return refuse(488, 'SDP: an updated offer may not remove m-lines (RFC 3264 §8)');

    // 1. Plan every line without touching anything.
    const plans: Plan[] = [];
    let acceptedAudio = 0;
    for (const line of offer.lines) {
      if (!line.verdict.accept) {
        plans.push({ index: line.index, offered: line, assignment: undefined, refusedWhy: line.verdict.why });
        continue;
      }
      if (this.kind === 'plain' && acceptedAudio >= 1) {
        plans.push({ index: line.index, offered: { ...line, verdict: { accept: false, why: 'no-codec' } }, assignment: undefined, refusedWhy: 'extra-line' });
        continue;
      }
      const a = this.#assign(md, line, this.#audioPosition(offer.lines, line.index), req, plainParticipantId);
      if (!a.ok) {
        plans.push({ index: line.index, offered: { ...line, verdict: { accept: false, why: 'no-codec' } }, assignment: undefined, refusedWhy: 'left' in a && a.left ? 'left' : 'unmapped' });
        continue;
      }
      acceptedAudio++;
      this.#env.metrics?.assignments.inc({ via: a.assignment.via });
      plans.push({ index: line.index, offered: line, assignment: a.assignment });
    }
    if (acceptedAudio === 0) return refuse(488, 'SDP: no audio stream we can record (codecs: ' + this.#env.codecs.join(', ') + ')');

    // 2. Admission for the streams this offer adds.
    const adding = plans.filter((p) => p.assignment && !this.#lines[p.index]?.stream);
    if (adding.length > 0) {
      const admission = this.#env.media.admit(adding.length);
      if (!admission.ok) {
        this.#env.metrics?.unavailable.inc({ reason: admission.reason });
        return refuse(503, `Recording server ${admission.reason === 'streams' ? 'at capacity' : admission.reason}`, admission.retryAfterSeconds);
      }
    }

    // 3. Open the new sockets; on failure close what was opened and change nothing else.
    const opened = new Map<number, { stream: ReceiveStream; localCrypto: string | undefined }>();
    try {
      for (const p of adding) {
        const v = p.offered.verdict;
        if (!v.accept || !p.assignment) continue;
        const stream = await this.#env.media.open({
          callId: this.callId,
          participantId: p.assignment.participantId,
          speakers: p.assignment.speakers,
          codec: v.codec,
          remote: v.remote,
          srtp: v.crypto?.key,
          held: v.held,
        });
        opened.set(p.index, { stream, localCrypto: v.crypto ? randomBytes(30).toString('base64') : undefined });
        // A CANCEL (or the end of the dialog) while sockets are being opened: stop here.
        if (signal?.aborted || this.#closed) break;
      }
    } catch (err) {
      for (const o of opened.values()) o.stream.close('error');
      this.#env.metrics?.unavailable.inc({ reason: 'ports' });
      const msg = err instanceof Error ? err.message : 'cannot open a receive stream';
      return refuse(503, `Recording server cannot receive media: ${msg.slice(0, 100)}`, this.#env.retryAfterSeconds);
    }
    if (this.#closed || signal?.aborted) {
      for (const o of opened.values()) o.stream.close('cancelled');
      return refuse(487, 'Request Terminated');
    }

    // 4. Commit: metadata, updates, closes, opens.
    this.#metadata = md;
    const lines: Line[] = [];
    for (const p of plans) {
      const prev = this.#lines[p.index];
      const v = p.offered.verdict;
      if (p.refusedWhy) this.#env.metrics?.linesRefused.inc({ why: p.refusedWhy });
      if (!v.accept || !p.assignment) {
        if (prev) this.#closeStream(prev, 'removed');
        lines.push({ offered: p.offered, stream: undefined, assignment: undefined, localCrypto: undefined, codec: undefined });
        continue;
      }
      const fresh = opened.get(p.index);
      if (fresh) {
        this.#env.metrics?.streamsOpened.inc({ codec: v.codec.name });
        this.#env.metrics?.streams.inc({ codec: v.codec.name });
        lines.push({ offered: p.offered, stream: fresh.stream, assignment: p.assignment, localCrypto: fresh.localCrypto, codec: v.codec.name });
        continue;
      }
      // An existing stream: hold/resume, remote, codec, speaker.
      const line = prev!;
      line.stream!.update({ held: v.held, remote: v.remote, codec: v.codec, srtp: v.crypto?.key });
      if (line.codec !== v.codec.name) {
        if (line.codec) this.#env.metrics?.streams.dec({ codec: line.codec });
        this.#env.metrics?.streams.inc({ codec: v.codec.name });
        line.codec = v.codec.name;
      }
      line.offered = p.offered;
      if (v.crypto && !line.localCrypto) line.localCrypto = randomBytes(30).toString('base64');
      this.#reassign(line, p.assignment);
      lines.push(line);
    }
    this.#lines = lines;
    const answerLines: AnswerLine[] = lines.map((l) => ({ line: l.offered, localPort: l.stream?.local.rtpPort, localCrypto: l.localCrypto }));
    this.#sdpVersion++;
    // The media plane knows where it listens; the configured address is only a fallback.
    const mediaAddress = lines.find((l) => l.stream)?.stream?.local.address ?? this.#env.mediaAddress;
    this.#lastAnswer = renderAnswer(answerLines, mediaAddress, this.#sdpSessionId, this.#sdpVersion);
    this.#env.logger?.info(
      { dialog: this.logId, callId: this.callId, kind: this.kind, streams: lines.filter((l) => l.stream).length, held: lines.filter((l) => l.offered.verdict.accept && l.offered.verdict.held).length },
      this.#sdpVersion === 1 ? 'recording session answered' : 'recording session updated',
    );
    return { status: 200, body: Buffer.from(this.#lastAnswer), contentType: 'application/sdp', contactParams: this.kind === 'siprec' ? '+sip.srs' : undefined };
  }

  #reassign(line: Line, next: LineAssignment | undefined): void {
    if (!line.stream || !next) return;
    const prev = line.assignment;
    line.assignment = next;
    if (prev && prev.participantId !== next.participantId) {
      line.stream.update({ participantId: next.participantId, speakers: next.speakers });
      this.#env.metrics?.transfers.inc();
      this.#env.logger?.info({ dialog: this.logId, callId: this.callId, from: prev.participantId, to: next.participantId }, 'stream speaker changed');
    } else if (prev && prev.speakers.join() !== next.speakers.join()) {
      line.stream.update({ participantId: next.participantId, speakers: next.speakers });
    }
  }

  #closeStream(line: Line, reason: StreamCloseReason): void {
    if (!line.stream) return;
    line.stream.close(reason);
    if (line.codec) this.#env.metrics?.streams.dec({ codec: line.codec });
    line.stream = undefined;
    line.assignment = undefined;
  }
}
