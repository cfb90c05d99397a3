import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { AccessDenied, PLAY_PURPOSES, type PlayPurpose } from '../access/AccessService.ts';
import { CASE_REF_RE } from '../access/policy.ts';
import { parseRange } from '../access/range.ts';
import { isOptinError } from '../errors/OptinError.ts';
import { AuthError } from '../identity/serviceTokens.ts';
import { IdSchema } from '../ids/ids.ts';
import type { Logger } from '../log/logger.ts';
import { ApiErrorSchema, errorAnswer } from './errors.ts';
import { retryAfterSeconds, routeTemplate, type PeopleContext, type PeopleRoute } from './people.ts';
import { docSchema, zodSchema } from './zodSchema.ts';

/**
 * The access API on the control plane (issue 14 §1; replaces the recorders' hand-written
 * /api router): recordings from the catalogue, the coaching render, deletion requests and
 * deletions, subject-access extracts as jobs, the audit trail, the compliance report and the
 * spot check. Route schemas validate input and document the API (GET /v1/openapi.json); the
 * use cases and every authorization decision are src/access/AccessService.ts's. Callers are
 * people with a session (the web app's own scripts, with the CSRF token) or services with a
 * bearer JWT from the identity provider (src/api/people.ts).
 */

export const SECURITY: Array<Record<string, string[]>> = [{ session: [] }, { oauth2: [] }];

