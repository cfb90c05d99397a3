/**
 * R11 through a store outage: the system's own audit entries (gate transitions, erasures,
 * deletions) are queued durably on local disk while the audit bucket is unreachable, survive a
 * restart of the process, and land in the hash chain, in order, when the store returns.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuditTrail } from '../../../src/audit/AuditTrail.ts';
import { AuditSpool } from '../../../src/audit/AuditSpool.ts';
import { TEST_AUDIT_KEY, TEST_RETENTION } from '../../support/auditKey.ts';
import { createS3Client } from '../../../src/storage/s3Endpoint.ts';
import { useBuckets } from '../../support/buckets.ts';
import { s3Config } from '../../support/s3.ts';
import { TcpProxy } from '../../support/tcpProxy.ts';
import { expectCode } from '../../support/optinErrors.ts';

let proxy: TcpProxy;
const dir = mkdtempSync(path.join(tmpdir(), 'optin-audit-spool-'));
const bucket = useBuckets().name('audit');

beforeAll(async () => {
  proxy = await TcpProxy.toEndpoint(s3Config().endpoint);
});
afterAll(async () => {
  await proxy.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('audit spool', () => {
  it('keeps entries through an outage and a restart, then chains them in order', async () => {
    const s3 = s3Config();
    const client = createS3Client({ ...s3, endpoint: proxy.endpointFor(s3.endpoint) });
    const trail = await AuditTrail.open({ client, bucket, writerId: 'w-spool', createBucket: true, hmacKey: TEST_AUDIT_KEY, retention: TEST_RETENTION });
    const spool = new AuditSpool(trail, dir);
    await spool.append({ type: 'gate.transition', actor: 'system', role: 'recorder', purpose: 'training-recording-gate', refs: { callId: 'c1' }, details: { n: 1 } });
    expect(await spool.flushed(10_000)).toBe(true);

    proxy.down();
    for (let n = 2; n <= 4; n++) {
      await spool.append({ type: 'gate.transition', actor: 'system', role: 'recorder', purpose: 'training-recording-gate', refs: { callId: 'c1' }, details: { n } });
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(spool.pending).toBe(3);
    await spool.close(); // the process "dies" during the outage

    proxy.up();
    const trail2 = await AuditTrail.open({ client, bucket, writerId: 'w-spool', hmacKey: TEST_AUDIT_KEY, retention: TEST_RETENTION });
    const spool2 = new AuditSpool(trail2, dir); // a new process finds the pending entries
    expect(await spool2.flushed(20_000)).toBe(true);
    await spool2.close();
    const entries = await trail2.list();
    expect(entries.map((e) => (e.details as { n: number }).n)).toEqual([1, 2, 3, 4]);
    expect(entries.slice(1).every((e) => typeof (e.details as { queuedAt?: string }).queuedAt === 'string')).toBe(true);
    expect((await trail2.verify()).ok).toBe(true);
  }, 60_000);

  it('is bounded: at its bound it refuses new entries (the recorder closes its gates) and never blocks on the trail', async () => {
    const own = mkdtempSync(path.join(tmpdir(), 'optin-audit-full-'));
    let attempts = 0;
    const unreachable = { append: async () => { attempts++; throw Object.assign(new Error('store down'), { code: 'ECONNREFUSED' }); } };
    const spool = new AuditSpool(unreachable, own, undefined, { maxEntries: 5 });
    const entry = (n: number) => ({ type: 'gate.transition', actor: 'system', role: 'recorder', purpose: 'training-recording-gate', refs: { callId: 'c2' }, details: { n } });
    // Appends are durable without waiting for the trail: five in parallel share grouped fsyncs.
    await Promise.all([1, 2, 3, 4, 5].map((n) => spool.append(entry(n))));
    expect(spool.full).toBe(true);
    await expectCode(spool.append(entry(6)), 'AUDIT_SPOOL_FULL');
    expect(spool.pending).toBe(5);
    expect(attempts).toBeGreaterThan(0);
    // The pending file is private to the worker's user.
    expect(statSync(path.join(own, 'audit-pending.jsonl')).mode & 0o777).toBe(0o600);
    await spool.close();
    rmSync(own, { recursive: true, force: true });
  });
});
