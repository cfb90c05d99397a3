import path from 'node:path';
import { AuditSpool } from '../audit/AuditSpool.ts';
import { AuditTrail } from '../audit/AuditTrail.ts';
import type { CatalogueEntry } from '../catalogue/Catalogue.ts';
import { summarizeManifest } from '../storage/manifestSummary.ts';
import type { StoreReceipt } from '../control/protocolV2.ts';
import { summarizeReceipt } from '../control/storeReceipt.ts';
import { Keyring } from '../crypto/Keyring.ts';
import type { Logger } from '../log/logger.ts';
import { RecordingStore } from '../storage/RecordingStore.ts';
import { bucketNames, type BucketNames } from '../storage/layout.ts';
import type { RecordingSource } from '../storage/types.ts';
import type { Client } from 'minio';
import { createS3Client, type S3Config } from '../storage/s3Endpoint.ts';

/**
 * THE one place the control plane touches the storage layer (so it can be re-pointed when
 * src/storage changes shape): deletions through RecordingStore's deletion protocol (keys first,
 * then media of every version, spool copies, manifest; a receipt audited in the trail), and the
 * manifests read back for `optin catalogue rebuild`.
 */

export interface ControlPlaneStore {
  /**
   * The read side for the access API (issue 14): manifests and tracks through the storage
   * reader, the audit trail (access entries are appended to it directly: R11 wants them before
   * the data leaves), and the S3 client and bucket names the compliance report lists.
   */
  readonly reader?: RecordingSource;
  readonly trail?: AuditTrail;
  readonly s3?: Client;
  readonly buckets?: Readonly<BucketNames>;
  /** Deletes a recording or one participant's part; idempotent (a second call: nothingLeft). */
  deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<StoreReceipt>;
  /** Every recording's manifest, as catalogue entries. */
  listEntries(): Promise<CatalogueEntry[]>;
  /** The audit trail this replica writes to (its heads are what the control plane anchors). */
  readonly audit: AuditTrail;
  close(): Promise<void>;
}

export interface StoreSettings {
  s3: S3Config;
  bucketPrefix: string;
  mediaBucket: string;
  keysBucket: string;
  auditBucket: string;
  keyring: unknown;
  retentionSeconds: number;
  /** Local spool and audit spool of this control-plane replica. */
  spoolDir: string;
  /** Writer id of this replica in the audit trail and the store's node id. */
  nodeId: string;
  logger: Logger;
  /** The audit trail's HMAC key (the recorders' key) and its store principal (default: the s3 keys). */
  audit: { hmacKey: Buffer; accessKey?: string | undefined; secretKey?: string | undefined; retention: { mode: 'COMPLIANCE' | 'GOVERNANCE'; days: number } };
}

export { summarizeReceipt };

export async function openControlPlaneStore(settings: StoreSettings): Promise<ControlPlaneStore> {
  const client = createS3Client(settings.s3);
  const buckets = bucketNames({ prefix: settings.bucketPrefix, media: settings.mediaBucket, keys: settings.keysBucket, audit: settings.auditBucket });
  const keyring = Keyring.fromConfig(settings.keyring);
  const auditClient =
    settings.audit.accessKey !== undefined && settings.audit.secretKey !== undefined
      ? createS3Client({ ...settings.s3, accessKey: settings.audit.accessKey, secretKey: settings.audit.secretKey })
      : client;
  const audit = await AuditTrail.open({
    client: auditClient,
    bucket: buckets.audit,
    writerId: settings.nodeId,
    logger: settings.logger,
    createBucket: true,
    hmacKey: settings.audit.hmacKey,
    retention: settings.audit.retention,
  });
  const auditSpool = new AuditSpool(audit, path.join(settings.spoolDir, 'audit'), settings.logger);
  const store = await RecordingStore.open({
    client,
    buckets,
    keyring,
    retentionSeconds: settings.retentionSeconds,
    spoolDir: path.join(settings.spoolDir, 'store'),
    spoolMaxBytes: 64 * 1024 * 1024,
    logger: settings.logger,
    audit: auditSpool,
    nodeId: settings.nodeId,
    region: settings.s3.region,
    // The workers' stores run the expiry sweeper; this one only deletes on request.
    sweep: false,
  });
  return {
    reader: store,
    trail: audit,
    s3: client,
    buckets,
    audit,
    async deleteRecording(recordingId, options) {
      return summarizeReceipt(await store.deleteRecording(recordingId, options));
    },
    async listEntries() {
      return (await store.listManifests()).map((m): CatalogueEntry => {
        const { nodeId, state, ...summary } = summarizeManifest(m);
        return { ...summary, state: state === 'ended' ? 'complete' : state, workerId: nodeId };
      });
    },
    async close() {
      await store.close();
      await auditSpool.flushed(5000).catch(() => undefined);
      auditSpool.close();
    },
  };
}