const RecordingParams = z.strictObject({ recordingId: IdSchema });
const ListQuery = z.strictObject({
  cursor: z.string().max(256).optional().describe('nextCursor of the previous page'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});
const PlayQuery = z.strictObject({
  purpose: z.enum(PLAY_PURPOSES).describe('why the recording is played (R1): coaching or training; audited'),
  format: z.enum(['ogg', 'wav']).default('ogg'),
});
const ExtractBody = z.strictObject({
  subjectId: IdSchema.describe("the person's pseudonymous subject id"),
  caseRef: z.string().regex(CASE_REF_RE, 'must match [A-Za-z0-9_-]{1,64}').describe('the case reference of the subject-access request'),
  format: z.enum(['ogg', 'wav']).default('ogg'),
});
const ExtractParams = z.strictObject({ extractId: IdSchema });
const ExtractFileParams = z.strictObject({ extractId: IdSchema, name: z.string().regex(/^[A-Za-z0-9_-]{1,64}\.(ogg|wav|json)$/, 'a file name of the package') });
const CaseQuery = z.strictObject({ caseRef: z.string().regex(CASE_REF_RE, 'must match [A-Za-z0-9_-]{1,64}') });
const DeletionParams = z.strictObject({ deletionId: IdSchema });
const AuditQuery = z.strictObject({
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  type: z
    .string()
    .max(64)
    .regex(/^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$/)
    .optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
});
const ComplianceQuery = z.strictObject({ sample: z.coerce.number().int().min(1).max(100_000).optional() });
const SpotQuery = z.strictObject({ n: z.coerce.number().int().min(1).max(50).default(5) });

const Json = z.record(z.string(), z.unknown());
const errors = (...codes: number[]): Record<number, unknown> => Object.fromEntries(codes.map((c) => [c, docSchema(ApiErrorSchema)]));

function route(action: PeopleRoute['action']): { people: PeopleRoute } {
  return { people: { kind: 'api', ...(action === undefined ? {} : { action }) } };
}

/**
 * Sends bytes with Range support (one range; RFC 9110 §14): audio players seek with Range
 * requests, and a render is served from one cached copy with one ETag.
 */
export async function sendBytes(request: FastifyRequest, reply: FastifyReply, bytes: Buffer, o: { contentType: string; filename: string; disposition: 'inline' | 'attachment' }): Promise<void> {
  const etag = `"${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`;
  const ifRange = request.headers['if-range'];
  const honour = ifRange === undefined || ifRange === etag;
  const range = parseRange(honour ? request.headers.range : undefined, bytes.length);
  void reply
    .header('accept-ranges', 'bytes')
    .header('etag', etag)
    // Audio of people: never in shared caches, never kept by the browser beyond the page.
    .header('cache-control', 'private, no-store')
    .header('content-disposition', `${o.disposition}; filename="${o.filename}"`);
  if (range.kind === 'unsatisfiable') {
    await reply.code(416).header('content-range', `bytes */${bytes.length}`).type('application/json').send({ error: 'range-not-satisfiable', message: `the representation has ${bytes.length} bytes` });
    return;
  }
  if (range.kind === 'partial') {
    await reply.code(206).type(o.contentType).header('content-range', `bytes ${range.start}-${range.end}/${bytes.length}`).send(bytes.subarray(range.start, range.end + 1));
    return;
  }
  await reply.code(200).type(o.contentType).send(bytes);
}

/** The error answer of the people's API: the table's status, Retry-After when a retry can help, every policy denial audited. */
export function installAccessErrorHandler(app: FastifyInstance, ctx: PeopleContext, logger: Logger): void {
  app.setErrorHandler(async (err: unknown, request, reply) => {
    if (err instanceof AccessDenied) await ctx.access.recordDenial(request.principal, routeTemplate(request), err.status, err.reason, err.recordingId);
    const { status, body } = errorAnswer(err);
    const answer: Record<string, unknown> = { ...body };
    if (err instanceof AuthError) {
      answer.reason = err.reason;
      void reply.header('www-authenticate', 'Bearer realm="optin", error="invalid_token"');
    }
    const retry = retryAfterSeconds(err, ctx.pool);
    if (retry !== undefined && status === 503) void reply.header('retry-after', String(retry));
    // Messages of our own 503s name no internals and help the caller: keep them.
    if (status === 503 && isOptinError(err) && (err.code === 'FFMPEG_BUSY' || err.code === 'SIGN_IN_NOT_CONFIGURED' || err.code === 'STORAGE_UNAVAILABLE' || err.code === 'AUDIT_UNAVAILABLE' || err.code === 'EXTRACT_STORE_FULL')) answer.message = err.message;
    if (status >= 500 && status !== 503) logger.error({ err: err instanceof Error ? err.message : String(err), route: request.routeOptions.url }, 'access api: request failed');
    await reply.code(status).type('application/json').send(answer);
  });
}

export async function accessRoutes(app: FastifyInstance, ctx: PeopleContext, logger: Logger): Promise<void> {
  installAccessErrorHandler(app, ctx, logger);
  const access = ctx.access;
  const me = (req: FastifyRequest) => req.principal!;

  app.get('/api/me', { config: route(undefined), schema: { tags: ['access'], summary: 'Who the caller is (and, with a session, its CSRF token for the app\u2019s scripts)', security: SECURITY, response: { 200: docSchema(z.object({ sub: IdSchema, role: z.string(), csrfToken: z.string().optional() })), ...errors(401) } } }, async (req) => ({
    sub: me(req).sub,
    role: me(req).role,
    ...(req.session === undefined ? {} : { csrfToken: req.session.csrfToken }),
  }));

  app.get(
    '/api/recordings',
    { config: route('recordings.list'), schema: { tags: ['access'], summary: "My recordings (agent), my team's (team lead), or all (DPO, metadata): newest first, keyset pages", security: SECURITY, querystring: zodSchema(ListQuery), response: { 200: docSchema(z.object({ recordings: z.array(Json), nextCursor: z.string().optional() })), ...errors(400, 401, 403) } } },
    async (req) => {
      const q = req.query as z.infer<typeof ListQuery>;
      const page = await access.list(me(req), { limit: q.limit, ...(q.cursor === undefined ? {} : { cursor: q.cursor }) });
      return { recordings: page.entries, ...(page.nextCursor === undefined ? {} : { nextCursor: page.nextCursor }) };
    },
  );

  app.get(
    '/api/recordings/:recordingId',
    { config: route('recordings.read'), schema: { tags: ['access'], summary: "One recording's metadata, its consent evidence in words, and the player's timeline (gaps, concealed stretches, the consent instant)", security: SECURITY, params: zodSchema(RecordingParams), response: { 200: docSchema(Json), ...errors(401, 403, 404) } } },
    async (req) => access.recording(me(req), (req.params as { recordingId: string }).recordingId),
  );

  app.get(
    '/api/recordings/:recordingId/play',
    {
      config: route('recordings.play'),
      schema: {
        tags: ['access'],
        summary: 'The coaching render: stereo, agent left, customer right, aligned; Range requests; a full render pool answers 503 with Retry-After',
        security: SECURITY,
        params: zodSchema(RecordingParams),
        querystring: zodSchema(PlayQuery),
        response: { 200: { description: 'audio/ogg (Opus) or audio/wav', type: 'string', format: 'binary' }, 206: { description: 'a byte range', type: 'string', format: 'binary' }, ...errors(400, 401, 403, 404, 416, 503) },
      },
    },
    async (req, reply) => {
      const { recordingId } = req.params as { recordingId: string };
      const q = req.query as { purpose: PlayPurpose; format: 'ogg' | 'wav' };
      const range = typeof req.headers.range === 'string' ? req.headers.range : undefined;
      const r = await access.play(me(req), recordingId, { purpose: q.purpose, format: q.format, ...(range === undefined ? {} : { range }) });
      await sendBytes(req, reply, r.bytes, { contentType: r.contentType, filename: `${recordingId}-coaching.${q.format}`, disposition: 'inline' });
    },
  );

  app.post(
    '/api/recordings/:recordingId/deletion-requests',
    { config: route('deletion.request'), schema: { tags: ['deletion'], summary: 'The recorded agent asks their team lead to delete the recording (idempotent: 201 first, 200 after)', security: SECURITY, params: zodSchema(RecordingParams), response: { 201: docSchema(Json), 200: docSchema(Json), ...errors(401, 403, 404) } } },
    async (req, reply) => {
      const r = await access.requestDeletion(me(req), (req.params as { recordingId: string }).recordingId);
      await reply.code(r.created ? 201 : 200).send(r);
    },
  );

  app.get(
    '/api/deletion-requests',
    { config: route('deletion.list'), schema: { tags: ['deletion'], summary: "A team lead's queue, an agent's own requests (every state), or all pending ones (DPO)", security: SECURITY, response: { 200: docSchema(z.object({ requests: z.array(Json) })), ...errors(401, 403) } } },
    async (req) => ({ requests: await access.deletionRequests(me(req)) }),
  );

  app.delete(
    '/api/recordings/:recordingId',
    { config: route('recordings.delete'), schema: { tags: ['deletion'], summary: "The team lead deletes the recording (R9): gone from lists, renders and extracts at once; the store deletion's receipt follows at statusUrl", security: SECURITY, params: zodSchema(RecordingParams), response: { 202: docSchema(z.object({ deletionId: IdSchema, requestClosed: z.boolean(), statusUrl: z.string() })), ...errors(401, 403, 404) } } },
    async (req, reply) => {
      const r = await access.deleteRecording(me(req), (req.params as { recordingId: string }).recordingId);
      await reply.code(202).send({ ...r, statusUrl: `/api/deletions/${r.deletionId}` });
    },
  );

  app.get(
    '/api/deletions/:deletionId',
    { config: route('deletion.receipt'), schema: { tags: ['deletion'], summary: 'State and store receipt of a deletion (the team lead who made it, or the DPO)', security: SECURITY, params: zodSchema(DeletionParams), response: { 200: docSchema(Json), ...errors(401, 403, 404) } } },
    async (req) => access.deletion(me(req), (req.params as { deletionId: string }).deletionId),
  );

  app.post(
    '/api/extracts',
    { config: route('extract.create'), schema: { tags: ['extract'], summary: 'A subject-access request becomes a job (202); poll statusUrl for progress, then download its files', security: SECURITY, body: zodSchema(ExtractBody), response: { 202: docSchema(z.object({ job: Json, statusUrl: z.string() })), ...errors(400, 401, 403, 503) } } },
    async (req, reply) => {
      const job = await access.createExtract(me(req), req.body as z.infer<typeof ExtractBody>);
      await reply.code(202).send({ job, statusUrl: `/api/extracts/${job.id}` });
    },
  );

  app.get(
    '/api/extracts',
    { config: route('extract.list'), schema: { tags: ['extract'], summary: "The operator's own extract jobs", security: SECURITY, response: { 200: docSchema(z.object({ jobs: z.array(Json) })), ...errors(401, 403) } } },
    async (req) => ({ jobs: await access.extractJobs(me(req)) }),
  );

  app.get(
    '/api/extracts/:extractId',
    { config: route('extract.list'), schema: { tags: ['extract'], summary: 'One of the operator\u2019s jobs: state, progress, files when ready', security: SECURITY, params: zodSchema(ExtractParams), response: { 200: docSchema(Json), ...errors(401, 403, 404) } } },
    async (req) => access.extractJob(me(req), (req.params as { extractId: string }).extractId),
  );

  app.get(
    '/api/extracts/:extractId/files/:name',
    {
      config: route('extract.read'),
      schema: {
        tags: ['extract'],
        summary: 'A file of a ready package (audio of one speaker, or manifest.json), for its operator and case; 410 once withdrawn or expired',
        security: SECURITY,
        params: zodSchema(ExtractFileParams),
        querystring: zodSchema(CaseQuery),
        response: { 200: { description: 'the file', type: 'string', format: 'binary' }, ...errors(400, 401, 403, 404, 410) },
      },
    },
    async (req, reply) => {
      const { extractId, name } = req.params as { extractId: string; name: string };
      const file = await access.extractFile(me(req), extractId, name, (req.query as { caseRef: string }).caseRef);
      await sendBytes(req, reply, file.bytes, { contentType: file.contentType, filename: name, disposition: 'attachment' });
    },
  );

  app.get(
    '/api/audit',
    { config: route('audit.read'), schema: { tags: ['dpo'], summary: 'Audit entries, filtered by type and time', security: SECURITY, querystring: zodSchema(AuditQuery), response: { 200: docSchema(z.object({ count: z.int(), truncated: z.boolean(), entries: z.array(Json) })), ...errors(400, 401, 403) } } },
    async (req) => {
      const q = req.query as z.infer<typeof AuditQuery>;
      return access.auditEntries(me(req), { limit: q.limit, ...(q.from ? { from: q.from } : {}), ...(q.to ? { to: q.to } : {}), ...(q.type ? { type: q.type } : {}) });
    },
  );

  app.get(
    '/api/audit/verify',
    { config: route('audit.verify'), schema: { tags: ['dpo'], summary: 'Verifies every stream of the audit trail; where a chain breaks, and what that means', security: SECURITY, response: { 200: docSchema(Json), ...errors(401, 403) } } },
    async (req) => access.verifyAudit(me(req)),
  );

  app.get(
    '/api/recordings/:recordingId/access-log',
    { config: route('audit.read'), schema: { tags: ['dpo'], summary: 'Who accessed a recording, and how (also after its deletion)', security: SECURITY, params: zodSchema(RecordingParams), response: { 200: docSchema(Json), ...errors(401, 403) } } },
    async (req) => access.accessLog(me(req), (req.params as { recordingId: string }).recordingId),
  );

  app.get(
    '/api/compliance',
    { config: route('compliance.read'), schema: { tags: ['dpo'], summary: 'The compliance report, one section per rule R3-R11 with violations and evidence', security: SECURITY, querystring: zodSchema(ComplianceQuery), response: { 200: docSchema(Json), ...errors(400, 401, 403) } } },
    async (req) => {
      const q = req.query as z.infer<typeof ComplianceQuery>;
      return access.compliance(me(req), q.sample === undefined ? {} : { sample: q.sample });
    },
  );

  app.get(
    '/api/spot-check',
    { config: route('spotcheck.read'), schema: { tags: ['dpo'], summary: 'A random sample of recordings: consent, window, cap and expiry judged; never audio', security: SECURITY, querystring: zodSchema(SpotQuery), response: { 200: docSchema(z.object({ items: z.array(Json) })), ...errors(400, 401, 403) } } },
    async (req) => ({ items: await access.spotCheck(me(req), (req.query as z.infer<typeof SpotQuery>).n) }),
  );
}
