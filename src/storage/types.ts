import type { ManifestSummary } from './manifestSummary.ts';
import type { Client } from 'minio';
import type { WrapAlg, Keyring } from '../crypto/Keyring.ts';
import type { SegmentAad } from '../crypto/segmentSeal.ts';
import type { Logger } from '../log/logger.ts';
import type { BucketNames } from './layout.ts';
import type { ConsentEvidence, ManifestSegment, ParticipantRole, RecordingManifest, RecordingPolicy, SegmentQuality } from './manifest.ts';
import type { MediaPutPath } from './LeanPut.ts';
import type { SpoolState } from './Spool.ts';

export type { SpoolState } from './Spool.ts';

/**
 * The storage package's public vocabulary (DESIGN §5, R8, R9): what the recorder hands the store,
 * what the store hands back, and what readers get. Types only: importing this file loads nothing.
 *
 * Public files of src/storage (the only ones code outside it imports):
 *   types.ts            this vocabulary
 *   RecordingStore.ts   the writer: begin/put/end, deletion, expiry; spool, uploader and sweeper inside
 *   RecordingReader.ts  the read path alone (manifests, listing, tracks): no spool, no uploader, no sweeper
 *   layout.ts           object keys, prefixes, tags, retention limits
 *   manifest.ts         the manifest document
 *   s3Endpoint.ts       the production S3 client (createS3Client, assertS3Reachable, S3Config)
 *   s3Errors.ts         reading S3 errors (isNotFound, s3ErrorCode)
 *   S3Objects.ts        only for putObjectWithTags (the audit trail's object-locked PUTs)
 *   LeanPut.ts          the hot-path media PUT (benchmarks and tests measure it against minio)
 * Everything else (Spool, Sweeper, Uploader, RecordingDeletion, Recovery, RecordingRegistry,
 * dataKeys, inputs) is internal to the store; only the storage tests reach into it.
 */

export interface StorageAuditEntry {
  type: 'recording.deleted' | 'recording.expired' | 'recording.deletion-completed' | 'recording.deletion-blocked';
  actor: string;
  role: string;
  purpose: string;
  /**
   * The recording and (for an erasure) the participant: pseudonymous, resolvable by the control
   * plane. Never subject ids: the trail is append-only and object-locked, so a subject id written
   * here would name the person long after the erasure it records (docs/storage.md).
   */
  subjects: { recordingId: string; participantId?: string };
  details: DeletionReceipt;
}

/** What the store needs from the audit trail (src/audit's AuditTrail satisfies it). */
export interface AuditSink {
  append(entry: StorageAuditEntry): Promise<unknown>;
}

/**
 * What the store asks before it writes (docs/control-protocol.md §6, "the tombstone check"): the
 * recorder passes its policy state, so a recording deleted elsewhere (another node, the control
 * plane) is never rewritten, and nothing waiting in the spool is uploaded while the policy stream
 * is stale (a deletion made while the link was down would otherwise be undone by the upload).
 * Without a guard the store writes what it is given (the control plane's own store, tools).
 */
export interface WriteGuard {
  /** True when nothing more may be written for this recording (or this participant's part of it). */
  isDeleted(recordingId: string, participantId?: string): boolean;
  /** False while the store must not upload (the policy stream is stale): objects wait in the spool. */
  mayUpload(): boolean;
}

