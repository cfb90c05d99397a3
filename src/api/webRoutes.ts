import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { AccessDenied, PLAY_PURPOSES } from '../access/AccessService.ts';
import { CASE_REF_RE, type Action } from '../access/policy.ts';
import { RULE_IDS, type RuleId } from '../compliance/byRule.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { AuthError } from '../identity/serviceTokens.ts';
import { IdSchema, ID_PATTERN } from '../ids/ids.ts';
import type { Logger } from '../log/logger.ts';
import type { Html } from '../web/html.ts';
import { HOME, page } from '../web/layout.ts';
import { deletionReceiptPage, deletionRequestsPage } from '../web/pages/deletions.ts';
import { accessLogPage, auditPage, compliancePage, complianceRulePage, spotCheckPage } from '../web/pages/dpo.ts';
import { extractJobPage, extractsPage } from '../web/pages/extracts.ts';
import { errorPage } from '../web/pages/general.ts';
import { recordingPage, recordingsPage } from '../web/pages/recordings.ts';
import { errorAnswer } from './errors.ts';
import { retryAfterSeconds, routeTemplate, type PeopleContext } from './people.ts';
import { zodSchema } from './zodSchema.ts';

/**
 * The web app's pages (issue 14 §3-7), rendered on the server from the same use cases as the
 * access API (src/access/AccessService.ts), so a page shows exactly what its role may see and
 * nothing more: every page names its policy action (checked before the handler, 403 otherwise)
 * and its use case checks the recording (404). Forms post with the session's CSRF token and
 * answer with a redirect (POST/redirect/GET), so reloading never repeats a deletion. The pages
 * work without JavaScript; /assets/app.js adds the player's waveform, muting, keys and live
 * status. Pages are hidden from the OpenAPI document: the API is the contract, pages are views.
 */

const FLASH: Readonly<Record<string, string>> = Object.freeze({
  requested: 'Your team lead has been asked to delete the recording.',
  'already-requested': 'You had already asked for this recording to be deleted.',
});

const RecordingParams = z.strictObject({ recordingId: IdSchema });
const ListQuery = z.strictObject({ cursor: z.string().max(256).optional(), done: z.enum(['requested', 'already-requested']).optional() });
const RecordingQuery = z.strictObject({ purpose: z.enum(PLAY_PURPOSES).optional() });
const RuleParams = z.strictObject({ rule: z.enum(RULE_IDS) });
const SpotQuery = z.strictObject({ n: z.coerce.number().int().min(1).max(50).default(5) });
const ExtractForm = z.object({
  subjectId: IdSchema,
  caseRef: z.string().regex(CASE_REF_RE),
  format: z.enum(['ogg', 'wav']).default('ogg'),
});

const STATUS_TITLES: Readonly<Record<number, string>> = Object.freeze({
  400: 'Check what was asked',
  401: 'Sign in again',
  403: 'Not for your role',
  404: 'Not found',
  410: 'No longer available',
  429: 'Too many requests',
  503: 'Try again shortly',
});

function pageConfig(action: Action | undefined) {
  return { people: { kind: 'page' as const, ...(action === undefined ? {} : { action }) } };
}

const hidden = { hide: true } as const;

