import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { httpStatusOf } from '../errors/errorTable.ts';
import type { Logger } from '../log/logger.ts';
import { FactRefused } from '../facts/FactRefused.ts';

/** The body of every 4xx/5xx answer of the control-plane API. */
export const ApiErrorSchema = z.strictObject({
  error: z.string().describe('machine-readable code, e.g. invalid-input, unknown-call, schedule-rejected, idempotency-key-reused'),
  message: z.string().describe('what is wrong and how to fix it, for a person'),
  field: z.string().optional().describe('the offending input: a dotted body path, a path parameter, or a header name'),
  rule: z.string().optional().describe('for schedule-rejected: the R6 rule (window-too-long, continuous-recording, ...)'),
});
export type ApiError = z.infer<typeof ApiErrorSchema>;

const KIND_ERROR: Record<string, string> = {
  'invalid-input': 'invalid-input',
  unauthenticated: 'unauthenticated',
  forbidden: 'forbidden',
  'not-found': 'not-found',
  conflict: 'conflict',
  gone: 'gone',
  'too-large': 'too-large',
  unprocessable: 'unprocessable',
  'rate-limited': 'rate-limited',
  unavailable: 'unavailable',
  timeout: 'unavailable',
};

function fromFastify(err: FastifyError): { status: number; body: ApiError } | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: { error: 'too-large', message: err.message, field: 'body' } };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: { error: 'unsupported-media-type', message: 'send the body as application/json', field: 'Content-Type' } };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, body: { error: 'invalid-input', message: 'the JSON body is empty', field: 'body' } };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, body: { error: 'invalid-input', message: err.message, field: 'Content-Length' } };
    default:
      break;
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return { status: 400, body: { error: 'invalid-input', message: 'the body is not valid JSON', field: 'body' } };
  }
  if (typeof err.statusCode === 'number' && err.statusCode === 429) {
    return { status: 429, body: { error: 'rate-limited', message: err.message } };
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { status: err.statusCode, body: { error: 'invalid-input', message: err.message } };
  }
  return undefined;
}

export function errorAnswer(err: unknown): { status: number; body: ApiError } {
  if (err instanceof FactRefused) {
    const body: ApiError = { error: err.error, message: err.message };
    if (err.field !== undefined) body.field = err.field;
    if (err.rule !== undefined) body.rule = err.rule;
    return { status: httpStatusOf(err.code), body };
  }
  if (isOptinError(err)) {
    const status = httpStatusOf(err.code);
    // 5xx messages may name internals: the client gets the kind only.
    return status >= 500
      ? { status, body: { error: KIND_ERROR[err.kind] ?? 'internal', message: status === 503 ? 'a dependency is unavailable; retry later' : 'internal error' } }
      : { status, body: { error: KIND_ERROR[err.kind] ?? 'invalid-input', message: err.message } };
  }
  const known = fromFastify(err as FastifyError);
  if (known !== undefined) return known;
  return { status: 500, body: { error: 'internal', message: 'internal error' } };
}

export function installErrorHandler(app: FastifyInstance, logger: Logger): void {
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const { status, body } = errorAnswer(err);
    if (status >= 500) {
      logger.error({ err: err instanceof Error ? err.message : String(err), code: (err as OptinError).code, route: request.routeOptions.url }, 'api: request failed');
    }
    void reply.code(status).type('application/json').send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: 'not-found', message: `no route ${request.method} ${request.url.split('?')[0]}` } satisfies ApiError);
  });
}
