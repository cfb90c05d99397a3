import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'minio';
import { bucketNames, dataKeyObjectKey, manifestObjectKey, mediaPrefix, type BucketNames } from '../../../src/storage/layout.ts';
import { listNames, makeMinioClient } from '../../support/s3.ts';
import { useStack } from '../../support/stack.ts';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { openManifest } from '../../../src/storage/manifest.ts';
import { startLiveCall, startRecorderNode, until, waitState, type RecorderNode } from '../../support/recorderNode.ts';

/**
 * The erasure ledger end to end (issue 13, "must show"): the control plane on PostgreSQL, with
 * the object store (it deletes what no live worker can), recorders on the same store. Each case
 * is carried out, with the store's receipt recorded at the control plane:
 *  - erase while the worker's link is down, and the call then ends: the control plane deletes
 *    the customer's part itself; when the worker comes back it learns the tombstone, deletes the
 *    copies it still held (spool) and uploads none of them;
 *  - erase after a worker restart: the restarted worker (same id, the catalogue's holder)
 *    confirms (it holds nothing any more), the control plane deletes from the store;
 *  - erase for a recording no worker holds: the control plane deletes it after the grace.
 */

const stack = useStack(
  { segmentSeconds: 1 },
  {
    heartbeatMs: 100,
    controlPlaneStore: true,
    controlPlaneOverrides: { 'ledger.graceMs': 300, 'ledger.holderTimeoutMs': 5000, 'ledger.sweepIntervalMs': 100 },
  },
);
let direct: Client;
let buckets: BucketNames;
const nodes: RecorderNode[] = [];
const evidence = (at = Date.now()) => ({ method: 'dtmf' as const, at, infoVersion: 'notice-v2' });

beforeAll(() => {
  direct = makeMinioClient();
  const c = stack.config.s3;
  buckets = bucketNames({ prefix: c.bucketPrefix, media: c.mediaBucket, keys: c.keysBucket, audit: c.auditBucket });
});
afterAll(async () => {
  for (const n of nodes) await n.close().catch(() => undefined);
});

async function erasureDone(erasureId: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  let status: Record<string, unknown> = {};
  await until(async () => (status = await stack.policy.erasure(erasureId)).state === 'done', timeoutMs, `erasure ${erasureId} done`);
  return status;
}

interface StoreReceiptSeen {
  recordingId: string;
  participantId?: string;
  complete: boolean;
  nothingLeft: boolean;
}

function receiptOf(status: Record<string, unknown>): { storeReceipts: StoreReceiptSeen[]; confirmedBy: { workerId: string; receipts: StoreReceiptSeen[] }[]; unconfirmedHolders: string[] } {
  return status.receipt as never;
}

/** The customer's part is gone from the store: media and data key; the manifest, if any, says so. */
async function customerGone(recordingId: string, customer: string): Promise<void> {
  expect(await listNames(direct, buckets.media, mediaPrefix(recordingId, customer))).toEqual([]);
  expect(await listNames(direct, buckets.keys, dataKeyObjectKey(recordingId, customer))).toEqual([]);
  const manifests = await listNames(direct, buckets.keys, manifestObjectKey(recordingId));
  if (manifests.length > 0) {
    // Stored sealed (issue 19): opened with the stack's keyring.
    const m = openManifest(Buffer.concat(await direct.getObject(buckets.keys, manifestObjectKey(recordingId)).then((s) => s.toArray())), recordingId, Keyring.fromConfig(stack.config.keyring));
    expect(m.participants.find((p) => p.participantId === customer)?.erased).toBeDefined();
  }
}

function spoolItemsOf(spoolDir: string, recordingId: string, participantId?: string): string[] {
  const dir = path.join(spoolDir, 'items');
  return readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .filter((n) => {
      const meta = JSON.parse(readFileSync(path.join(dir, n), 'utf8')) as { recordingId?: string; participantId?: string };
      return meta.recordingId === recordingId && (participantId === undefined || meta.participantId === participantId);
    });
}

