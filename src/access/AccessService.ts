import type { Client } from 'minio';
import type { AuditEntry, AuditInput, AuditListQuery, AuditVerifyResult } from '../audit/AuditTrail.ts';
import { BREAK_EXPLANATION } from '../audit/chain.ts';
import { countAgentRecordings, getRecording, listAllRecordings, listRecordings, recordingsOfSubject, sampleRecordings, type CatalogueRow } from '../catalogue/Catalogue.ts';
import { reportByRule, type RuleSection } from '../compliance/byRule.ts';
import { ledgerChecks } from '../compliance/ledgerChecks.ts';
import { collectComplianceFacts, evaluateCompliance } from '../compliance/report.ts';
import type { FactV2 } from '../control/protocolV2.ts';
import type { Database } from '../db/Database.ts';
import type { StoredFact } from '../db/factLog.ts';
import { getDeletion, requestDeletion as ledgerRequestDeletion, type DeletionRow } from '../erasure/ledger.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { ErrorCode } from '../errors/OptinError.ts';
import { monthKey } from '../gate/month.ts';
import { ID_PATTERN } from '../ids/ids.ts';
import type { Logger } from '../log/logger.ts';
import type { FfmpegPool } from '../media/ffmpeg.ts';
import type { BucketNames } from '../storage/layout.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import type { RecordingSource } from '../storage/types.ts';
import { BoundedCache } from './BoundedCache.ts';
import { renderCoaching, type RenderFormat, type RenderedPlayback } from './coaching.ts';
import { consentInWords, consentListInWords } from './consentWords.ts';
import { closeDeletionRequest, createDeletionRequest, deletionRequestsBy, deletionRequestsFor, pendingDeletionRequests, purgeDeletionRequests, type DeletionRequest } from './DeletionRequests.ts';
import { createExtract, type ExtractFile, type ExtractFormat } from './extract.ts';
import { ExtractJobs, type ExtractJob } from './ExtractJobs.ts';
import { authorize, authorizeRoute, listEntryView, recordingFacts, recordingView, rolesForAuditType, type Action, type DenyReason, type ListEntryView, type RecordingView } from './policy.ts';
import type { Principal } from './roles.ts';
import { judgeSpotCheck, type SpotCheckItem } from './spotCheck.ts';
import { buildTimeline, type Timeline } from './timeline.ts';

/**
 * The access API's use cases on the control plane (issue 14; DESIGN §6, R1, R9-R12): lists from
 * the catalogue, audio from the store through the storage reader, deletion requests and deletions
 * through the database's ledger, subject-access extracts as jobs, the audit trail and the DPO's
 * compliance report and spot checks. HTTP-free: the fastify routes (src/api/accessRoutes.ts) and
 * the pages (src/api/webRoutes.ts) both call this, so a page can never show what the API refuses.
 *
 * Every use case:
 * - asks the one pure policy (src/access/policy.ts), with facts from the catalogue row (which the
 *   ledger keeps current: a deletion marks it at once, an erasure drops the participant's ids);
 * - appends its audit entry BEFORE the data leaves; when the trail cannot take it the request
 *   fails (503): no unrecorded access (R11);
 * - re-checks the recording on every download: deleted, erased or expired audio is never served
 *   from a cache (R8, R9).
 *
 * Renders and held extracts follow the deletion and erasure facts of the fact log (the control
 * plane's FactFollower, fed by NOTIFY), so a deletion or erasure made through any replica or any
 * path drops them here within one notification.
 */

/** Purposes a playback may declare (R1: recordings serve training and coaching only). */
export const PLAY_PURPOSES = ['coaching', 'training'] as const;
export type PlayPurpose = (typeof PLAY_PURPOSES)[number];

/** The control plane's read side of the store. */
export interface AccessStore {
  source: RecordingSource;
  s3: Client;
  buckets: Readonly<BucketNames>;
}

export interface AccessAudit {
  append(input: AuditInput): Promise<unknown>;
  list(query?: AuditListQuery): Promise<AuditEntry[]>;
  verify(opts?: { stream?: string }): Promise<AuditVerifyResult>;
}

export interface AccessServiceOptions {
  db: Database;
  /** Absent: the control plane has no store configured; audio, extracts and the report answer 503. */
  store?: AccessStore;
  audit?: AccessAudit;
  pool: FfmpegPool;
  replicaId: string;
  logger: Logger;
  /** Runs the ledger's sweeper soon (after a deletion). */
  kickSweeper?: () => void;
  renderCacheBytes?: number;
  renderCacheTtlMs?: number;
  extractMaxBytes?: number;
  extractTtlMs?: number;
  retentionSeconds: number;
  /** At most this many denial entries per window (default 200 per 10 s); the rest are counted. */
  denialAuditMax?: number;
  denialAuditWindowMs?: number;
  now?: () => number;
}

