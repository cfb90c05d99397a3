import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OPENAPI_DOC_PATH, formatOpenApi, openApiDocument } from '../../../src/controlplane/openapi.ts';

type Op = { parameters?: Array<{ in: string; name: string; required?: boolean }>; security?: unknown[]; requestBody?: unknown };

describe('control-plane OpenAPI document', () => {
  it(`${OPENAPI_DOC_PATH} is what the route schemas generate (run: npm run docs:openapi)`, async () => {
    const generated = formatOpenApi(await openApiDocument());
    expect(readFileSync(OPENAPI_DOC_PATH, 'utf8')).toBe(generated);
  });

  // The integrations' API (/v1/): bearer integration tokens and Idempotency-Key. The people's
  // access API (/api/, issue 14) is the session (with CSRF) or a service's JWT: checked below.
  it('documents every write of the integrations API with a bearer token and a required Idempotency-Key', async () => {
    const doc = (await openApiDocument()) as { paths: Record<string, Record<string, Op>> };
    const allWrites = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).filter(([m]) => m === 'post' || m === 'put').map(([m, op]) => ({ path, m, op })));
    const writes = allWrites.filter((w) => w.path.startsWith('/v1/'));
    expect(writes.length).toBeGreaterThanOrEqual(9);
    for (const { path, m, op } of allWrites.filter((w) => !w.path.startsWith('/v1/'))) {
      expect(path, `${m} ${path}`).toMatch(/^\/api\//);
      expect(op.security, `${m} ${path}`).toEqual([{ session: [] }, { oauth2: [] }]);
    }
    for (const { path, m, op } of writes) {
      expect(op.security, `${m} ${path}`).toEqual([{ bearer: [] }]);
      expect(op.parameters?.find((p) => p.in === 'header' && p.name === 'idempotency-key')?.required, `${m} ${path}`).toBe(true);
    }
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/calls', '/v1/calls/{callId}/consent', '/v1/agents/{agentId}/schedule', '/v1/agents/{agentId}/team-lead', '/v1/erasures/{id}']));
  });
});