export async function webRoutes(app: FastifyInstance, ctx: PeopleContext, logger: Logger): Promise<void> {
  const access = ctx.access;
  // HTML forms (application/x-www-form-urlencoded) in this scope only: the fact API stays JSON.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  const send = async (req: FastifyRequest, reply: FastifyReply, o: { title: string; body: Html; status?: number; flash?: string }): Promise<void> => {
    const doc = page({
      title: o.title,
      ...(req.principal === undefined ? {} : { principal: req.principal }),
      ...(req.session === undefined ? {} : { csrfToken: req.session.csrfToken }),
      path: req.url.split('?')[0] ?? '/',
      scriptUrl: ctx.assets.scriptUrl,
      body: o.body,
      ...(o.flash === undefined ? {} : { flash: o.flash }),
    });
    await reply.code(o.status ?? 200).type('text/html; charset=utf-8').send(doc.value);
  };

  app.setErrorHandler(async (err: unknown, req, reply) => {
    if (err instanceof AccessDenied) await access.recordDenial(req.principal, routeTemplate(req), err.status, err.reason, err.recordingId);
    const { status, body } = errorAnswer(err);
    const retry = retryAfterSeconds(err, ctx.pool);
    if (retry !== undefined && status === 503) void reply.header('retry-after', String(retry));
    if (status >= 500 && status !== 503) logger.error({ err: err instanceof Error ? err.message : String(err), route: req.routeOptions.url }, 'web: page failed');
    const message =
      err instanceof AuthError
        ? 'Your credentials were not accepted. Sign in again.'
        : status === 403
          ? isOptinError(err, 'CSRF_REJECTED')
            ? 'This form was sent without a valid token (perhaps from an old page). Go back, reload and try again.'
            : 'Your role may not open this page.'
          : status === 404
            ? 'There is nothing here for you: it does not exist, it is not yours, or it was deleted or has expired.'
            : status === 503 && isOptinError(err) && ['FFMPEG_BUSY', 'SIGN_IN_NOT_CONFIGURED', 'STORAGE_UNAVAILABLE', 'AUDIT_UNAVAILABLE', 'IDP_UNAVAILABLE'].includes(err.code)
              ? err.message
              : body.message;
    await send(req, reply, { title: STATUS_TITLES[status] ?? 'Something went wrong', body: errorPage({ status, title: STATUS_TITLES[status] ?? 'Something went wrong', message }), status });
  });

  app.get('/', { config: { people: { kind: 'page', open: true } }, schema: hidden }, async (req, reply) => {
    await reply.redirect(req.principal === undefined ? '/signin' : HOME[req.principal.role], 303);
  });

  app.get('/recordings', { config: pageConfig('recordings.list'), schema: { ...hidden, querystring: zodSchema(ListQuery) } }, async (req, reply) => {
    const q = req.query as z.infer<typeof ListQuery>;
    const list = await access.list(req.principal!, { limit: 50, ...(q.cursor === undefined ? {} : { cursor: q.cursor }) });
    await send(req, reply, {
      title: req.principal!.role === 'agent' ? 'My recordings' : req.principal!.role === 'team-lead' ? "My team's recordings" : 'Recordings',
      body: recordingsPage({ principal: req.principal!, entries: list.entries, ...(list.nextCursor === undefined ? {} : { nextCursor: list.nextCursor }), csrfToken: req.session?.csrfToken ?? '', nowMs: ctx.now() }),
      ...(q.done === undefined ? {} : { flash: FLASH[q.done]! }),
    });
  });

  app.get('/recordings/:recordingId', { config: pageConfig('recordings.read'), schema: { ...hidden, params: zodSchema(RecordingParams), querystring: zodSchema(RecordingQuery) } }, async (req, reply) => {
    const { recordingId } = req.params as { recordingId: string };
    const { purpose } = req.query as z.infer<typeof RecordingQuery>;
    const detail = await access.recording(req.principal!, recordingId);
    await send(req, reply, {
      title: 'Recording',
      body: recordingPage({ principal: req.principal!, recordingId, detail, ...(purpose === undefined || !detail.may.play ? {} : { purpose }), csrfToken: req.session?.csrfToken ?? '', styleNonce: req.styleNonce, nowMs: ctx.now() }),
    });
  });

  app.post('/recordings/:recordingId/deletion-request', { config: pageConfig('deletion.request'), schema: { ...hidden, params: zodSchema(RecordingParams) } }, async (req, reply) => {
    const r = await access.requestDeletion(req.principal!, (req.params as { recordingId: string }).recordingId);
    await reply.redirect(`/recordings?done=${r.created ? 'requested' : 'already-requested'}`, 303);
  });

  app.post('/recordings/:recordingId/delete', { config: pageConfig('recordings.delete'), schema: { ...hidden, params: zodSchema(RecordingParams) } }, async (req, reply) => {
    const r = await access.deleteRecording(req.principal!, (req.params as { recordingId: string }).recordingId);
    await reply.redirect(`/deletions/${r.deletionId}`, 303);
  });

  app.get('/deletions/:deletionId', { config: pageConfig('deletion.receipt'), schema: { ...hidden, params: zodSchema(z.strictObject({ deletionId: IdSchema })) } }, async (req, reply) => {
    const status = await access.deletion(req.principal!, (req.params as { deletionId: string }).deletionId);
    await send(req, reply, { title: 'Deletion receipt', body: deletionReceiptPage({ status }) });
  });

  app.get('/deletion-requests', { config: pageConfig('deletion.list'), schema: hidden }, async (req, reply) => {
    const requests = await access.deletionRequests(req.principal!);
    await send(req, reply, { title: req.principal!.role === 'agent' ? 'My deletion requests' : 'Deletion requests', body: deletionRequestsPage({ principal: req.principal!, requests, csrfToken: req.session?.csrfToken ?? '' }) });
  });

  app.get('/recordings/:recordingId/access-log', { config: pageConfig('audit.read'), schema: { ...hidden, params: zodSchema(RecordingParams) } }, async (req, reply) => {
    const log = await access.accessLog(req.principal!, (req.params as { recordingId: string }).recordingId);
    await send(req, reply, { title: 'Access log', body: accessLogPage({ recordingId: log.recordingId, entries: log.entries, ...(log.row === undefined ? {} : { state: log.row.state }) }) });
  });

  app.get('/compliance', { config: pageConfig('compliance.read'), schema: hidden }, async (req, reply) => {
    const report = await access.compliance(req.principal!);
    await send(req, reply, { title: 'Compliance report', body: compliancePage(report) });
  });

  app.get('/compliance/:rule', { config: pageConfig('compliance.read'), schema: { ...hidden, params: zodSchema(RuleParams) } }, async (req, reply) => {
    const rule = (req.params as { rule: RuleId }).rule;
    const report = await access.compliance(req.principal!);
    const section = report.sections.find((s) => s.rule === rule)!;
    await send(req, reply, { title: `${rule} compliance`, body: complianceRulePage({ section }) });
  });

  app.get('/audit', { config: pageConfig('audit.verify'), schema: hidden }, async (req, reply) => {
    const result = await access.verifyAudit(req.principal!);
    await send(req, reply, { title: 'Audit trail', body: auditPage({ result }) });
  });

  app.get('/spot-check', { config: pageConfig('spotcheck.read'), schema: { ...hidden, querystring: zodSchema(SpotQuery) } }, async (req, reply) => {
    const { n } = req.query as z.infer<typeof SpotQuery>;
    const items = await access.spotCheck(req.principal!, n);
    await send(req, reply, { title: 'Spot check', body: spotCheckPage({ items, n }) });
  });

  app.get('/extracts', { config: pageConfig('extract.list'), schema: hidden }, async (req, reply) => {
    const jobs = await access.extractJobs(req.principal!);
    await send(req, reply, { title: 'Subject-access extracts', body: extractsPage({ jobs, csrfToken: req.session?.csrfToken ?? '' }) });
  });

  app.post('/extracts', { config: pageConfig('extract.create'), schema: hidden }, async (req, reply) => {
    const raw = (req.body ?? {}) as Record<string, unknown>;
    const parsed = ExtractForm.safeParse(raw);
    if (!parsed.success) {
      const field = String(parsed.error.issues[0]?.path[0] ?? 'subjectId');
      const error = field === 'caseRef' ? 'Give the case reference of the request (letters, digits, - and _ only).' : field === 'format' ? 'Choose Ogg Opus or WAV.' : "Give the person's pseudonymous subject id (letters, digits, - and _ only).";
      const jobs = await access.extractJobs(req.principal!);
      const values = { ...(typeof raw.subjectId === 'string' && ID_PATTERN.test(raw.subjectId) ? { subjectId: raw.subjectId } : {}), ...(typeof raw.caseRef === 'string' && CASE_REF_RE.test(raw.caseRef) ? { caseRef: raw.caseRef } : {}) };
      await send(req, reply, { title: 'Subject-access extracts', body: extractsPage({ jobs, csrfToken: req.session?.csrfToken ?? '', error, values }), status: 400 });
      return;
    }
    const job = await access.createExtract(req.principal!, parsed.data);
    await reply.redirect(`/extracts/${job.id}`, 303);
  });

  app.get('/extracts/:extractId', { config: pageConfig('extract.list'), schema: { ...hidden, params: zodSchema(z.strictObject({ extractId: IdSchema })) } }, async (req, reply) => {
    const job = await access.extractJob(req.principal!, (req.params as { extractId: string }).extractId);
    await send(req, reply, { title: `Extract ${job.caseRef}`, body: extractJobPage({ job, nowMs: ctx.now() }) });
  });

  // Static pieces: the client bundle (content-hashed, cached for a year) and the stylesheet.
  app.get('/assets/:name', { config: { rateLimit: false }, schema: hidden }, async (req, reply) => {
    const asset = ctx.assets.get((req.params as { name: string }).name);
    if (asset === undefined) throw new OptinError('RECORDING_NOT_FOUND', 'no such asset');
    await reply.header('cache-control', 'public, max-age=31536000, immutable').header('etag', asset.etag).type(asset.contentType).send(asset.body);
  });
}
