import { request } from 'node:https';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../../support/controlPlane.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';
import { createTestDatabase, type TestDatabase } from '../../support/pg.ts';
import { makeTestPki, type TestPki } from '../../support/tlsCerts.ts';

/** wss:// with a private CA, and mutual TLS for the stream (the API keeps bearer tokens). */

let db: TestDatabase;
let pki: TestPki;
let t: TestControlPlane;

beforeAll(async () => {
  db = await createTestDatabase();
  pki = makeTestPki();
  t = await startTestControlPlane({
    databaseUrl: db.url,
    overrides: { 'http.tlsCertFile': pki.serverCertFile, 'http.tlsKeyFile': pki.serverKeyFile, 'http.clientCaFile': pki.caFile },
  });
});

afterAll(async () => {
  await t?.close();
  await db?.drop();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

describe('TLS', () => {
  it('serves wss:// to a worker that trusts the private CA and presents its client certificate', async () => {
    expect(t.cp.streamUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/v1\/stream$/);
    const c = await StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId: 'w-tls', ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
    await c.waitSnapshot();
    c.close();
  });

  it('refuses a worker without a client certificate (401 client-certificate)', async () => {
    await expect(StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId: 'w-tls', ca: pki.ca })).rejects.toThrow(/401 client-certificate/);
  });

  it('a worker that does not trust the CA cannot connect', async () => {
    await expect(StreamClientV2.connect(t.cp.streamUrl, { secret: t.secret, workerId: 'w-tls', cert: pki.clientCert, key: pki.clientKey })).rejects.toThrow(/self-signed|certificate/i);
  });

  it('the API over HTTPS needs no client certificate, only the bearer token', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${t.cp.url}/v1/agents/agent-1/team-lead`, {
        method: 'PUT',
        ca: pki.ca,
        headers: { authorization: `Bearer ${t.tokens.hr}`, 'idempotency-key': 'tls-key-0001', 'content-type': 'application/json' },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ teamLeadId: 'lead-1' }));
    });
    expect(status).toBe(200);
  });
});
