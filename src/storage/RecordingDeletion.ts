import { randomBytes } from 'node:crypto';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import { manifestObjectKey, parseDataKeyObjectKey } from './layout.ts';
import { eraseParticipant, type RecordingManifest } from './manifest.ts';
import type { RecordingReader } from './RecordingReader.ts';
import { zeroKeys, type RecordingRegistry, type Scope } from './RecordingRegistry.ts';
import type { RemoteListing, S3Objects } from './S3Objects.ts';
import { describeS3Error } from './s3Errors.ts';
import type { Spool, SpoolItem, SpoolTombstone } from './Spool.ts';
import type { Sweeper } from './Sweeper.ts';
import type { AuditSink, DeletionReceipt, StorageAuditEntry } from './types.ts';
import type { Uploader } from './Uploader.ts';

/**
 * Complete deletion and expiry (R8, R9), by crypto-shredding: data keys first (memory, spool,
 * store), then media objects (every version), spool copies, and the manifest (or the
 * participant's part of it). Each deletion returns a receipt that is also appended to the audit
 * trail.
 *
 * Refuses with OBJECT_LOCKED, before destroying anything, when an object lock would block it.
 * During an outage the local part happens at once and a tombstone is spooled; the uploader
 * completes the remote part from it when the store returns (receipt `complete: false`, then a
 * second audit entry `recording.deletion-completed`).
 */

export interface RecordingDeletionOptions {
  registry: RecordingRegistry;
  reader: RecordingReader;
  objects: S3Objects;
  spool: Spool;
  uploader: Uploader;
  sweeper: Sweeper;
  audit: AuditSink | undefined;
  logger: Logger;
  now: () => number;
  /** How long a deletion waits for writes already in flight in its scope. */
  inflightWaitMs: number;
  /** Called with every receipt (the store emits `deleted`). */
  onDeleted: (receipt: DeletionReceipt) => void;
}

type Kind = DeletionReceipt['kind'];

export class RecordingDeletion {
  readonly #o: RecordingDeletionOptions;

  constructor(options: RecordingDeletionOptions) {
    this.#o = options;
  }

  /** Retention reached: the sweeper's deletion, by 'system'. */
  expire(recordingId: string): Promise<void> {
    return this.delete({ recordingId }, 'retention-expired', 'system', 'expiry').then(() => undefined);
  }

  delete(scope: Scope, reason: string, actor: string, kind: Kind): Promise<DeletionReceipt> {
    // Mark before queueing: new putSegment calls in scope are refused from this instant.
    const run = this.#o.registry.serial(scope.recordingId, () => this.#deleteNow(scope, reason, actor, kind));
    return this.#o.registry.markDeleting(scope, run);
  }

