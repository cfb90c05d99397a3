import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Client } from 'minio';
import type { AuditEntry, AuditInput, AuditListQuery, AuditVerifyResult } from '../audit/AuditTrail.ts';
import { BREAK_EXPLANATION } from '../audit/chain.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { httpStatusOf } from '../errors/errorTable.ts';
import { sendJson, type RouteGroup } from '../http/HttpServer.ts';
import type { Logger } from '../log/logger.ts';
import { type BucketNames } from '../storage/layout.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import type { DeletionReceipt, RecordingSource } from '../storage/types.ts';
import { complianceReport } from '../compliance/report.ts';
import { AuthError, authenticate, type Principal } from './auth.ts';
import { BoundedCache } from './BoundedCache.ts';
import { renderCoaching, type RenderFormat, type RenderedPlayback } from './coaching.ts';
import { DeletionRequests, type DeletionRequest } from './DeletionRequests.ts';
import { createExtract, validateExtractRequest } from './extract.ts';
import { ExtractStore } from './ExtractStore.ts';
import { CASE_REF_RE, authorize, authorizeRoute, mayList, recordingFacts, recordingView, rolesForAuditType, type Action, type DenyReason, type RecordingFacts } from './policy.ts';
import { parseRange } from './range.ts';
import { ID_CAPTURE, ID_PATTERN } from '../ids/ids.ts';

/**
 * The access API (docs/architecture.md §6; R1, R9-R12 in docs/rules.md): recordings for coaching, subject-access extracts,
 * deletion, the audit trail and the compliance report. Every route is authenticated
 * (src/access/auth.ts), authorized by the pure rules of src/access/policy.ts, and audited:
 *
 * - every allowed access appends its entry BEFORE the data leaves (if the audit trail cannot
 *   take it, the request fails with 503: no unrecorded access, R11);
 * - every denial (401/403/404 of the policy) appends `access.denied` with actor, role, route and
 *   reason (pseudonymous ids only; never the token). Denials are rate-limited per window so a
 *   flood of bad requests cannot flood the append-only trail; what was suppressed is counted in
 *   the next denial entry.
 *
 * docs/openapi.yaml documents every route, parameter, response and error.
 */

/** The read side (RecordingSource) plus deletion: the worker's RecordingStore. */
export interface AccessStoreApi extends RecordingSource {
  readonly buckets: Readonly<BucketNames>;
  deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<DeletionReceipt>;
}

export interface AccessAuditApi {
  append(input: AuditInput): Promise<unknown>;
  list(query?: AuditListQuery): Promise<AuditEntry[]>;
  verify(opts?: { stream?: string }): Promise<AuditVerifyResult>;
}

export interface AccessRoutesOptions {
  store: AccessStoreApi;
  audit: AccessAuditApi;
  /** The S3 client of the store (deletion requests in the keys bucket, compliance listings). */
  s3: Client;
  /** HS256 secret (http.jwtSecret); without it every /api route answers 503. */
  jwtSecret: string | undefined;
  issuer?: string;
  audience?: string;
  logger: Logger;
  /** Coaching render cache: total bytes (default 128 MiB: ~4 h of stereo Opus) and entry lifetime (default 10 min). */
  renderCacheBytes?: number;
  renderCacheTtlMs?: number;
  /** Extracts held for download: total bytes (default 256 MiB) and lifetime (default 15 min). */
  extractMaxBytes?: number;
  extractTtlMs?: number;
  /** At most this many denial entries per window (default 200 per 10 s); the rest are counted. */
  denialAuditMax?: number;
  denialAuditWindowMs?: number;
  now?: () => number;
}

/** Purposes a playback may declare (R1: recordings serve training and coaching only). */
export const PLAY_PURPOSES = ['coaching', 'training'] as const;
const MAX_BODY_BYTES = 16 * 1024;
const MAX_AUDIT_LIMIT = 10_000;
const TYPE_RE = /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$/;

const ID = ID_CAPTURE;

