import { beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'minio';
import { CapLedger } from '../../../src/gate/CapLedger.ts';
import { monthKey } from '../../../src/gate/month.ts';
import { useBuckets } from '../../support/buckets.ts';
import { makeMinioClient } from '../../support/s3.ts';

/**
 * The monthly cap ledger against this run's real S3 server: durable across
 * ledger instances (a worker restart) and shared by concurrent "workers".
 */

const T = Date.UTC(2025, 5, 10, 12, 0, 0);

describe('CapLedger on S3', () => {
  const buckets = useBuckets();
  const client: Client = buckets.client;
  let bucket: string;

  beforeAll(async () => {
    bucket = await buckets.make('keys');
  });

  it('survives a restart: a new ledger sees the admissions of the old one', async () => {
    const first = new CapLedger({ client, bucket, capFor: () => 2 });
    expect(await first.admit('agent-r', 'r_a', T)).toBe(true);
    expect(await first.admit('agent-r', 'r_b', T + 1)).toBe(true);
    const restarted = new CapLedger({ client, bucket, capFor: () => 2 });
    expect(await restarted.count('agent-r', monthKey(T))).toBe(2);
    expect(await restarted.admit('agent-r', 'r_c', T + 2)).toBe(false);
    expect(await restarted.admit('agent-r', 'r_a', T + 3)).toBe(true); // idempotent
    expect(await restarted.count('agent-r', monthKey(T))).toBe(2);
  });

  it('holds across several workers admitting at once', async () => {
    const cap = 3;
    const workers = Array.from({ length: 8 }, () => new CapLedger({ client: makeMinioClient(), bucket, capFor: () => cap }));
    const results = await Promise.all(workers.map((w, i) => w.admit('agent-c', `r_${i}`, T + (i % 3))));
    const admitted = results.filter(Boolean).length;
    expect(admitted).toBeLessThanOrEqual(cap);
    expect(admitted).toBeGreaterThanOrEqual(1);
    expect(await workers[0]!.count('agent-c', monthKey(T))).toBe(admitted);
    // Slots left unused by contention are still there for a later, uncontended admission.
    let later = 0;
    for (let i = 0; i < cap; i++) if (await workers[0]!.admit('agent-c', `r_late${i}`, T + 100 + i)) later++;
    expect(admitted + later).toBe(cap);
  });
});