/** A policy denial: 403 (the role never may) or 404 (not this one, or it does not exist). Audited as `access.denied`. */
export class AccessDenied extends OptinError {
  readonly status: 403 | 404;
  readonly reason: DenyReason | 'not-own-extract' | 'case-mismatch' | 'not-own-deletion';
  readonly recordingId: string | undefined;
  constructor(status: 403 | 404, reason: AccessDenied['reason'], recordingId?: string) {
    const code: ErrorCode = status === 403 ? 'ACCESS_DENIED' : 'RECORDING_NOT_FOUND';
    super(code, status === 403 ? 'your role may not use this' : 'no such resource');
    this.status = status;
    this.reason = reason;
    this.recordingId = recordingId;
  }
}

export interface Rendered extends RenderedPlayback {
  recordingId: string;
  callId: string;
}

export interface ListEntry extends ListEntryView {
  durationMs: number | null;
  consent: string[];
  deletionRequest?: Pick<DeletionRequest, 'state' | 'requestedAt' | 'closedAt'>;
}

export interface RecordingDetail {
  view: RecordingView;
  timeline: Timeline | null;
  consent: string[];
  deletionRequest?: DeletionRequest;
  may: { play: boolean; delete: boolean; requestDeletion: boolean; accessLog: boolean };
}

export interface DeletionStatus {
  deletionId: string;
  recordingId: string;
  state: 'pending' | 'done';
  requestedAt: number;
  completedAt: number | null;
  actor: string;
  receipt: DeletionRow['receipt'];
}

const LIVE = new Set(['recording', 'complete', 'interrupted']);

export class AccessService {
  readonly renders: BoundedCache<Rendered>;
  readonly extracts: ExtractJobs;
  readonly #o: AccessServiceOptions;
  readonly #now: () => number;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  readonly #denials = { startedAt: 0, count: 0, suppressed: 0 };

  constructor(options: AccessServiceOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#log = options.logger.child({ component: 'access' });
    this.renders = new BoundedCache<Rendered>({ maxBytes: options.renderCacheBytes ?? 128 * 1024 * 1024, ttlMs: options.renderCacheTtlMs ?? 10 * 60_000, now: this.#now });
    this.extracts = new ExtractJobs({
      db: options.db,
      replicaId: options.replicaId,
      logger: this.#log,
      maxBytes: options.extractMaxBytes ?? 256 * 1024 * 1024,
      ttlMs: options.extractTtlMs ?? 15 * 60_000,
      now: this.#now,
      run: (job, hooks) => this.#runExtract(job, hooks),
    });
  }

  get storeConfigured(): boolean {
    return this.#o.store !== undefined;
  }

  async start(): Promise<void> {
    await this.extracts.recover();
    // Expired renders and extracts leave memory within a second of their recording's expiry (R8).
    this.#timer = setInterval(() => {
      this.renders.purgeExpired();
      void this.extracts.sweep().catch(() => undefined);
    }, 1000);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.extracts.close();
    this.renders.clear();
  }

  // ---- the audit trail ---------------------------------------------------------------------