/** Every route of the API (docs/openapi.yaml documents each; a test keeps the two in step). */
export const ACCESS_ROUTES = [
  { method: 'GET', pattern: /^\/api\/recordings$/, template: 'GET /api/recordings', action: 'recordings.list' },
  { method: 'GET', pattern: new RegExp(`^/api/recordings/${ID}$`), template: 'GET /api/recordings/{id}', action: 'recordings.read' },
  { method: 'DELETE', pattern: new RegExp(`^/api/recordings/${ID}$`), template: 'DELETE /api/recordings/{id}', action: 'recordings.delete' },
  { method: 'GET', pattern: new RegExp(`^/api/recordings/${ID}/play$`), template: 'GET /api/recordings/{id}/play', action: 'recordings.play' },
  { method: 'POST', pattern: new RegExp(`^/api/recordings/${ID}/deletion-requests$`), template: 'POST /api/recordings/{id}/deletion-requests', action: 'deletion.request' },
  { method: 'GET', pattern: /^\/api\/deletion-requests$/, template: 'GET /api/deletion-requests', action: 'deletion.list' },
  { method: 'POST', pattern: /^\/api\/extracts$/, template: 'POST /api/extracts', action: 'extract.create' },
  {
    method: 'GET',
    pattern: new RegExp(`^/api/extracts/${ID}/files/([A-Za-z0-9_-]{1,64}\\.(?:ogg|wav|json))$`),
    template: 'GET /api/extracts/{extractId}/files/{name}',
    action: 'extract.read',
  },
  { method: 'GET', pattern: /^\/api\/audit$/, template: 'GET /api/audit', action: 'audit.read' },
  { method: 'GET', pattern: /^\/api\/audit\/verify$/, template: 'GET /api/audit/verify', action: 'audit.verify' },
  { method: 'GET', pattern: /^\/api\/compliance$/, template: 'GET /api/compliance', action: 'compliance.read' },
] as const satisfies ReadonlyArray<{ method: 'GET' | 'POST' | 'DELETE'; pattern: RegExp; template: string; action: Action }>;

export type RouteTemplate = (typeof ACCESS_ROUTES)[number]['template'];

/** An error answer. `deny` marks a policy denial: it is audited as `access.denied`. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
    readonly deny?: { reason: DenyReason | string; recordingId?: string },
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const DENY_MESSAGES: Record<number, string> = {
  403: 'your role may not use this route',
  404: 'no such resource',
};

function denied(status: 403 | 404, reason: string, recordingId?: string): HttpError {
  return new HttpError(status, status === 403 ? 'forbidden' : 'not-found', DENY_MESSAGES[status]!, { reason, ...(recordingId ? { recordingId } : {}) });
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  principal: Principal;
  /** Route template, e.g. 'GET /api/recordings/{id}' (what denials record). */
  route: string;
  params: string[];
}


function param(url: URL, name: string): string | undefined {
  const v = url.searchParams.get(name);
  return v === null ? undefined : v;
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'body-too-large', `the request body must be at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(c as Buffer);
  }
  if (size === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid-json', 'the request body is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(400, 'invalid-json', 'the request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

/** Sends bytes with Range support (one range; RFC 9110 §14). */
function sendBytes(req: IncomingMessage, res: ServerResponse, bytes: Buffer, contentType: string, filename: string, disposition: 'inline' | 'attachment'): { status: number; range: string } {
  const etag = `"${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`;
  const ifRange = req.headers['if-range'];
  const honourRange = ifRange === undefined || ifRange === etag;
  const range = parseRange(honourRange ? (req.headers.range as string | undefined) : undefined, bytes.length);
  const common = {
    'accept-ranges': 'bytes',
    etag,
    // Audio of people: never in shared caches, never kept by the browser beyond the session.
    'cache-control': 'private, no-store',
    'content-disposition': `${disposition}; filename="${filename}"`,
    'x-content-type-options': 'nosniff',
  };
  if (range.kind === 'unsatisfiable') {
    res.writeHead(416, { ...common, 'content-range': `bytes */${bytes.length}`, 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ error: 'range-not-satisfiable', message: `the representation has ${bytes.length} bytes` }));
    return { status: 416, range: 'unsatisfiable' };
  }
  if (range.kind === 'partial') {
    res.writeHead(206, { ...common, 'content-type': contentType, 'content-length': String(range.end - range.start + 1), 'content-range': `bytes ${range.start}-${range.end}/${bytes.length}` });
    res.end(bytes.subarray(range.start, range.end + 1));
    return { status: 206, range: `${range.start}-${range.end}` };
  }
  res.writeHead(200, { ...common, 'content-type': contentType, 'content-length': String(bytes.length) });
  res.end(bytes);
  return { status: 200, range: 'full' };
}

