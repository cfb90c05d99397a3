import type { DeletionReceipt } from '../storage/types.ts';
import type { StoreReceipt } from './protocolV2.ts';

/**
 * The storage layer's deletion receipt as the policy stream carries it (`erasure.done`,
 * `deletion.done`, and the control plane's own completion receipts; docs/control-protocol.md §6):
 * counts and ids only, never object keys or key material.
 */
export function summarizeReceipt(r: DeletionReceipt): StoreReceipt {
  const out: StoreReceipt = {
    receiptId: r.receiptId,
    recordingId: r.recordingId,
    complete: r.complete,
    nothingLeft: r.nothingLeft,
    dataKeysDestroyed: r.dataKeys.filter((k) => k.destroyed.length > 0).length,
    mediaObjects: r.mediaObjects.count,
    manifest: r.manifest,
    completedAt: Date.parse(r.completedAt) || Date.now(),
  };
  if (r.participantId !== undefined) out.participantId = r.participantId;
  return out;
}