  async #deleteNow(scope: Scope, reason: string, actor: string, kind: Kind): Promise<DeletionReceipt> {
    const { registry, spool, objects, logger } = this.#o;
    const { recordingId, participantId } = scope;
    const requestedAtMs = this.#o.now();
    await registry.waitInflight(scope, this.#o.inflightWaitMs);

    const rec = registry.get(recordingId);
    const manifest = rec?.manifest ?? (await this.#o.reader.loadManifest(recordingId).catch(() => null));

    // Preflight against the store: what exists, and would an object lock block us? Refuse before
    // destroying anything. If the store is unreachable we go on locally and leave a tombstone.
    let listing: RemoteListing | null = null;
    try {
      listing = await objects.listRecording(recordingId, participantId);
      await objects.assertNotLocked(listing, this.#o.now());
    } catch (err) {
      if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
      logger.warn({ recordingId, participantId, err: describeS3Error(err) }, 'store unreachable during deletion; deleting local copies now, the rest when it returns');
      listing = null;
    }

    const receipt = emptyReceipt(`del_${randomBytes(8).toString('hex')}`, kind, recordingId, participantId, reason, actor, requestedAtMs);
    const keyEntry = keyEntries(receipt, manifest);
    const spoolInScope = (it: SpoolItem): boolean =>
      it.recordingId === recordingId && (participantId === undefined || it.participantId === participantId);

    // 1. Keys first: memory, spool, store.
    if (rec !== undefined) {
      for (const t of rec.tracks.values()) {
        if (participantId !== undefined && t.participantId !== participantId) continue;
        if (t.dataKey !== null) {
          t.dataKey.fill(0);
          t.dataKey = null;
          keyEntry(t.participantId).destroyed.push('memory');
        }
      }
    }
    const spooledKeys = await spool.removeWhere((it) => it.kind === 'key' && spoolInScope(it));
    for (const it of spooledKeys) keyEntry(it.participantId ?? '?').destroyed.push('spool');
    let remoteOk = listing !== null;
    if (listing !== null) {
      try {
        await objects.removeAll('keys', listing.keyObjects);
        for (const o of listing.keyObjects) {
          const k = parseDataKeyObjectKey(o.name);
          if (k !== null && !keyEntry(k.participantId).destroyed.includes('store')) keyEntry(k.participantId).destroyed.push('store');
        }
      } catch (err) {
        if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
        remoteOk = false;
      }
    }

    // 2. Media: store (every version), then spool copies.
    if (listing !== null && remoteOk) {
      try {
        await objects.removeAll('media', listing.mediaObjects);
        const names = [...new Set(listing.mediaObjects.map((o) => o.name))];
        receipt.mediaObjects.objectKeys.push(...names);
      } catch (err) {
        if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
        remoteOk = false;
      }
    }
    const spooledRest = await spool.removeWhere(
      (it) => spoolInScope(it) && (it.kind === 'media' || (participantId === undefined && it.kind === 'manifest')),
    );
    const mediaKeys = new Set(receipt.mediaObjects.objectKeys);
    for (const it of [...spooledKeys, ...spooledRest]) {
      receipt.spool.itemsRemoved++;
      receipt.spool.bytes += it.bodyBytes;
      if (it.kind === 'media') mediaKeys.add(it.objectKey);
    }
    receipt.mediaObjects.objectKeys = [...mediaKeys].sort();
    receipt.mediaObjects.count = receipt.mediaObjects.objectKeys.length;

    // 3. Manifest: gone with the recording, or the participant's part removed.
    if (participantId === undefined) {
      if (rec !== undefined) {
        zeroKeys(rec);
        registry.delete(recordingId);
      }
      registry.rememberDeleted(recordingId);
      this.#o.sweeper.unschedule(recordingId);
      if (listing !== null && remoteOk) {
        try {
          await objects.removeAll('keys', listing.manifestObjects);
          receipt.manifest = listing.manifestObjects.length > 0 || manifest !== null ? 'deleted' : 'absent';
        } catch (err) {
          if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
          remoteOk = false;
        }
      }
      if (!remoteOk) receipt.manifest = 'pending';
    } else if (manifest !== null) {
      const target = rec !== undefined ? rec.manifest : manifest;
      const changed = eraseParticipant(target, participantId, reason, this.#o.now());
      if (rec !== undefined) {
        rec.tracks.delete(participantId);
        rec.dirty = true;
      }
      if (this.#o.uploader.isDeleted(recordingId)) {
        // The whole recording is tombstoned (deleted elsewhere): its manifest is not rewritten.
        receipt.manifest = 'absent';
      } else if (changed || listing?.mediaObjects.length) {
        const how = remoteOk ? await this.#o.uploader.sendManifest(target, true) : 'deferred';
        if (rec !== undefined && how !== 'deferred') rec.dirty = false;
        receipt.manifest = how === 'uploaded' ? 'updated' : 'pending';
        if (how !== 'uploaded') remoteOk = false;
        else remoteOk = await this.#dropOlderManifests(recordingId);
      }
    } else if (!remoteOk) {
      receipt.manifest = 'pending';
    }

    this.#removeLateLanders(scope);
    const foundAnything =
      receipt.dataKeys.some((d) => d.destroyed.length > 0) ||
      receipt.mediaObjects.count > 0 ||
      receipt.spool.itemsRemoved > 0 ||
      (participantId === undefined ? manifest !== null || (listing?.manifestObjects.length ?? 0) > 0 : receipt.manifest === 'updated');
    receipt.nothingLeft = remoteOk && !foundAnything;
    receipt.complete = remoteOk;
    if (!remoteOk) {
      await spool.addTombstone({ recordingId, participantId, reason, actor, requestedAtMs, kind, receiptId: receipt.receiptId });
      this.#o.uploader.wakeUp();
    } else {
      await spool.removeTombstone(recordingId, participantId);
    }
    receipt.completedAt = new Date(this.#o.now()).toISOString();

    logger.info(
      { recordingId, participantId, kind, receiptId: receipt.receiptId, complete: receipt.complete, media: receipt.mediaObjects.count, nothingLeft: receipt.nothingLeft },
      kind === 'expiry' ? 'recording expired' : 'recording deleted',
    );
    await this.#auditReceipt(kind === 'expiry' ? 'recording.expired' : 'recording.deleted', receipt);
    this.#o.onDeleted(receipt);
    return receipt;
  }

  /** The remote half of a deletion that met an outage; run by the uploader from a tombstone. */
  async completeTombstone(t: SpoolTombstone): Promise<void> {
    const { registry, spool, objects, logger } = this.#o;
    await registry.serial(t.recordingId, async () => {
      const listing = await objects.listRecording(t.recordingId, t.participantId);
      const receipt = emptyReceipt(t.receiptId, t.kind, t.recordingId, t.participantId, t.reason, t.actor, t.requestedAtMs);
      try {
        await objects.assertNotLocked(listing, this.#o.now());
      } catch (err) {
        if (!isOptinError(err, 'OBJECT_LOCKED')) throw err;
        // Nothing we can do by retrying; say so loudly and stop blocking the queue.
        logger.error({ recordingId: t.recordingId, participantId: t.participantId, err: err.message }, 'pending deletion blocked by object lock');
        receipt.complete = false;
        receipt.completedAt = new Date(this.#o.now()).toISOString();
        await spool.removeTombstone(t.recordingId, t.participantId);
        await this.#auditReceipt('recording.deletion-blocked', receipt);
        return;
      }
      await objects.removeAll('keys', listing.keyObjects);
      for (const o of listing.keyObjects) {
        const k = parseDataKeyObjectKey(o.name);
        if (k !== null) receipt.dataKeys.push({ participantId: k.participantId, destroyed: ['store'] });
      }
      await objects.removeAll('media', listing.mediaObjects);
      receipt.mediaObjects.objectKeys = [...new Set(listing.mediaObjects.map((o) => o.name))].sort();
      receipt.mediaObjects.count = receipt.mediaObjects.objectKeys.length;
      if (t.participantId === undefined) {
        await objects.removeAll('keys', listing.manifestObjects);
        receipt.manifest = listing.manifestObjects.length > 0 ? 'deleted' : 'absent';
      } else {
        const rec = registry.get(t.recordingId);
        const m = rec?.manifest ?? (await this.#o.reader.loadManifest(t.recordingId));
        // A whole recording tombstoned meanwhile is not rewritten (types.ts WriteGuard).
        if (m !== null && !this.#o.uploader.isDeleted(t.recordingId)) {
          eraseParticipant(m, t.participantId, t.reason, this.#o.now());
          const how = await this.#o.uploader.sendManifest(m, true);
          if (rec !== undefined && how !== 'deferred') rec.dirty = false;
          if (how === 'uploaded' && !(await this.#dropOlderManifests(t.recordingId))) {
            throw new OptinError('STORAGE_UNAVAILABLE', `older manifest versions of ${t.recordingId} could not be removed; the pending erasure is retried`, { retryable: true });
          }
          receipt.manifest = 'updated';
        }
      }
      receipt.completedAt = new Date(this.#o.now()).toISOString();
      await spool.removeTombstone(t.recordingId, t.participantId);
      logger.info({ recordingId: t.recordingId, participantId: t.participantId, receiptId: t.receiptId }, 'pending deletion completed');
      await this.#auditReceipt('recording.deletion-completed', receipt);
    });
  }

  /**
   * After an erasure rewrote the manifest: the earlier versions a versioned store keeps still name
   * the erased participant (sealed, but under the keyring), so they are removed too. False when the
   * store failed meanwhile (the tombstone then finishes the job).
   */
  async #dropOlderManifests(recordingId: string): Promise<boolean> {
    try {
      await this.#o.objects.removeOlderVersions('keys', manifestObjectKey(recordingId));
      return true;
    } catch (err) {
      if (isOptinError(err, 'OBJECT_LOCKED')) {
        // Retrying cannot lift a lock (optin buckets must not have one): say so loudly, once.
        this.#o.logger.error({ recordingId, err: err.message }, 'older manifest versions are locked and stay until the lock ends');
        return true;
      }
      this.#o.logger.warn({ recordingId, err: describeS3Error(err) }, 'could not remove older manifest versions; retrying from the tombstone');
      return false;
    }
  }

  /** PUTs of a deleted scope still in flight after the bounded wait: delete each object if it lands. */
  #removeLateLanders(scope: Scope): void {
    for (const w of this.#o.registry.lateWrites(scope)) {
      w.promise
        .then(async (res) => {
          const versionId = (res as { versionId?: string | null } | undefined)?.versionId;
          await this.#o.objects.removeOne(w.bucket, w.objectKey, versionId ?? undefined);
          this.#o.logger.warn({ recordingId: w.recordingId, objectKey: w.objectKey }, 'removed an object that landed after its deletion');
        })
        .catch(() => undefined);
    }
  }

  /**
   * The receipt as an audit entry, naming the recording and participant only (pseudonymous ids the
   * control plane resolves while it still may): never the subject ids, which the append-only trail
   * would keep after the erasure it records (issue 19, docs/storage.md).
   */
  async #auditReceipt(type: StorageAuditEntry['type'], receipt: DeletionReceipt): Promise<void> {
    const audit = this.#o.audit;
    if (audit === undefined) return;
    try {
      await audit.append({
        type,
        actor: receipt.actor,
        role: receipt.kind === 'expiry' ? 'system' : 'operator',
        purpose: receipt.reason,
        subjects: { recordingId: receipt.recordingId, ...(receipt.participantId ? { participantId: receipt.participantId } : {}) },
        details: receipt,
      });
    } catch (err) {
      // The deletion itself happened; an audit outage must not hide that. Loud log for the DPO trail.
      this.#o.logger.error({ recordingId: receipt.recordingId, receiptId: receipt.receiptId, err: describeS3Error(err) }, 'deletion done but the audit append failed');
    }
  }
}

/** A receipt with nothing destroyed yet; the deletion fills it in as it goes. */
function emptyReceipt(
  receiptId: string,
  kind: Kind,
  recordingId: string,
  participantId: string | undefined,
  reason: string,
  actor: string,
  requestedAtMs: number,
): DeletionReceipt {
  return {
    receiptId,
    kind,
    recordingId,
    ...(participantId === undefined ? {} : { participantId }),
    scope: participantId === undefined ? 'recording' : 'participant',
    reason,
    actor,
    requestedAt: new Date(requestedAtMs).toISOString(),
    completedAt: '',
    complete: true,
    nothingLeft: false,
    dataKeys: [],
    mediaObjects: { count: 0, objectKeys: [] },
    spool: { itemsRemoved: 0, bytes: 0 },
    manifest: 'absent',
  };
}

/** The receipt's entry for a participant's data key, created (with the key ids the manifest names) on first use. */
function keyEntries(receipt: DeletionReceipt, manifest: RecordingManifest | null): (participantId: string) => DeletionReceipt['dataKeys'][number] {
  return (pid) => {
    let e = receipt.dataKeys.find((d) => d.participantId === pid);
    if (e === undefined) {
      const mp = manifest?.participants.find((p) => p.participantId === pid);
      e = { participantId: pid, ...(mp?.dataKeyId ? { dataKeyId: mp.dataKeyId } : {}), ...(mp?.kekId ? { kekId: mp.kekId } : {}), destroyed: [] };
      receipt.dataKeys.push(e);
    }
    return e;
  };
}