  async #record(p: Principal, input: Omit<AuditInput, 'actor' | 'role'>): Promise<void> {
    const audit = this.#o.audit;
    if (audit === undefined) throw new OptinError('AUDIT_UNAVAILABLE', 'the control plane has no audit trail configured (OPTIN_S3_* and OPTIN_KEYRING), so no access can be recorded (R11)');
    try {
      await audit.append({ ...input, actor: p.sub, role: p.role });
    } catch (err) {
      this.#log.error({ type: input.type, err: (err as Error).message }, 'audit append failed; access refused');
      throw new OptinError('AUDIT_UNAVAILABLE', 'the access could not be written to the audit trail, so it is refused (R11); retry shortly', { retryable: true });
    }
  }

  /**
   * Records a refusal (`access.denied`): actor, role, route template, status, reason. Rate-limited
   * per window so a flood cannot flood the append-only trail; the suppressed count goes into the
   * next entry. Never throws: the refusal stands either way.
   */
  async recordDenial(p: Principal | undefined, route: string, status: number, reason: string, recordingId?: string): Promise<void> {
    const t = this.#now();
    const w = this.#denials;
    if (t - w.startedAt >= (this.#o.denialAuditWindowMs ?? 10_000)) {
      w.startedAt = t;
      w.count = 0;
    }
    if (w.count >= (this.#o.denialAuditMax ?? 200)) {
      w.suppressed += 1;
      return;
    }
    w.count += 1;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    try {
      await this.#o.audit?.append({
        type: 'access.denied',
        actor: p?.sub ?? 'anonymous',
        role: p?.role ?? 'none',
        purpose: 'access-control',
        refs: recordingId !== undefined && ID_PATTERN.test(recordingId) ? { recordingId } : {},
        details: { route, status, reason, ...(suppressed > 0 ? { suppressedBefore: suppressed } : {}) },
      });
    } catch (err) {
      this.#log.error({ route, status, reason, err: (err as Error).message }, 'audit of a denial failed');
    }
  }

  /** A person signed in (accountability, not an access: a trail outage does not stop a sign-in). */
  async recordSignIn(p: Principal): Promise<void> {
    await this.#o.audit?.append({ type: 'session.signed-in', actor: p.sub, role: p.role, purpose: 'sign-in' }).catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, 'audit of a sign-in failed'));
  }

  // ---- facts ---------------------------------------------------------------------------------

  #store(): AccessStore {
    if (this.#o.store === undefined) {
      throw new OptinError('STORAGE_UNAVAILABLE', 'the control plane has no store configured (OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY, OPTIN_KEYRING): audio and reports are unavailable', { retryable: false });
    }
    return this.#o.store;
  }

  /** The catalogue row when the recording is live and not expired; undefined otherwise (gone: 404). */
  async #liveRow(recordingId: string): Promise<CatalogueRow | undefined> {
    if (!ID_PATTERN.test(recordingId)) return undefined;
    const row = await getRecording(this.#o.db, recordingId);
    if (row === undefined || !LIVE.has(row.state) || row.expiresAt <= this.#now()) return undefined;
    return row;
  }

  /** Route-level check (403), then the recording-level one (404) on the catalogue's facts. */
  async #authorizeRecording(p: Principal, action: Action, recordingId: string): Promise<CatalogueRow> {
    const route = authorizeRoute(p, action);
    if (!route.allow) throw new AccessDenied(route.status, route.reason, recordingId);
    const row = await this.#liveRow(recordingId);
    const d = authorize(p, action, row === undefined ? null : recordingFacts(row));
    if (!d.allow) throw new AccessDenied(d.status, d.reason, recordingId);
    return row!;
  }

  #authorizeRoute(p: Principal, action: Action): void {
    const d = authorizeRoute(p, action);
    if (!d.allow) throw new AccessDenied(d.status, d.reason);
  }

  /** Participants of a call with an erasure requested (pending or done): never rendered or extracted (R9). */
  async #erasedParticipants(callId: string): Promise<Set<string>> {
    const { rows } = await this.#o.db.query<{ participant_id: string }>('SELECT participant_id FROM erasures WHERE call_id = $1', [callId]);
    return new Set(rows.map((r) => r.participant_id));
  }

  async #manifest(recordingId: string): Promise<RecordingManifest | undefined> {
    try {
      const m = await this.#store().source.getManifest(recordingId);
      return m.expiresAtMs <= this.#now() ? undefined : m;
    } catch (err) {
      if (isOptinError(err, 'RECORDING_NOT_FOUND')) return undefined;
      throw err;
    }
  }

  async #consentWordsFor(callIds: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (callIds.length === 0) return out;
    const { rows } = await this.#o.db.query<{ call_id: string; status: string; evidence: Record<string, unknown> }>(
      'SELECT call_id, status, evidence FROM consents WHERE call_id = ANY($1) ORDER BY call_id, participant_id',
      [[...new Set(callIds)]],
    );
    for (const r of rows) {
      const list = out.get(r.call_id) ?? [];
      list.push(consentInWords(r.evidence, r.status));
      out.set(r.call_id, list);
    }
    return out;
  }

  // ---- recordings ----------------------------------------------------------------------------

  /** My recordings (agent), my team's (team lead), or all (DPO, metadata): newest first, keyset pages. */
  async list(p: Principal, q: { limit?: number; cursor?: string } = {}): Promise<{ entries: ListEntry[]; nextCursor?: string }> {
    this.#authorizeRoute(p, 'recordings.list');
    const limit = q.limit ?? 50;
    const page =
      p.role === 'dpo'
        ? await listAllRecordings(this.#o.db, { limit, ...(q.cursor === undefined ? {} : { cursor: q.cursor }) })
        : await listRecordings(this.#o.db, { by: p.role === 'agent' ? 'agent' : 'lead', key: p.sub, limit, ...(q.cursor === undefined ? {} : { cursor: q.cursor }) });
    const now = this.#now();
    const rows = page.recordings.filter((r) => r.expiresAt > now && authorize(p, 'recordings.read', recordingFacts(r)).allow);
    const consents = await this.#consentWordsFor(rows.map((r) => r.callId));
    const requests = p.role === 'dpo' ? new Map<string, DeletionRequest>() : await deletionRequestsFor(this.#o.db, rows.map((r) => r.recordingId));
    const ids = rows.map((r) => r.recordingId);
    await this.#record(p, { type: 'access.list', purpose: 'metadata', details: { count: ids.length, recordingIds: ids.slice(0, 500) } });
    const entries = rows.map((r): ListEntry => {
      const req = requests.get(r.recordingId);
      return {
        ...listEntryView(p, r),
        durationMs: r.endedAt === null ? null : Math.max(0, r.endedAt - r.startedAt),
        consent: consents.get(r.callId) ?? ['The consent record of this call is no longer held by the control plane; open the recording for its evidence.'],
        ...(req === undefined ? {} : { deletionRequest: { state: req.state, requestedAt: req.requestedAt, ...(req.closedAt === undefined ? {} : { closedAt: req.closedAt }) } }),
      };
    });
    return { entries, ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }) };
  }

  /** One recording's metadata, its consent evidence in words and the player's timeline. */
  async recording(p: Principal, recordingId: string): Promise<RecordingDetail> {
    const row = await this.#authorizeRecording(p, 'recordings.read', recordingId);
    const m = await this.#manifest(recordingId);
    if (m === undefined) throw new AccessDenied(404, 'not-found', recordingId);
    const excluded = await this.#erasedParticipants(row.callId);
    await this.#record(p, { type: 'access.metadata', purpose: 'metadata', refs: { recordingId } });
    const request = p.role === 'dpo' || p.role === 'extract-operator' ? undefined : (await deletionRequestsFor(this.#o.db, [recordingId])).get(recordingId);
    const facts = recordingFacts(row);
    return {
      view: recordingView(p, m, true),
      timeline: buildTimeline({ participants: m.participants, segments: m.segments, consentEvidence: m.consentEvidence, excluded }),
      consent: consentListInWords(m.consentEvidence),
      ...(request === undefined ? {} : { deletionRequest: request }),
      may: {
        play: authorize(p, 'recordings.play', facts).allow,
        delete: authorize(p, 'recordings.delete', facts).allow,
        requestDeletion: authorize(p, 'deletion.request', facts).allow,
        accessLog: authorizeRoute(p, 'audit.read').allow,
      },
    };
  }

  /**
   * The coaching render (agent left, customer right), cached whole so a player can seek with
   * Range requests. The ffmpeg work runs in the bounded pool (FFMPEG_BUSY when full: 503).
   */
  async play(p: Principal, recordingId: string, o: { purpose: PlayPurpose; format: RenderFormat; range?: string }): Promise<Rendered> {
    const row = await this.#authorizeRecording(p, 'recordings.play', recordingId);
    const store = this.#store();
    const m = await this.#manifest(recordingId);
    if (m === undefined) throw new AccessDenied(404, 'not-found', recordingId);
    const excluded = await this.#erasedParticipants(row.callId);
    const key = `${recordingId}:${m.revision}:${o.format}:${[...excluded].sort().join(',')}`;
    const rendered = await this.renders.getOrCompute(
      key,
      async () => ({ ...(await renderCoaching(store.source, m, o.format, this.renders.maxBytes, { runner: this.#o.pool.run, excluded })), recordingId, callId: row.callId }),
      Math.min(row.expiresAt, m.expiresAtMs),
    );
    // Re-checked after the work: a deletion or erasure that arrived meanwhile wins.
    const still = await this.#liveRow(recordingId);
    const erasedNow = await this.#erasedParticipants(row.callId);
    if (still === undefined || [...erasedNow].some((x) => !excluded.has(x))) {
      this.renders.evictPrefix(`${recordingId}:`);
      throw new AccessDenied(404, 'not-found', recordingId);
    }
    await this.#record(p, {
      type: 'access.play',
      purpose: o.purpose,
      refs: { recordingId },
      details: { format: o.format, range: o.range === undefined ? 'full' : o.range.slice(0, 64), durationMs: rendered.durationMs },
    });
    return rendered;
  }

  // ---- deletion ------------------------------------------------------------------------------

  /** The agent asks their team lead to delete this recording (R9). Idempotent. */
  async requestDeletion(p: Principal, recordingId: string): Promise<{ request: DeletionRequest; created: boolean }> {
    const row = await this.#authorizeRecording(p, 'deletion.request', recordingId);
    const leads = row.participants.filter((x) => x.role === 'agent' && x.subjectId === p.sub).flatMap((x) => (x.teamLeadId === undefined ? [] : [x.teamLeadId]));
    const existing = (await deletionRequestsFor(this.#o.db, [recordingId])).get(recordingId);
    if (existing !== undefined) return { request: existing, created: false };
    await this.#record(p, { type: 'deletion.requested', purpose: 'agent-request', refs: { recordingId } });
    return createDeletionRequest(this.#o.db, { recordingId, requestedBy: p.sub, teamLeadIds: leads, nowMs: this.#now() });
  }

  /** A team lead's queue; an agent's own requests (every state); the DPO's view of all pending ones. */
  async deletionRequests(p: Principal): Promise<DeletionRequest[]> {
    this.#authorizeRoute(p, 'deletion.list');
    const now = this.#now();
    let list: DeletionRequest[];
    if (p.role === 'agent') {
      // Closes the requests whose recording went another way first, so their state is current.
      await pendingDeletionRequests(this.#o.db, { requestedBy: p.sub }, now);
      list = await deletionRequestsBy(this.#o.db, p.sub);
    } else {
      list = await pendingDeletionRequests(this.#o.db, p.role === 'team-lead' ? { teamLeadId: p.sub } : {}, now);
    }
    await this.#record(p, { type: 'access.deletion-requests', purpose: 'deletion', details: { count: list.length, recordingIds: list.map((r) => r.recordingId).slice(0, 500) } });
    // Agents see their own request, not which team leads it went to.
    return p.role === 'agent' ? list.map(({ teamLeadIds: _t, ...r }) => ({ ...r, teamLeadIds: [] })) : list;
  }

  /**
   * The team lead deletes (R9): recorded in the audit trail first, then one transaction takes
   * the ledger's deletion (tombstone, `recording.deleted` fact, catalogue row marked deleted)
   * and closes the agent's request. This replica drops its renders and extracts of the
   * recording before answering; the others follow the fact. The store deletion is the
   * sweeper's (kicked now); its receipt appears at GET /api/deletions/{id}.
   */
  async deleteRecording(p: Principal, recordingId: string): Promise<{ deletionId: string; requestClosed: boolean }> {
    await this.#authorizeRecording(p, 'recordings.delete', recordingId);
    const pending = (await deletionRequestsFor(this.#o.db, [recordingId])).get(recordingId);
    const reason = pending?.state === 'pending' ? 'agent-request' : 'team-lead-decision';
    await this.#record(p, { type: 'access.delete', purpose: reason, refs: { recordingId }, details: { requested: pending?.state === 'pending' } });
    const nowMs = this.#now();
    const result = await this.#o.db.transaction(async (tx) => {
      const d = await ledgerRequestDeletion(tx, { recordingId, actor: p.sub, reason: 'team-lead', nowMs });
      const closed = await closeDeletionRequest(tx, { recordingId, by: p.sub, deletionId: d.deletionId, nowMs });
      return { deletionId: d.deletionId, requestClosed: closed };
    });
    await this.forgetRecording(recordingId, undefined, 'the recording was deleted by its team lead');
    this.#o.kickSweeper?.();
    return result;
  }

  /** Status and receipt of a deletion: the team lead who made it, or the DPO. */
  async deletion(p: Principal, deletionId: string): Promise<DeletionStatus> {
    this.#authorizeRoute(p, 'deletion.receipt');
    const row = ID_PATTERN.test(deletionId) ? await getDeletion(this.#o.db, deletionId) : undefined;
    if (row === undefined || (p.role === 'team-lead' && row.actor !== p.sub)) throw new AccessDenied(404, row === undefined ? 'not-found' : 'not-own-deletion');
    await this.#record(p, { type: 'access.deletion-receipt', purpose: 'deletion', refs: { recordingId: row.recording_id }, details: { deletionId } });
    return { deletionId: row.id, recordingId: row.recording_id, state: row.state, requestedAt: row.requested_at_ms, completedAt: row.completed_at_ms, actor: row.actor, receipt: row.receipt };
  }

  // ---- extracts ------------------------------------------------------------------------------

  async createExtract(p: Principal, input: { subjectId: string; caseRef: string; format: ExtractFormat }): Promise<ExtractJob> {
    this.#authorizeRoute(p, 'extract.create');
    this.#store();
    return this.extracts.create({ owner: p.sub, ...input });
  }

  async #runExtract(job: Pick<ExtractJob, 'id' | 'owner' | 'subjectId' | 'caseRef' | 'format'>, hooks: { signal: AbortSignal; onProgress: (x: { done: number; total: number }) => void; maxBytes: number }) {
    const store = this.#store();
    const audit = this.#o.audit;
    if (audit === undefined) throw new OptinError('AUDIT_UNAVAILABLE', 'no audit trail: an extract cannot be recorded, so it is not made (R11)');
    const rows = await recordingsOfSubject(this.#o.db, job.subjectId);
    this.extracts.planned(job.id, rows.map((r) => r.recordingId));
    const erased = new Map<string, Set<string>>();
    for (const r of rows) erased.set(r.recordingId, await this.#erasedParticipants(r.callId));
    return createExtract(
      { store: store.source, audit },
      { subjectId: job.subjectId, caseRef: job.caseRef, format: job.format, actor: job.owner },
      {
        extractId: job.id,
        candidates: rows.map((r) => r.recordingId),
        skip: (rid, pid) => erased.get(rid)?.has(pid) ?? false,
        runner: this.#o.pool.run,
        signal: hooks.signal,
        onProgress: hooks.onProgress,
        maxBytes: hooks.maxBytes,
        now: this.#now,
      },
    );
  }

  /** The operator's own jobs. */
  async extractJobs(p: Principal): Promise<ExtractJob[]> {
    this.#authorizeRoute(p, 'extract.list');
    const jobs = await this.extracts.list(p.sub);
    await this.#record(p, { type: 'access.extract-jobs', purpose: 'subject-access', details: { count: jobs.length } });
    return jobs;
  }

  /** One of the operator's jobs (its progress); someone else's is a 404 like a missing one. */
  async extractJob(p: Principal, jobId: string): Promise<ExtractJob> {
    this.#authorizeRoute(p, 'extract.list');
    const job = ID_PATTERN.test(jobId) ? await this.extracts.get(jobId) : undefined;
    if (job === undefined) throw new AccessDenied(404, 'not-found');
    if (job.owner !== p.sub) throw new AccessDenied(404, 'not-own-extract');
    return job;
  }

  /**
   * A file of a ready package, for its owner, under its case reference. Every recording in it is
   * checked again first: one deleted, expired or erased since withdraws the whole package.
   */
  async extractFile(p: Principal, jobId: string, name: string, caseRef: string): Promise<ExtractFile> {
    this.#authorizeRoute(p, 'extract.read');
    const held = this.extracts.package(jobId);
    if (held === undefined) {
      const job = ID_PATTERN.test(jobId) ? await this.extracts.get(jobId) : undefined;
      if (job !== undefined && job.owner === p.sub && job.state === 'ready' && job.replicaId !== this.#o.replicaId) {
        throw new OptinError('EXTRACT_STORE_FULL', `this package is held by control-plane replica ${job.replicaId}; download it through that replica (sticky sessions)`, { retryable: true });
      }
      if (job !== undefined && job.owner === p.sub && (job.state === 'withdrawn' || job.state === 'expired')) {
        throw new OptinError('EXTRACT_WITHDRAWN', job.state === 'expired' ? 'this extract has expired; start it again' : 'this extract was withdrawn: a recording in it was deleted or its subject erased');
      }
      throw new AccessDenied(404, 'not-found');
    }
    if (held.owner !== p.sub) throw new AccessDenied(404, 'not-own-extract');
    if (held.pkg.caseRef !== caseRef) throw new AccessDenied(404, 'case-mismatch');
    const file = held.pkg.files.find((f) => f.name === name);
    if (file === undefined) throw new AccessDenied(404, 'not-found');
    for (const item of held.pkg.items) {
      const row = await this.#liveRow(item.recordingId);
      const erased = row === undefined ? new Set<string>() : await this.#erasedParticipants(row.callId);
      if (row === undefined || erased.has(item.participantId) || item.expiresAtMs <= this.#now()) {
        await this.extracts.withdraw(item.recordingId, undefined, 'a recording in it was deleted, expired or erased');
        throw new OptinError('EXTRACT_WITHDRAWN', 'this extract was withdrawn: a recording in it was deleted, expired or its subject erased');
      }
    }
    const recordingId = held.pkg.items.find((i) => i.file === name)?.recordingId;
    await this.#record(p, {
      type: 'extract.download',
      purpose: 'subject-access',
      refs: { subjectId: held.pkg.subjectId },
      details: { extractId: jobId, caseRef, file: name, ...(recordingId ? { recordingIds: [recordingId] } : {}) },
    });
    return file;
  }

  // ---- the DPO -------------------------------------------------------------------------------

  async auditEntries(p: Principal, q: { from?: string; to?: string; type?: string; limit: number }): Promise<{ count: number; truncated: boolean; entries: AuditEntry[] }> {
    this.#authorizeRoute(p, 'audit.read');
    const audit = this.#audit();
    const entries = await audit.list({ ...(q.from ? { from: q.from } : {}), ...(q.to ? { to: q.to } : {}), ...(q.type ? { type: q.type } : {}) });
    await this.#record(p, { type: 'access.audit', purpose: 'accountability', details: { count: entries.length, ...(q.from ? { from: q.from } : {}), ...(q.to ? { to: q.to } : {}), ...(q.type ? { filterType: q.type } : {}) } });
    return { count: entries.length, truncated: entries.length > q.limit, entries: entries.slice(0, q.limit) };
  }

  /** Who accessed a recording, and how (the trail's entries about it; also after its deletion). */
  async accessLog(p: Principal, recordingId: string): Promise<{ recordingId: string; row?: CatalogueRow; entries: AuditEntry[] }> {
    this.#authorizeRoute(p, 'audit.read');
    if (!ID_PATTERN.test(recordingId)) throw new AccessDenied(404, 'not-found');
    const audit = this.#audit();
    const all = await audit.list();
    const entries = all.filter((e) => {
      if (e.refs.recordingId === recordingId) return true;
      const ids = (e.details as { recordingIds?: unknown }).recordingIds;
      return Array.isArray(ids) && ids.includes(recordingId);
    });
    await this.#record(p, { type: 'access.audit', purpose: 'accountability', refs: { recordingId }, details: { count: entries.length, view: 'access-log' } });
    const row = await getRecording(this.#o.db, recordingId);
    return { recordingId, ...(row === undefined ? {} : { row }), entries };
  }

  async verifyAudit(p: Principal): Promise<AuditVerifyResult & { brokenAt?: AuditVerifyResult['brokenAt'] & { explanation?: string } }> {
    this.#authorizeRoute(p, 'audit.verify');
    const result = await this.#audit().verify();
    await this.#record(p, { type: 'access.audit-verify', purpose: 'accountability', details: { ok: result.ok, entries: result.entries } });
    const explain = <T extends { reason: keyof typeof BREAK_EXPLANATION }>(b: T | undefined) => (b === undefined ? undefined : { ...b, explanation: BREAK_EXPLANATION[b.reason] });
    return {
      ...result,
      ...(result.brokenAt ? { brokenAt: explain(result.brokenAt)! } : {}),
      streams: result.streams.map((s) => ({ ...s, ...(s.brokenAt ? { brokenAt: explain(s.brokenAt)! } : {}) })),
    };
  }

  /** The compliance report (store, trail, ledger), arranged per rule R3-R11. */
  async compliance(p: Principal, o: { sample?: number } = {}): Promise<{ generatedAt: string; ok: boolean; scope: Record<string, number>; sections: RuleSection[]; notes: string[] }> {
    this.#authorizeRoute(p, 'compliance.read');
    const store = this.#store();
    const audit = this.#audit();
    const nowMs = this.#now();
    const facts = await collectComplianceFacts(
      { store: { buckets: store.buckets, listRecordings: () => store.source.listRecordings(), getManifest: (id) => store.source.getManifest(id) }, s3: store.s3, audit, rolesForAuditType, now: this.#now },
      o.sample === undefined ? {} : { sample: o.sample },
    );
    const report = evaluateCompliance(facts, rolesForAuditType);
    const extra = await ledgerChecks(this.#o.db, { nowMs, manifestIds: new Set(facts.manifests.map((m) => m.recordingId)) });
    const verify = await audit.verify();
    const sections = reportByRule(report, extra, { ok: verify.ok, ...(verify.brokenAt ? { brokenAt: verify.brokenAt } : {}) });
    const ok = sections.every((s) => s.status !== 'violated');
    await this.#record(p, { type: 'access.compliance', purpose: 'accountability', details: { ok, violations: sections.reduce((n, s) => n + s.checks.reduce((m, c) => m + c.violations.length, 0), 0), checked: report.scope.checked } });
    return { generatedAt: report.generatedAt, ok, scope: report.scope, sections, notes: report.notes };
  }

  /** A random sample of recordings with their consent, window, cap and expiry judged; never audio. */
  async spotCheck(p: Principal, n: number): Promise<SpotCheckItem[]> {
    this.#authorizeRoute(p, 'spotcheck.read');
    const rows = await sampleRecordings(this.#o.db, n);
    const now = this.#now();
    const items: SpotCheckItem[] = [];
    for (const r of rows) {
      const m = this.#o.store === undefined ? null : ((await this.#manifest(r.recordingId)) ?? null);
      const month = monthKey(r.startedAt);
      const [y, mo] = month.split('-').map(Number) as [number, number];
      const from = Date.UTC(y, mo - 1, 1);
      const to = Date.UTC(y, mo, 1);
      const agent = r.agentIds[0];
      const { rows: capRows } = agent === undefined ? { rows: [] as { count: number }[] } : await this.#o.db.query<{ count: number }>('SELECT count FROM cap_counts WHERE agent_id = $1 AND month = $2', [agent, month]);
      const counted = agent === undefined ? undefined : Math.max(capRows[0]?.count ?? 0, await countAgentRecordings(this.#o.db, agent, from, to));
      items.push(judgeSpotCheck({ recordingId: r.recordingId, startedAtMs: r.startedAt, expiresAtMs: r.expiresAt, agentIds: r.agentIds, manifest: m, month, ...(counted === undefined ? {} : { countThatMonth: counted }) }, now));
    }
    await this.#record(p, { type: 'access.spot-check', purpose: 'accountability', details: { count: items.length, recordingIds: items.map((i) => i.recordingId) } });
    return items;
  }

  #audit(): AccessAudit {
    if (this.#o.audit === undefined) throw new OptinError('AUDIT_UNAVAILABLE', 'the control plane has no audit trail configured (OPTIN_S3_* and OPTIN_KEYRING)');
    return this.#o.audit;
  }

  // ---- following deletions and erasures --------------------------------------------------------

  /**
   * Drops this replica's renders of a recording and withdraws its extracts holding it (of one
   * participant only, when given). Memory first: the audio is gone when the first await starts.
   */
  async forgetRecording(recordingId: string, participantId: string | undefined, why: string): Promise<void> {
    this.renders.evictPrefix(`${recordingId}:`);
    await this.extracts.withdraw(recordingId, participantId, why).catch((err: unknown) => this.#log.warn({ recordingId, err: (err as Error).message }, 'withdrawing extracts failed'));
  }

  /** The fact log's deletions and erasures (every replica's FactFollower calls this). */
  async onFacts(facts: readonly StoredFact[]): Promise<void> {
    for (const { fact } of facts) await this.#onFact(fact);
  }

  async #onFact(fact: FactV2): Promise<void> {
    switch (fact.type) {
      case 'recording.deleted':
        await this.forgetRecording(fact.recordingId, fact.participantId, fact.participantId === undefined ? 'the recording was deleted' : 'a participant\u2019s part was deleted');
        return;
      case 'erasure.requested': {
        // The render holds every side: it goes whole. Extracts go for the erased participant's tracks.
        const ids = new Set(fact.recordingIds);
        for (const key of this.renders.keys()) {
          const v = this.renders.get(key);
          if (v?.callId === fact.callId) ids.add(v.recordingId);
        }
        const { rows } = await this.#o.db.query<{ recording_id: string }>('SELECT recording_id FROM recordings WHERE call_id = $1', [fact.callId]).catch(() => ({ rows: [] as { recording_id: string }[] }));
        for (const r of rows) ids.add(r.recording_id);
        for (const rid of ids) {
          this.renders.evictPrefix(`${rid}:`);
          await this.extracts.withdraw(rid, fact.participantId, 'its subject asked for erasure').catch(() => undefined);
        }
        return;
      }
      default:
        return;
    }
  }

  /** Daily housekeeping of this service's rows (R8): closed requests and finished jobs. */
  async purge(): Promise<void> {
    const cutoff = this.#now() - this.#o.retentionSeconds * 1000;
    await purgeDeletionRequests(this.#o.db, cutoff);
    await this.extracts.purgeRows(this.#now() - 24 * 3600_000);
  }
}
