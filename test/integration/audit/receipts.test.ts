/**
 * A deletion receipt larger than one audit entry (a seven-hour, two-party recording: 2 x 2,520
 * ten-second segments, some 5,000 object keys, about 300 KiB) goes through the audit spool into
 * the trail in full: split over consecutive entries, each readable on its own, nothing dropped,
 * the chain unbroken.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AuditSpool } from '../../../src/audit/AuditSpool.ts';
import { AuditTrail, MAX_DETAILS_BYTES } from '../../../src/audit/AuditTrail.ts';
import { mediaObjectKey } from '../../../src/storage/layout.ts';
import type { DeletionReceipt } from '../../../src/storage/types.ts';
import { TEST_AUDIT_KEY, TEST_RETENTION } from '../../support/auditKey.ts';
import { useBuckets } from '../../support/buckets.ts';

const buckets = useBuckets();
const dir = mkdtempSync(path.join(tmpdir(), 'optin-receipt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SEGMENTS = (7 * 3600) / 10;

function sevenHourReceipt(recordingId: string): DeletionReceipt {
  const objectKeys: string[] = [];
  for (const p of ['p-agent-7h', 'p-customer-7h']) for (let seg = 0; seg < SEGMENTS; seg++) objectKeys.push(mediaObjectKey(recordingId, p, seg));
  const at = new Date().toISOString();
  return {
    receiptId: 'd_7h_0001',
    kind: 'deletion',
    recordingId,
    scope: 'recording',
    reason: 'agent-request',
    actor: 'lead-7h',
    requestedAt: at,
    completedAt: at,
    complete: true,
    nothingLeft: false,
    dataKeys: [
      { participantId: 'p-agent-7h', dataKeyId: 'dk-a', kekId: 'k1', destroyed: ['memory', 'store'] },
      { participantId: 'p-customer-7h', dataKeyId: 'dk-c', kekId: 'k1', destroyed: ['memory', 'store'] },
    ],
    mediaObjects: { count: objectKeys.length, objectKeys },
    spool: { itemsRemoved: 0, bytes: 0 },
    manifest: 'deleted',
  };
}

describe('oversized deletion receipts', () => {
  it('a seven-hour two-party receipt is audited in full, split over entries, through the spool', async () => {
    const recordingId = 'r_7h0123456789abcd';
    const receipt = sevenHourReceipt(recordingId);
    expect(Buffer.byteLength(JSON.stringify(receipt))).toBeGreaterThan(MAX_DETAILS_BYTES);

    const trail = await AuditTrail.open({ client: buckets.client, bucket: buckets.name('audit7h'), writerId: 'w-7h', hmacKey: TEST_AUDIT_KEY, createBucket: true, retention: TEST_RETENTION });
    const spool = new AuditSpool(trail, dir);
    // Exactly what RecordingDeletion appends.
    await spool.append({ type: 'recording.deleted', actor: receipt.actor, role: 'operator', purpose: receipt.reason, subjects: { recordingId, subjectIds: ['agent-7h', 'cust-7h'] }, details: receipt });
    expect(await spool.flushed(30_000)).toBe(true);
    await spool.close();

    const entries = await trail.list({ type: 'recording.deleted' });
    expect(entries.length).toBeGreaterThanOrEqual(2);
    for (const e of entries) {
      expect(Buffer.byteLength(JSON.stringify(e.details))).toBeLessThanOrEqual(MAX_DETAILS_BYTES);
      // Each part stands on its own: who, why, which recording and subjects, and its place.
      expect(e).toMatchObject({ actor: 'lead-7h', purpose: 'agent-request', refs: { recordingId, subjectIds: ['agent-7h', 'cust-7h'] } });
      expect(e.details).toMatchObject({ receiptId: 'd_7h_0001', kind: 'deletion', mediaObjects: { count: 5040 } });
    }
    // Consecutive seqs, one group, parts in order.
    const splits = entries.map((e) => (e.details as { split: { group: string; index: number; of: number; path: string; items: [number, number]; total: number } }).split);
    expect(new Set(splits.map((s) => s.group)).size).toBe(1);
    expect(splits.map((s) => s.index)).toEqual(entries.map((_, i) => i + 1));
    expect(splits.every((s) => s.of === entries.length && s.path === 'mediaObjects.objectKeys' && s.total === 5040)).toBe(true);
    expect(entries.map((e) => e.seq)).toEqual(entries.map((_, i) => entries[0]!.seq + i));

    // Reassembled, it is the receipt, every object key in order.
    const keys = entries.flatMap((e) => (e.details as unknown as DeletionReceipt).mediaObjects.objectKeys);
    expect(keys).toEqual(receipt.mediaObjects.objectKeys);
    const { split: _s, ...first } = entries[0]!.details as Record<string, unknown>;
    expect({ ...first, mediaObjects: { ...(first.mediaObjects as object), objectKeys: keys } }).toEqual({ ...receipt, queuedAt: expect.any(String) });

    expect(await trail.verify()).toMatchObject({ ok: true, entries: entries.length });
  }, 120_000);
});