export interface RecordingStoreOptions {
  client: Client;
  buckets: BucketNames;
  keyring: Keyring;
  /** Default and maximum 30 days (R8). */
  retentionSeconds?: number;
  spoolDir: string;
  spoolMaxBytes: number;
  logger: Logger;
  audit?: AuditSink;
  now?: () => number;
  /** Which process writes the recordings: crash repair only touches this node's. Stable across restarts, unique among live processes. */
  nodeId?: string;
  /** A PUT slower than this is treated as failed and the object is spooled. Default 5000 ms. */
  uploadTimeoutMs?: number;
  /** How long close() waits for the spool to drain before leaving the rest for the next start (default 2 x uploadTimeoutMs). */
  closeDrainMs?: number;
  /** Largest Ogg segment accepted. Default 8 MiB (a 10 s Opus segment is ~40 KB). */
  maxSegmentBytes?: number;
  /** How often dirty manifests of active recordings are written. Default 5000 ms. */
  manifestFlushMs?: number;
  /** Sweeper's periodic manifest scan. Default 60 000 ms. */
  sweepScanIntervalMs?: number;
  /** Run the sweeper (default true). Only tests and benchmarks turn it off: R8 needs it. Read-only tools use RecordingReader. */
  sweep?: boolean;
  /** Spool items uploaded in parallel while draining (one per track at a time). Default 8. */
  drainConcurrency?: number;
  /** Uploader retry backoff bounds. Defaults 250 ms .. 5000 ms. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Region for bucket creation. Default us-east-1. */
  region?: string;
  /** Wrap algorithm for new data keys. Default A256GCM (binds the wrapped key to its track). */
  wrapAlg?: WrapAlg;
  /** Tombstones and the permission to upload (see WriteGuard); none: write everything. */
  writeGuard?: WriteGuard;
  /**
   * How media segments are PUT: 'lean' (default; LeanPut.ts, for a client made by
   * createS3Client) or 'minio' (the minio client, as everything else). Same objects either way.
   */
  mediaPut?: MediaPutPath;
}

export interface RecordingReaderOptions {
  client: Client;
  buckets: BucketNames;
  /** The keyring the tracks were sealed under (the workers' keyring). */
  keyring: Keyring;
  now?: () => number;
  /** A GET slower than twice this fails with STORAGE_TIMEOUT, a listing four times. Default 5000 ms. */
  requestTimeoutMs?: number;
  /** Told of every manifest refused for its MAC (MANIFEST_TAMPERED), listings included: log it loudly. */
  onManifestRefused?: (recordingId: string, err: Error) => void;
}

export interface ParticipantInput {
  participantId: string;
  role: ParticipantRole;
  subjectId: string;
  /** Agents: their team lead (R10: the only other person allowed to hear the recording). */
  teamLeadId?: string;
}

export interface BeginRecordingInput {
  recordingId: string;
  callId: string;
  /** ms since epoch (or a Date): expiry is startedAt + retention. */
  startedAt: number | Date;
  participants: ParticipantInput[];
  consentEvidence: ConsentEvidence[];
  /** The schedule and cap the recording was admitted under (R6 evidence for the DPO's compliance check). */
  policy?: RecordingPolicy;
}

export interface SegmentInput {
  recordingId: string;
  participantId: string;
  segment: number;
  run: number;
  startWallClockMs: number;
  durationMs: number;
  opusPayloadBytes: number;
  quality: SegmentQuality;
}

/**
 * A finished segment whose Ogg bytes stay in the media thread that made it (issue 16 item 1).
 * The store keeps the books on the main thread (the checks, the data key, the manifest, the
 * spool, deletions) and has the thread do the work on the bytes: seal them with the track's data
 * key (`sealSegment`, the same format) and PUT them with their tags. The audio never crosses to
 * the main thread; sealed bytes cross only for the spool, or for a store reached through the
 * minio client.
 */
export interface HeldSegment {
  /** Size of the Ogg file the thread holds. */
  readonly oggBytes: number;
  /**
   * Seals the Ogg with `dataKey` for `aad`. The key is copied to the thread for this call and
   * zeroed there after it, as is the Ogg: the thread then holds only the sealed bytes.
   */
  seal(dataKey: Buffer, aad: SegmentAad): Promise<{ sealedBytes: number; sha256: string }>;
  /**
   * PUTs the sealed bytes with the tagged-PUT headers on the thread's own lean path
   * (LeanPut.putWithTags); undefined when the thread has none (then `take` and the main thread's).
   * Rejects with the store's error (its S3 or socket code on `code`).
   */
  readonly put: ((bucket: string, objectKey: string, tags: Record<string, string>, metadata: Record<string, string>) => Promise<void>) | undefined;
  /** The sealed bytes, here (for the spool). The same Buffer on every call. */
  take(): Promise<Buffer>;
}