describe('erasures are carried out, with receipts', () => {
  it('erase while the worker\'s link is down, then the call ends: the control plane deletes; the worker, back, deletes its copies and uploads none', async () => {
    const app = stack.app;
    const agent = 'ag-e-down';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const call = await startLiveCall(app, stack.policy, 'call-e-down', agent);
    const customer = `${call.callId}-c`;
    let from = call.states.length;
    await stack.policy.grantConsent(call.callId, customer, evidence());
    await waitState(call, (s) => s.recording, 5000, 'recording', from);
    const recordingId = call.rec.recordingId!;
    await until(async () => (await listNames(direct, buckets.media, mediaPrefix(recordingId, customer))).length >= 2, 10_000, 'segments uploaded');

    try {
      // The worker's link goes down (the control plane stays up): stale, gate closed.
      from = call.states.length;
      stack.relay.down();
      await waitState(call, (s) => s.reasons.includes('control-stale'), 3000, 'stale', from);
      // What the closing run sealed waits in the spool: nothing is uploaded while stale. (In the
      // full suite the closing run has, now and then, nothing left to seal here: the copies are
      // then checked only for what there is, and the counts are printed.)
      const spooled = await until(() => spoolItemsOf(stack.spoolDir, recordingId, customer).length > 0, 20_000, 'the last segment spooled').then(
        () => spoolItemsOf(stack.spoolDir, recordingId, customer).length,
        () => 0,
      );
      const track = call.rec.tracks.get(customer);
      console.log(`erase while the link is down: customer's spool copies ${spooled}, segments ${track?.counters.segments ?? -1}, media objects ${(await listNames(direct, buckets.media, mediaPrefix(recordingId, customer))).length}`);

      const answer = await stack.policy.withdrawConsent(call.callId, customer, { erase: true, evidence: evidence() });
      const erasureId = String(answer.erasureId);
      await stack.policy.endCall(call.callId);
      // No live holder: after the grace the control plane deletes from the store itself.
      const status = await erasureDone(erasureId);
      const receipt = receiptOf(status);
      expect(receipt.storeReceipts.map((r) => [r.recordingId, r.participantId, r.complete])).toEqual([[recordingId, customer, true]]);
      expect(receipt.confirmedBy.map((c) => c.workerId)).not.toContain(stack.config.workerId); // its link is down
      await customerGone(recordingId, customer);
      expect(spoolItemsOf(stack.spoolDir, recordingId, customer).length).toBeGreaterThanOrEqual(spooled); // still held by the absent worker

      // The link returns: the snapshot's tombstone; the worker deletes what it held and uploads nothing of it.
      from = call.states.length;
      stack.relay.up();
      await app.control.waitFresh(10_000);
      await until(() => call.rec.erased, 5000, 'the worker stopped the recording');
      await until(() => spoolItemsOf(stack.spoolDir, recordingId, customer).length === 0, 5000, 'spool copies deleted');
      await call.stop();
      await app.store.drained(20_000);
      await sleep(6000); // more than a manifest flush period: nothing comes back
      await customerGone(recordingId, customer);
      expect(call.states.slice(from).some((s) => s.recording)).toBe(false);
    } finally {
      // Whatever failed above, the next tests need the link and no sender left ticking.
      stack.relay.up();
      await call.stop().catch(() => undefined);
    }
  }, 90_000);

  it('erase after a worker restart: the restarted worker confirms, the control plane deletes from the store', async () => {
    const spoolDir = mkdtempSync(path.join(tmpdir(), 'optin-e-restart-'));
    try {
      const agent = 'ag-e-restart';
      await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
      const options = { controlUrl: stack.relay.url, secret: stack.control.secret, bucketPrefix: stack.config.s3.bucketPrefix, keyring: stack.config.keyring!, workerId: 'w-e-restart', spoolDir, heartbeatTimeoutMs: 300 };
      const first = await startRecorderNode(options);
      await first.app.control.waitFresh(10_000);
      const call = await startLiveCall(first.app, stack.policy, 'call-e-restart', agent);
      const customer = `${call.callId}-c`;
      const from = call.states.length;
      await stack.policy.grantConsent(call.callId, customer, evidence());
      await waitState(call, (s) => s.recording, 5000, 'recording', from);
      const recordingId = call.rec.recordingId!;
      await sleep(2200);
      await call.stop();
      await stack.policy.endCall(call.callId);
      await first.app.store.drained(20_000);
      await first.close({ keepSpool: true });

      const again = await startRecorderNode(options);
      nodes.push(again);
      await again.app.control.waitFresh(10_000);
      expect((await listNames(direct, buckets.media, mediaPrefix(recordingId, customer))).length).toBeGreaterThan(0);
      const answer = await stack.policy.withdrawConsent(call.callId, customer, { erase: true, evidence: evidence() });
      const status = await erasureDone(String(answer.erasureId));
      const receipt = receiptOf(status);
      // Every live worker that got the fact confirms (any of them could hold spool copies); the
      // holder the catalogue names is among them, and none of them held anything any more.
      expect(receipt.confirmedBy.map((c) => c.workerId)).toContain('w-e-restart');
      for (const c of receipt.confirmedBy) expect(c.receipts).toEqual([]);
      expect(receipt.unconfirmedHolders).toEqual([]);
      expect(receipt.storeReceipts.map((r) => [r.recordingId, r.participantId, r.complete])).toEqual([[recordingId, customer, true]]);
      await customerGone(recordingId, customer);
    } finally {
      rmSync(spoolDir, { recursive: true, force: true });
    }
  }, 90_000);

  it('erase for a recording no worker holds: the control plane deletes it after the grace', async () => {
    const agent = 'ag-e-gone';
    await stack.policy.setSchedule(agent, [{ start: Date.now() - 60_000, end: Date.now() + 3_600_000 }], 50);
    const gone = await startRecorderNode({ controlUrl: stack.relay.url, secret: stack.control.secret, bucketPrefix: stack.config.s3.bucketPrefix, keyring: stack.config.keyring!, workerId: 'w-e-gone' });
    await gone.app.control.waitFresh(10_000);
    const call = await startLiveCall(gone.app, stack.policy, 'call-e-gone', agent);
    const customer = `${call.callId}-c`;
    const from = call.states.length;
    await stack.policy.grantConsent(call.callId, customer, evidence());
    await waitState(call, (s) => s.recording, 5000, 'recording', from);
    const recordingId = call.rec.recordingId!;
    await sleep(2200);
    await call.stop();
    await stack.policy.endCall(call.callId);
    await gone.app.store.drained(20_000);
    await gone.close(); // this worker is gone for good

    const t0 = Date.now();
    const answer = await stack.policy.withdrawConsent(call.callId, customer, { erase: true, evidence: evidence() });
    const status = await erasureDone(String(answer.erasureId));
    const receipt = receiptOf(status);
    // Live workers that got the fact confirm with nothing done (none held it); the gone one never did.
    expect(receipt.confirmedBy.map((c) => c.workerId)).not.toContain('w-e-gone');
    for (const c of receipt.confirmedBy) expect(c.receipts).toEqual([]);
    expect(receipt.unconfirmedHolders).toEqual([]);
    expect(receipt.storeReceipts.map((r) => [r.recordingId, r.participantId, r.complete, r.nothingLeft])).toEqual([[recordingId, customer, true, false]]);
    await customerGone(recordingId, customer);
    console.log(`erasure of a recording no worker holds: done ${Date.now() - t0} ms after the request (grace 300 ms)`);
  }, 90_000);
});