/**
 * Maps an error to an HTTP answer. The status comes from the error table (src/errors/errorTable.ts);
 * what is said depends on its kind: a caller's mistake is explained, a dependency's outage asks for a
 * retry, and anything of ours is a bare 500 that shows nothing of the inside.
 */
function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (!isOptinError(err)) return new HttpError(500, 'internal', 'internal error');
  const status = httpStatusOf(err.code);
  switch (err.kind) {
    case 'invalid-input':
      return new HttpError(status, 'invalid-request', err.message);
    case 'gone':
      return new HttpError(status, 'gone', 'the recording (or part of it) was deleted or expired');
    case 'too-large':
      return new HttpError(status, 'too-large', err.message);
    case 'conflict':
      return new HttpError(status, err.code === 'OBJECT_LOCKED' ? 'object-locked' : err.code === 'RECORDING_EMPTY' ? 'no-audio' : 'conflict', err.message);
    case 'unavailable':
    case 'timeout':
      return new HttpError(503, 'unavailable', err.fault === 'dependency' ? 'the store is not reachable right now; retry shortly' : err.message, undefined, {
        'retry-after': err.fault === 'dependency' ? '10' : '30',
      });
    default:
      return new HttpError(500, 'internal', 'internal error');
  }
}

export interface AccessRoutes {
  group: RouteGroup;
  /** Forgets cached renders and held extracts (tests; shutdown). */
  clearCaches(): void;
}