/** What a segment sink takes: the Ogg file itself, or a handle on one a media thread holds. */
export type SegmentBody = Buffer | HeldSegment;

export interface PutSegmentResult {
  stored: 'uploaded' | 'spooled';
  objectKey: string;
  sealedBytes: number;
  sha256: string;
}

export interface TrackSegment {
  segment: number;
  /** A standalone Ogg Opus file. */
  ogg: Buffer;
  meta: ManifestSegment;
}

export interface DeletionReceipt {
  receiptId: string;
  kind: 'deletion' | 'expiry';
  recordingId: string;
  participantId?: string;
  scope: 'recording' | 'participant';
  reason: string;
  actor: string;
  requestedAt: string;
  completedAt: string;
  /** false: the store was unreachable; the rest completes automatically when it returns (a tombstone is spooled). */
  complete: boolean;
  /** true: nothing of the recording (or participant) existed any more. */
  nothingLeft: boolean;
  /** Data keys destroyed, by id (never material). */
  dataKeys: Array<{ participantId: string; dataKeyId?: string; kekId?: string; destroyed: Array<'memory' | 'store' | 'spool'> }>;
  mediaObjects: { count: number; objectKeys: string[] };
  spool: { itemsRemoved: number; bytes: number };
  manifest: 'deleted' | 'updated' | 'absent' | 'pending';
}

export interface DeletionOptions {
  /** Erase one participant only (R9 "my voice"); the rest of the recording stays. */
  participantId?: string;
  /** A short code ('agent-request', 'consent-withdrawn-erase'): it becomes the audit purpose. */
  reason: string;
  /** Pseudonymous id of who asked (or 'system'). */
  actor: string;
}

export interface RecordingSummary {
  recordingId: string;
  callId: string;
  state: RecordingManifest['state'];
  startedAt: string;
  endedAt?: string;
  expiresAt: string;
  retentionClass: string;
  participants: Array<{ participantId: string; role: ParticipantRole; subjectId?: string; erased: boolean; segments: number; durationMs: number }>;
  segments: number;
  sealedBytes: number;
}

/** The read side that access, extract and compliance use: RecordingReader and RecordingStore both offer it. */
export interface RecordingSource {
  /** The manifest of one recording (metadata only), or RECORDING_NOT_FOUND. */
  getManifest(recordingId: string): Promise<RecordingManifest>;
  /** Summaries of every recording (metadata only; no audio, no keys). */
  listRecordings(): Promise<RecordingSummary[]>;
  /** One participant's segments, verified and decrypted, in order. */
  openTrack(recordingId: string, participantId: string): AsyncIterable<TrackSegment>;
}

export interface StoreStats {
  uploaded: number;
  spooled: number;
  drained: number;
  spool: SpoolState;
  /** Direct PUT latency of media objects, ms, over the last 1024 uploads. */
  uploadLatencyMs: { p50: number; p99: number; samples: number };
}

/** What a store's close() achieved: is everything durably in the object store? */
export interface StoreCloseResult {
  /** Every manifest written and the spool drained: nothing waits on this machine's disk. */
  clean: boolean;
  /** Manifests that could not be written at close (crash repair rebuilds them at the next start). */
  manifestsNotSaved: number;
  /** The spool emptied within `closeDrainMs`. */
  drained: boolean;
  /** Spool items (segments, manifests, deletions) left for the next start. */
  spoolItemsLeft: number;
}

export type RecordingStoreEvents = {
  /** Spool size/fullness changed (the recorder closes the gate with `storage-unavailable` when full). */
  spoolchange: [SpoolState];
  /** The spool became empty with nothing left to retry. */
  drained: [];
  /** A deletion or expiry finished (locally, at least). */
  deleted: [DeletionReceipt];
  /**
   * Crash repair read (and, where needed, rewrote) a manifest a previous process of this node
   * left: what it now says, for the catalogue (a closing report the crash prevented).
   */
  repaired: [ManifestSummary];
};