/** The access API as a route group for src/http/HttpServer.ts. */
export function accessRoutes(o: AccessRoutesOptions): AccessRoutes {
  const now = o.now ?? Date.now;
  const log = o.logger.child({ component: 'access' });
  const renders = new BoundedCache<RenderedPlayback>({ maxBytes: o.renderCacheBytes ?? 128 * 1024 * 1024, ttlMs: o.renderCacheTtlMs ?? 10 * 60_000, now });
  const extracts = new ExtractStore({ maxBytes: o.extractMaxBytes ?? 256 * 1024 * 1024, ttlMs: o.extractTtlMs ?? 15 * 60_000, now });
  const requests = new DeletionRequests({ client: o.s3, bucket: o.store.buckets.keys });
  const authOptions = { secret: o.jwtSecret ?? '', ...(o.issuer ? { issuer: o.issuer } : {}), ...(o.audience ? { audience: o.audience } : {}), now };

  // ---- audit helpers ----

  /** Appends an access entry; fails the request (503) when the trail cannot take it. */
  async function record(p: Principal, input: Omit<AuditInput, 'actor' | 'role'>): Promise<void> {
    try {
      await o.audit.append({ ...input, actor: p.sub, role: p.role });
    } catch (err) {
      log.error({ type: input.type, err: (err as Error).message }, 'audit append failed; access refused');
      throw new OptinError('AUDIT_UNAVAILABLE', 'the access could not be written to the audit trail, so it is refused (R11); retry shortly', { retryable: true });
    }
  }

  const denialWindow = { startedAt: 0, count: 0, suppressed: 0 };
  const denialMax = o.denialAuditMax ?? 200;
  const denialWindowMs = o.denialAuditWindowMs ?? 10_000;

  async function recordDenial(p: Principal | undefined, route: string, status: number, reason: string, recordingId?: string): Promise<void> {
    const t = now();
    if (t - denialWindow.startedAt >= denialWindowMs) {
      denialWindow.startedAt = t;
      denialWindow.count = 0;
    }
    if (denialWindow.count >= denialMax) {
      denialWindow.suppressed += 1;
      return;
    }
    denialWindow.count += 1;
    const suppressed = denialWindow.suppressed;
    denialWindow.suppressed = 0;
    try {
      await o.audit.append({
        type: 'access.denied',
        actor: p?.sub ?? 'anonymous',
        role: p?.role ?? 'none',
        purpose: 'access-control',
        refs: recordingId !== undefined && ID_PATTERN.test(recordingId) ? { recordingId } : {},
        details: { route, status, reason, ...(suppressed > 0 ? { suppressedBefore: suppressed } : {}) },
      });
    } catch (err) {
      // The denial itself stands; losing its record is logged loudly for the DPO.
      log.error({ route, status, reason, err: (err as Error).message }, 'audit of a denial failed');
    }
  }

  // ---- facts ----

  /** The manifest, or null when it does not exist or has expired (legally gone). */
  async function manifestOrNull(recordingId: string): Promise<RecordingManifest | null> {
    if (!ID_PATTERN.test(recordingId)) return null;
    try {
      const m = await o.store.getManifest(recordingId);
      return m.expiresAtMs <= now() ? null : m;
    } catch (err) {
      if (isOptinError(err, 'RECORDING_NOT_FOUND')) return null;
      throw err;
    }
  }

  async function allManifests(): Promise<RecordingManifest[]> {
    const summaries = await o.store.listRecordings();
    const out: RecordingManifest[] = [];
    // Bounded parallelism: a listing reads every manifest.
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(8, summaries.length) }, async () => {
        while (next < summaries.length) {
          const m = await manifestOrNull(summaries[next++]!.recordingId);
          if (m !== null) out.push(m);
        }
      }),
    );
    return out.sort((a, b) => a.startedAtMs - b.startedAtMs);
  }

  /** Loads a recording and applies the policy: the manifest and its facts, or a denial. */
  async function recordingFor(ctx: Ctx, action: Action): Promise<{ manifest: RecordingManifest; facts: RecordingFacts }> {
    const id = ctx.params[0]!;
    const m = await manifestOrNull(id);
    const facts = m === null ? null : recordingFacts(m);
    const d = authorize(ctx.principal, action, facts);
    if (!d.allow) throw denied(d.status, d.reason, id);
    return { manifest: m!, facts: facts! };
  }

  // ---- handlers ----

  async function listRecordings(ctx: Ctx): Promise<void> {
    const visible = (await allManifests()).filter((m) => mayList(ctx.principal, recordingFacts(m)));
    const ids = visible.map((m) => m.recordingId);
    await record(ctx.principal, { type: 'access.list', purpose: 'metadata', details: { count: ids.length, recordingIds: ids.slice(0, 500) } });
    sendJson(ctx.res, 200, { recordings: visible.map((m) => recordingView(ctx.principal, m, false)) });
  }

  async function getRecording(ctx: Ctx): Promise<void> {
    const { manifest } = await recordingFor(ctx, 'recordings.read');
    await record(ctx.principal, { type: 'access.metadata', purpose: 'metadata', refs: { recordingId: manifest.recordingId } });
    sendJson(ctx.res, 200, recordingView(ctx.principal, manifest, true));
  }

  async function play(ctx: Ctx): Promise<void> {
    const purpose = param(ctx.url, 'purpose');
    if (purpose === undefined) throw new HttpError(400, 'purpose-required', `say why you play the recording: purpose=${PLAY_PURPOSES.join('|')}`);
    if (!(PLAY_PURPOSES as readonly string[]).includes(purpose)) {
      throw new HttpError(400, 'purpose-not-allowed', `recordings are played for ${PLAY_PURPOSES.join(' or ')} only (R1)`);
    }
    const format = (param(ctx.url, 'format') ?? 'ogg') as RenderFormat;
    if (format !== 'ogg' && format !== 'wav') throw new HttpError(400, 'invalid-request', 'format must be ogg or wav');
    const { manifest } = await recordingFor(ctx, 'recordings.play');
    const key = `${manifest.recordingId}:${manifest.revision}:${format}`;
    const rendered = await renders.getOrCompute(key, () => renderCoaching(o.store, manifest, format, renders.maxBytes));
    const rangeHeader = ctx.req.headers.range;
    await record(ctx.principal, {
      type: 'access.play',
      purpose,
      refs: { recordingId: manifest.recordingId },
      details: { format, range: typeof rangeHeader === 'string' ? rangeHeader.slice(0, 64) : 'full', durationMs: rendered.durationMs },
    });
    sendBytes(ctx.req, ctx.res, rendered.bytes, rendered.contentType, `${manifest.recordingId}-coaching.${format}`, 'inline');
  }

  async function requestDeletion(ctx: Ctx): Promise<void> {
    const { manifest, facts } = await recordingFor(ctx, 'deletion.request');
    const { request, created } = await requests.create({
      recordingId: manifest.recordingId,
      requestedBy: ctx.principal.sub,
      teamLeadIds: facts.agents.filter((a) => a.subjectId === ctx.principal.sub).flatMap((a) => (a.teamLeadId ? [a.teamLeadId] : [])),
      nowMs: now(),
    });
    if (created) await record(ctx.principal, { type: 'deletion.requested', purpose: 'agent-request', refs: { recordingId: manifest.recordingId } });
    sendJson(ctx.res, created ? 201 : 200, { request, created });
  }

  async function listDeletionRequests(ctx: Ctx): Promise<void> {
    const p = ctx.principal;
    const visible: DeletionRequest[] = [];
    for (const r of await requests.list()) {
      const mine = p.role === 'dpo' || (p.role === 'agent' && r.requestedBy === p.sub) || (p.role === 'team-lead' && r.teamLeadIds.includes(p.sub));
      if (!mine) continue;
      // A request whose recording has gone (expired, deleted by another path) is closed here.
      if ((await manifestOrNull(r.recordingId)) === null) {
        await requests.close(r.recordingId).catch(() => undefined);
        continue;
      }
      visible.push(r);
    }
    const view = visible.map((r) => (p.role === 'team-lead' || p.role === 'dpo' ? r : { ...r, teamLeadIds: undefined }));
    await record(p, { type: 'access.deletion-requests', purpose: 'deletion', details: { count: visible.length, recordingIds: visible.map((r) => r.recordingId).slice(0, 500) } });
    sendJson(ctx.res, 200, { requests: view });
  }

  async function deleteRecording(ctx: Ctx): Promise<void> {
    const { manifest } = await recordingFor(ctx, 'recordings.delete');
    const rid = manifest.recordingId;
    const pending = await requests.get(rid);
    const reason = pending !== null ? 'agent-request' : 'team-lead-decision';
    // Recorded first: if the trail is down, nothing is deleted (and the lead can retry).
    await record(ctx.principal, { type: 'access.delete', purpose: reason, refs: { recordingId: rid }, details: { requested: pending !== null } });
    const receipt = await o.store.deleteRecording(rid, { reason, actor: ctx.principal.sub });
    // R9: every copy, including the ones this process holds in memory.
    renders.evictPrefix(`${rid}:`);
    extracts.dropRecording(rid);
    if (pending !== null) await requests.close(rid).catch((err: Error) => log.warn({ recordingId: rid, err: err.message }, 'deletion done; closing its request failed'));
    sendJson(ctx.res, 200, { receipt, requestClosed: pending !== null });
  }

  async function postExtract(ctx: Ctx): Promise<void> {
    const body = await readJsonBody(ctx.req);
    const input = validateExtractRequest({
      subjectId: body.subjectId,
      caseRef: body.caseRef ?? param(ctx.url, 'caseRef'),
      format: body.format ?? param(ctx.url, 'format'),
    });
    const pkg = await createExtract({ store: o.store, audit: o.audit }, { ...input, actor: ctx.principal.sub }, { maxBytes: extracts.free(), now });
    const held = extracts.add(pkg, ctx.principal.sub);
    const base = `/api/extracts/${pkg.extractId}/files/`;
    sendJson(ctx.res, 201, {
      extractId: pkg.extractId,
      caseRef: pkg.caseRef,
      subjectId: pkg.subjectId,
      expiresAt: new Date(held.expiresAtMs).toISOString(),
      manifest: pkg.manifest,
      files: pkg.files.map((f) => ({
        name: f.name,
        contentType: f.contentType,
        bytes: f.bytes.length,
        sha256: f.sha256,
        url: `${base}${encodeURIComponent(f.name)}?caseRef=${encodeURIComponent(pkg.caseRef)}`,
      })),
    });
  }

  async function getExtractFile(ctx: Ctx): Promise<void> {
    const caseRef = param(ctx.url, 'caseRef');
    if (caseRef === undefined || !CASE_REF_RE.test(caseRef)) {
      throw new HttpError(400, 'case-ref-required', 'every extract request carries the caseRef of its subject-access request: ?caseRef=...');
    }
    const [extractId, name] = ctx.params as [string, string];
    const held = extracts.get(extractId);
    // Someone else's extract, another case, or an unknown or expired id: all the same 404.
    if (held === undefined) throw denied(404, 'not-found');
    if (held.owner !== ctx.principal.sub) throw denied(404, 'not-own-extract');
    if (held.pkg.caseRef !== caseRef) throw denied(404, 'case-mismatch');
    const file = held.pkg.files.find((f) => f.name === name);
    if (file === undefined) throw new HttpError(404, 'not-found', 'no such file in this extract');
    const recordingId = held.pkg.manifest.recordings.find((r) => r.audio.name === name)?.recordingId;
    await record(ctx.principal, {
      type: 'extract.download',
      purpose: 'subject-access',
      refs: { subjectId: held.pkg.subjectId },
      details: { extractId, caseRef, file: name, ...(recordingId ? { recordingIds: [recordingId] } : {}) },
    });
    sendBytes(ctx.req, ctx.res, file.bytes, file.contentType, name, 'attachment');
  }

  async function getAudit(ctx: Ctx): Promise<void> {
    const from = param(ctx.url, 'from');
    const to = param(ctx.url, 'to');
    const type = param(ctx.url, 'type');
    const limitText = param(ctx.url, 'limit');
    for (const [n, v] of [['from', from], ['to', to]] as const) {
      if (v !== undefined && Number.isNaN(Date.parse(v))) throw new HttpError(400, 'invalid-request', `${n} must be an ISO 8601 instant`);
    }
    if (type !== undefined && (type.length > 64 || !TYPE_RE.test(type))) throw new HttpError(400, 'invalid-request', 'type must be a dotted lowercase entry type, e.g. access.play');
    const limit = limitText === undefined ? 1000 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_LIMIT) throw new HttpError(400, 'invalid-request', `limit must be an integer from 1 to ${MAX_AUDIT_LIMIT}`);
    const entries = await o.audit.list({ ...(from ? { from } : {}), ...(to ? { to } : {}), ...(type ? { type } : {}) });
    await record(ctx.principal, { type: 'access.audit', purpose: 'accountability', details: { count: entries.length, ...(from ? { from } : {}), ...(to ? { to } : {}), ...(type ? { filterType: type } : {}) } });
    sendJson(ctx.res, 200, { count: entries.length, truncated: entries.length > limit, entries: entries.slice(0, limit) });
  }

  async function verifyAudit(ctx: Ctx): Promise<void> {
    const result = await o.audit.verify();
    const brokenAt = result.brokenAt ? { ...result.brokenAt, explanation: BREAK_EXPLANATION[result.brokenAt.reason] } : undefined;
    await record(ctx.principal, { type: 'access.audit-verify', purpose: 'accountability', details: { ok: result.ok, entries: result.entries } });
    sendJson(ctx.res, 200, {
      ok: result.ok,
      entries: result.entries,
      ...(brokenAt ? { brokenAt } : {}),
      streams: result.streams.map((s) => ({ ...s, ...(s.brokenAt ? { brokenAt: { ...s.brokenAt, explanation: BREAK_EXPLANATION[s.brokenAt.reason] } } : {}) })),
    });
  }

  async function getCompliance(ctx: Ctx): Promise<void> {
    const sampleText = param(ctx.url, 'sample');
    const sample = sampleText === undefined ? undefined : Number(sampleText);
    if (sample !== undefined && (!Number.isInteger(sample) || sample < 1 || sample > 100_000)) {
      throw new HttpError(400, 'invalid-request', 'sample must be a whole number of recordings (1-100000)');
    }
    const report = await complianceReport({ store: o.store, s3: o.s3, audit: o.audit, rolesForAuditType, now }, { ...(sample === undefined ? {} : { sample }) });
    await record(ctx.principal, { type: 'access.compliance', purpose: 'accountability', details: { ok: report.ok, violations: report.violations.length, checked: report.scope.checked } });
    sendJson(ctx.res, 200, report);
  }

  const handlers: Record<RouteTemplate, (ctx: Ctx) => Promise<void>> = {
    'GET /api/recordings': listRecordings,
    'GET /api/recordings/{id}': getRecording,
    'DELETE /api/recordings/{id}': deleteRecording,
    'GET /api/recordings/{id}/play': play,
    'POST /api/recordings/{id}/deletion-requests': requestDeletion,
    'GET /api/deletion-requests': listDeletionRequests,
    'POST /api/extracts': postExtract,
    'GET /api/extracts/{extractId}/files/{name}': getExtractFile,
    'GET /api/audit': getAudit,
    'GET /api/audit/verify': verifyAudit,
    'GET /api/compliance': getCompliance,
  };
  const routes = ACCESS_ROUTES.map((r) => ({ ...r, handle: handlers[r.template] }));

  const group: RouteGroup = async (req, res, url) => {
    if (url.pathname !== '/api' && !url.pathname.startsWith('/api/')) return false;
    const method = req.method ?? 'GET';
    const matching = routes.filter((r) => r.pattern.test(url.pathname));
    const route = matching.find((r) => r.method === method);
    const template = route?.template ?? `${method} ${matching[0]?.template.split(' ')[1] ?? '(unknown)'}`;

    if (!o.jwtSecret) {
      sendJson(res, 503, { error: 'auth-not-configured', message: 'the access API needs a token secret: set OPTIN_JWT_SECRET (at least 32 characters)' });
      return true;
    }
    let principal: Principal | undefined;
    try {
      principal = await authenticate(req, authOptions);
      if (matching.length === 0) throw new HttpError(404, 'not-found', `no route for ${method} ${url.pathname}`);
      if (route === undefined) {
        const allow = [...new Set(matching.map((r) => r.method))].join(', ');
        throw new HttpError(405, 'method-not-allowed', `use ${allow}`, undefined, { allow });
      }
      const routeDecision = authorizeRoute(principal, route.action);
      const params = route.pattern.exec(url.pathname)!.slice(1);
      if (!routeDecision.allow) throw denied(routeDecision.status, routeDecision.reason, route.template.includes('{id}') ? params[0] : undefined);
      await route.handle({ req, res, url, principal, route: route.template, params });
      log.info({ route: route.template, role: principal.role, status: res.statusCode }, 'access');
    } catch (err) {
      if (err instanceof AuthError) {
        await recordDenial(undefined, template, 401, err.reason);
        log.info({ route: template, status: 401, reason: err.reason }, 'access denied');
        sendJson(res, 401, { error: 'unauthenticated', reason: err.reason, message: err.message }, { 'www-authenticate': `Bearer realm="optin", error="invalid_token"` });
        return true;
      }
      const e = toHttpError(err);
      if (e.status === 500) log.error({ route: template, err: (err as Error).message }, 'access route failed');
      if (e.deny) {
        await recordDenial(principal, template, e.status, e.deny.reason, e.deny.recordingId);
        log.info({ route: template, role: principal?.role, status: e.status, reason: e.deny.reason }, 'access denied');
      }
      if (res.headersSent) res.destroy();
      else sendJson(res, e.status, { error: e.error, message: e.message }, e.headers);
    }
    return true;
  };

  return {
    group,
    clearCaches() {
      renders.clear();
      extracts.clear();
    },
  };
}
