import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Client } from 'minio';
import type { Logger } from '../log/logger.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { Keyring, newDataKey, type WrapAlg } from '../crypto/Keyring.ts';
import { SegmentAuthError, openSegment, sealSegment, SEAL_MAX_PLAINTEXT_BYTES } from '../crypto/segmentSeal.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import {
  MANIFESTS_PREFIX,
  MAX_RETENTION_SECONDS,
  MEDIA_PREFIX,
  KEYS_PREFIX,
  assertId,
  assertSegment,
  dataKeyObjectKey,
  dataKeyPrefix,
  isoSeconds,
  lifecycleDays,
  manifestObjectKey,
  mediaObjectKey,
  mediaPrefix,
  mediaTags,
  parseDataKeyObjectKey,
  parseManifestObjectKey,
  parseMediaObjectKey,
  retentionClass,
  type BucketNames,
} from './layout.ts';
import {
  MANIFEST_FORMAT,
  MAX_QUALITY_JSON_BYTES,
  SEGMENT_META_HEADER,
  checkFlatRecord,
  cloneManifest,
  decodeSegmentMeta,
  encodeSegmentMeta,
  parseManifest,
  serializeManifest,
  upsertSegment,
  type ConsentEvidence,
  type ManifestParticipant,
  type ManifestSegment,
  type ParticipantRole,
  type RecordingManifest,
  type RecordingPolicy,
  type SegmentQuality,
} from './manifest.ts';
import { Spool, type BucketRole, type SpoolItem, type SpoolState, type SpoolTombstone } from './Spool.ts';
import { Sweeper } from './Sweeper.ts';
import { putObjectWithTags } from './putObjectWithTags.ts';
import { isNotFound } from './s3Errors.ts';

/**
 * The storage API the recorder calls (DESIGN §5, R8, R9): sealed, expiring, durable.
 *
 * - Every participant of every recording has its own random data key, wrapped by the keyring's
 *   active KEK and stored in the keys bucket BEFORE any of that participant's media.
 * - Segments are sealed (src/crypto/segmentSeal.ts) and PUT with their tags on the same request.
 * - When the store is slow or down, sealed segments (and wrapped keys, and manifests) go to a
 *   bounded local spool in order; a single background uploader drains it exactly once.
 * - Deletion crypto-shreds first (keys), then removes media, spool copies and the manifest, and
 *   returns a receipt that is also appended to the audit trail. Expiry is the same deletion,
 *   triggered by the sweeper at the exact instant.
 */

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export interface StorageAuditEntry {
  type: 'recording.deleted' | 'recording.expired' | 'recording.deletion-completed' | 'recording.deletion-blocked';
  actor: string;
  role: string;
  purpose: string;
  /** Pseudonymous references only. */
  subjects: { recordingId: string; participantId?: string; subjectIds: string[] };
  details: DeletionReceipt;
}

/** What the store needs from the audit trail (src/audit's AuditTrail satisfies it). */
export interface AuditSink {
  append(entry: StorageAuditEntry): Promise<unknown>;
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
  /** Largest Ogg segment accepted. Default 8 MiB (a 10 s Opus segment is ~40 KB). */
  maxSegmentBytes?: number;
  /** How often dirty manifests of active recordings are written. Default 5000 ms. */
  manifestFlushMs?: number;
  /** Sweeper's periodic manifest scan. Default 60 000 ms. */
  sweepScanIntervalMs?: number;
  /** Run the sweeper (default true). Only read-only tools and tests turn it off: R8 needs it. */
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

export interface StoreStats {
  uploaded: number;
  spooled: number;
  drained: number;
  spool: SpoolState;
  /** Direct PUT latency of media objects, ms, over the last 1024 uploads. */
  uploadLatencyMs: { p50: number; p99: number; samples: number };
}

export type RecordingStoreEvents = {
  /** Spool size/fullness changed (the recorder closes the gate with `storage-unavailable` when full). */
  spoolchange: [SpoolState];
  /** The spool became empty with nothing left to retry. */
  drained: [];
  /** A deletion or expiry finished (locally, at least). */
  deleted: [DeletionReceipt];
};

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

interface DataKeyDoc {
  format: 'optin-datakey/1';
  recordingId: string;
  participantId: string;
  dataKeyId: string;
  kekId: string;
  alg: WrapAlg;
  wrapped: string;
  createdAtMs: number;
}

interface Track {
  participantId: string;
  /** Plaintext data key: in memory only while the recording is active, zeroed at end/deletion. */
  dataKey: Buffer | null;
  lastSegment: number;
  /** Serializes putSegment per participant: segments and the key go out in order. */
  chain: Promise<unknown>;
}

interface Active {
  manifest: RecordingManifest;
  tracks: Map<string, Track>;
  dirty: boolean;
}

interface Inflight {
  recordingId: string;
  participantId?: string;
  promise: Promise<unknown>;
  /** For raw PUTs: where the object lands, so a deletion can remove it if it lands late. */
  target?: { bucket: string; objectKey: string };
}

interface Scope {
  recordingId: string;
  participantId?: string;
}

interface RemoteObject {
  name: string;
  versionId?: string;
}

interface RemoteListing {
  keyObjects: RemoteObject[];
  mediaObjects: RemoteObject[];
  manifestObjects: RemoteObject[];
}

const DEFAULT_UPLOAD_TIMEOUT_MS = 5_000;
const DEFAULT_MAX_SEGMENT_BYTES = 8 * 1024 * 1024;
const MAX_CONSENT_JSON_BYTES = 16 * 1024;
const MAX_PARTICIPANTS = 64;
const LATENCY_WINDOW = 1024;
const LIFECYCLE_RULE_PREFIX = 'optin-expiry-';
/** Deleted recording ids remembered so a late putSegment is refused clearly. */
const DELETED_MEMORY = 100_000;

/** Anything not an OptinError from S3 traffic: network down, timeout, 5xx. */
function describe(err: unknown): string {
  if (err instanceof Error) return (err as Error & { code?: string }).code ?? err.message;
  return String(err);
}

function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function readStream(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function inScope(scope: Scope, recordingId: string, participantId: string | undefined): boolean {
  if (scope.recordingId !== recordingId) return false;
  // A participant-scoped deletion also waits for recording-level work (manifest uploads).
  return scope.participantId === undefined || participantId === undefined || scope.participantId === participantId;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// ---------------------------------------------------------------------------------------------

export class RecordingStore extends TypedEmitter<RecordingStoreEvents> {
  readonly buckets: Readonly<BucketNames>;
  readonly retentionSeconds: number;
  readonly nodeId: string;
  readonly sweeper: Sweeper;

  readonly #client: Client;
  #keyring: Keyring;
  readonly #spool: Spool;
  readonly #logger: Logger;
  readonly #audit: AuditSink | undefined;
  readonly #now: () => number;
  readonly #uploadTimeoutMs: number;
  readonly #maxSegmentBytes: number;
  readonly #region: string;
  readonly #wrapAlg: WrapAlg;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #drainConcurrency: number;

  readonly #active = new Map<string, Active>();
  readonly #deleted = new Set<string>();
  readonly #inflight = new Set<Inflight>();
  readonly #deleting = new Map<Scope, Promise<unknown>>();
  /** Per-recording serial queues for manifest writes and deletions. */
  readonly #serial = new Map<string, Promise<unknown>>();
  readonly #repairPending = new Set<string>();
  readonly #lockEnabled = new Map<string, boolean>();
  readonly #latencies: number[] = [];
  #stats = { uploaded: 0, spooled: 0, drained: 0 };

  #setupDone = false;
  #closed = false;
  #wake: (() => void) | undefined;
  /** True while the uploader backs off after a failure: new work must not cut the backoff short. */
  #backingOff = false;
  #sleepTimer: NodeJS.Timeout | undefined;
  #uploader: Promise<void> | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #failures = 0;

  private constructor(options: RecordingStoreOptions, spool: Spool, retentionSeconds: number) {
    super();
    this.#client = options.client;
    this.buckets = Object.freeze({ ...options.buckets });
    this.#keyring = options.keyring;
    this.#spool = spool;
    this.#logger = options.logger;
    this.#audit = options.audit;
    this.#now = options.now ?? Date.now;
    this.retentionSeconds = retentionSeconds;
    this.nodeId = options.nodeId ?? 'local';
    this.#uploadTimeoutMs = options.uploadTimeoutMs ?? DEFAULT_UPLOAD_TIMEOUT_MS;
    this.#maxSegmentBytes = Math.min(options.maxSegmentBytes ?? DEFAULT_MAX_SEGMENT_BYTES, SEAL_MAX_PLAINTEXT_BYTES);
    this.#region = options.region ?? 'us-east-1';
    this.#wrapAlg = options.wrapAlg ?? 'A256GCM';
    this.#retryMinMs = options.retryMinMs ?? 250;
    this.#retryMaxMs = options.retryMaxMs ?? 5_000;
    this.#drainConcurrency = Math.max(1, Math.min(64, options.drainConcurrency ?? 8));
    this.sweeper = new Sweeper({
      target: { scan: (isKnown) => this.#scanManifests(isKnown), expire: (id) => this.#expire(id) },
      logger: this.#logger,
      now: this.#now,
      scanIntervalMs: options.sweepScanIntervalMs ?? 60_000,
    });
    spool.on('change', (s) => this.safeEmit('spoolchange', s));
    spool.on('item', () => this.#wakeUp());
  }

  /**
   * Validates options, recovers the spool of a previous process, ensures buckets and lifecycle
   * rules (deferred to the uploader if the store is unreachable: the worker still starts and
   * spools), and starts the uploader, the manifest flush tick and the sweeper.
   */
  static async open(options: RecordingStoreOptions): Promise<RecordingStore> {
    const retention = options.retentionSeconds ?? MAX_RETENTION_SECONDS;
    if (!Number.isInteger(retention) || retention < 1 || retention > MAX_RETENTION_SECONDS) {
      throw new OptinError(
        'RETENTION_INVALID',
        `retentionSeconds must be a whole number of seconds from 1 to ${MAX_RETENTION_SECONDS} (30 days, DESIGN R8); got ${String(retention)}`,
      );
    }
    if (!(options.keyring instanceof Keyring)) throw new OptinError('CONFIG_INVALID', 'RecordingStore.open: keyring must be a Keyring (Keyring.fromConfig)');
    if (options.nodeId !== undefined) assertId('nodeId', options.nodeId);
    for (const [role, name] of Object.entries(options.buckets ?? {})) {
      if (typeof name !== 'string' || name.length < 3) throw new OptinError('CONFIG_INVALID', `RecordingStore.open: buckets.${role} is missing (use bucketNames())`);
    }
    const spool = await Spool.open({ dir: options.spoolDir, maxBytes: options.spoolMaxBytes, logger: options.logger, now: options.now });
    const store = new RecordingStore(options, spool, retention);
    try {
      await store.#setup();
    } catch (err) {
      options.logger.warn({ err: describe(err) }, 'object store not ready at startup; spooling until it is');
    }
    // Whatever the previous process left in the spool must still expire on time, and its
    // manifests must be repaired once the spool has drained.
    for (const t of spool.tombstones()) if (t.participantId === undefined) store.#rememberDeleted(t.recordingId);
    for (const it of spool.list()) {
      store.sweeper.schedule(it.recordingId, it.expiresAtMs);
      if (!store.#deleted.has(it.recordingId)) store.#repairPending.add(it.recordingId);
    }
    store.#uploader = store.#runUploader();
    store.#flushTimer = setInterval(() => void store.#flushDirty(), options.manifestFlushMs ?? 5_000);
    store.#flushTimer.unref();
    if (options.sweep !== false) store.sweeper.start();
    return store;
  }

  // ---- state ----

  /** Replaces the keyring (rotation): new data keys use its active KEK; active tracks keep theirs. */
  setKeyring(keyring: Keyring): void {
    if (!(keyring instanceof Keyring)) throw new OptinError('CONFIG_INVALID', 'setKeyring: expected a Keyring');
    this.#keyring = keyring;
  }

  isSpoolFull(): boolean {
    return this.#spool.isFull();
  }

  spoolBytes(): number {
    return this.#spool.bytes();
  }

  spoolState(): SpoolState {
    return this.#spool.state();
  }

  stats(): StoreStats {
    const sorted = [...this.#latencies].sort((a, b) => a - b);
    return {
      ...this.#stats,
      spool: this.#spool.state(),
      uploadLatencyMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length },
    };
  }

  /** Resolves when the spool is empty and no deletion is pending remotely (or rejects after timeoutMs). */
  async drained(timeoutMs = 60_000): Promise<void> {
    const done = (): boolean => this.#spool.isEmpty() && this.#spool.tombstones().length === 0 && this.#repairPending.size === 0;
    if (done()) return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('drained', on);
        reject(new OptinError('STORAGE_UNAVAILABLE', `spool not drained within ${timeoutMs} ms (${this.#spool.size()} items left)`, { retryable: true }));
      }, timeoutMs);
      const on = (): void => {
        if (!done()) return;
        clearTimeout(t);
        this.off('drained', on);
        resolve();
      };
      this.on('drained', on);
      this.#wakeUp();
    });
  }

  // ---- recording lifecycle ----

  /** Starts a recording: validates everything, writes the manifest (store or spool), schedules expiry. */
  async beginRecording(input: BeginRecordingInput): Promise<RecordingManifest> {
    this.#assertOpen();
    const { recordingId, callId } = input ?? ({} as BeginRecordingInput);
    assertId('recordingId', recordingId);
    assertId('callId', callId);
    const startedAtMs = input.startedAt instanceof Date ? input.startedAt.getTime() : input.startedAt;
    const now = this.#now();
    if (typeof startedAtMs !== 'number' || !Number.isFinite(startedAtMs) || startedAtMs > now + 60_000) {
      throw new OptinError('INVALID_INPUT', 'startedAt must be a time (ms since epoch) not in the future');
    }
    if (!Array.isArray(input.participants) || input.participants.length === 0 || input.participants.length > MAX_PARTICIPANTS) {
      throw new OptinError('INVALID_INPUT', `participants must list 1..${MAX_PARTICIPANTS} participants`);
    }
    const seen = new Set<string>();
    const participants: ManifestParticipant[] = input.participants.map((p, i) => {
      assertId(`participants[${i}].participantId`, p?.participantId);
      assertId(`participants[${i}].subjectId`, p.subjectId);
      if (p.role !== 'agent' && p.role !== 'customer') throw new OptinError('INVALID_INPUT', `participants[${i}].role must be agent or customer`);
      if (seen.has(p.participantId)) throw new OptinError('INVALID_INPUT', `participants[${i}].participantId ${p.participantId} is listed twice`);
      seen.add(p.participantId);
      if (p.teamLeadId !== undefined) assertId(`participants[${i}].teamLeadId`, p.teamLeadId);
      return { participantId: p.participantId, role: p.role, subjectId: p.subjectId, ...(p.role === 'agent' && p.teamLeadId ? { teamLeadId: p.teamLeadId } : {}) };
    });
    if (!Array.isArray(input.consentEvidence)) throw new OptinError('INVALID_INPUT', 'consentEvidence must be an array (may be empty for agent-only recordings)');
    const consentEvidence = input.consentEvidence.map((e, i) => checkFlatRecord(`consentEvidence[${i}]`, e, 2048));
    if (Buffer.byteLength(JSON.stringify(consentEvidence)) > MAX_CONSENT_JSON_BYTES) {
      throw new OptinError('INVALID_INPUT', `consentEvidence is larger than ${MAX_CONSENT_JSON_BYTES} bytes`);
    }
    const expiresAtMs = startedAtMs + this.retentionSeconds * 1000;
    if (expiresAtMs <= now) throw new OptinError('RECORDING_EXPIRED', `recording ${recordingId} would already be expired (startedAt + retention is in the past)`);
    if (this.#deleted.has(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; start a new recording id`);

    const existing = this.#active.get(recordingId);
    if (existing !== undefined) {
      // Idempotent re-begin (the recorder retried): add participants that joined, keep the rest.
      if (existing.manifest.callId !== callId) throw new OptinError('INVALID_INPUT', `recording ${recordingId} belongs to another call`);
      for (const p of participants) {
        if (!existing.manifest.participants.some((q) => q.participantId === p.participantId)) existing.manifest.participants.push(p);
      }
      const known = new Set(existing.manifest.consentEvidence.map((e) => JSON.stringify(e)));
      for (const e of consentEvidence) if (!known.has(JSON.stringify(e))) existing.manifest.consentEvidence.push(e);
      await this.#writeManifest(recordingId, true);
      return cloneManifest(existing.manifest);
    }
    const manifest: RecordingManifest = {
      format: MANIFEST_FORMAT,
      recordingId,
      callId,
      nodeId: this.nodeId,
      state: 'recording',
      startedAtMs,
      retentionSeconds: this.retentionSeconds,
      retentionClass: retentionClass(this.retentionSeconds),
      expiresAtMs,
      expiresAt: isoSeconds(expiresAtMs),
      participants,
      consentEvidence,
      ...(input.policy ? { policy: checkPolicy(input.policy) } : {}),
      segments: [],
      revision: 0,
      updatedAtMs: now,
    };
    const rec: Active = { manifest, tracks: new Map(), dirty: true };
    this.#active.set(recordingId, rec);
    try {
      // Durable: the manifest carries the consent evidence; it must survive a crash even in an outage.
      await this.#writeManifest(recordingId, true);
    } catch (err) {
      this.#active.delete(recordingId);
      throw err;
    }
    this.sweeper.schedule(recordingId, expiresAtMs);
    this.#logger.info({ recordingId, callId, participants: participants.length, expiresAt: manifest.expiresAt }, 'recording started');
    return cloneManifest(manifest);
  }

  /**
   * Seals and stores one segment. Resolves once the sealed segment is in the store ('uploaded') or
   * durably in the local spool ('spooled'). Throws STORAGE_UNAVAILABLE when the spool is full.
   */
  async putSegment(meta: SegmentInput, ogg: Buffer): Promise<PutSegmentResult> {
    this.#assertOpen();
    const m = meta ?? ({} as SegmentInput);
    assertId('recordingId', m.recordingId);
    assertId('participantId', m.participantId);
    assertSegment(m.segment);
    if (!Number.isInteger(m.run) || m.run < 0) throw new OptinError('INVALID_INPUT', 'run must be a non-negative integer');
    for (const f of ['startWallClockMs', 'durationMs', 'opusPayloadBytes'] as const) {
      if (typeof m[f] !== 'number' || !Number.isFinite(m[f]) || m[f] < 0) throw new OptinError('INVALID_INPUT', `${f} must be a non-negative number`);
    }
    const quality = checkFlatRecord('quality', m.quality ?? {}, MAX_QUALITY_JSON_BYTES);
    if (!Buffer.isBuffer(ogg) || ogg.length === 0) throw new OptinError('INVALID_INPUT', 'the segment must be a non-empty Buffer (one standalone Ogg Opus file)');
    if (ogg.length > this.#maxSegmentBytes) {
      throw new OptinError('SEGMENT_TOO_LARGE', `segment of ${ogg.length} bytes exceeds maxSegmentBytes (${this.#maxSegmentBytes}); shorten the segment duration`);
    }
    const rec = this.#requireActive(m.recordingId);
    const participant = rec.manifest.participants.find((p) => p.participantId === m.participantId);
    if (participant === undefined) {
      throw new OptinError('PARTICIPANT_UNKNOWN', `participant ${m.participantId} is not part of recording ${m.recordingId}; list it in beginRecording`);
    }
    if (participant.erased !== undefined) throw new OptinError('PARTICIPANT_ERASED', `participant ${m.participantId} of recording ${m.recordingId} was erased; nothing more is stored for it`);
    if (this.#now() >= rec.manifest.expiresAtMs) throw new OptinError('RECORDING_EXPIRED', `recording ${m.recordingId} reached its retention limit (${rec.manifest.expiresAt})`);
    this.#refuseIfDeleting(m.recordingId, m.participantId);

    let track = rec.tracks.get(m.participantId);
    if (track === undefined) {
      track = { participantId: m.participantId, dataKey: null, lastSegment: -1, chain: Promise.resolve() };
      rec.tracks.set(m.participantId, track);
    }
    const t = track;
    const run = t.chain.then(() => this.#putSegmentNow(rec, t, { ...m, quality }, ogg));
    t.chain = run.catch(() => undefined);
    return this.#trackInflight(m.recordingId, m.participantId, run);
  }

  /** Final manifest (segments, end time, expiry); zeroes the recording's data keys. */
  async endRecording(recordingId: string): Promise<RecordingManifest> {
    this.#assertOpen();
    assertId('recordingId', recordingId);
    const rec = this.#requireActive(recordingId);
    // Let queued segments finish first: the final manifest lists them.
    await Promise.all([...rec.tracks.values()].map((t) => t.chain));
    if (this.#active.get(recordingId) !== rec) return this.#requireActiveOrThrow(recordingId);
    rec.manifest.state = 'ended';
    rec.manifest.endedAtMs = this.#now();
    rec.dirty = true;
    try {
      await this.#writeManifest(recordingId, true);
    } catch (err) {
      // Neither store nor spool took it (spool full). The segments are safe; crash repair rebuilds
      // the list from them and closes the recording once the store is back.
      this.#repairPending.add(recordingId);
      throw err;
    } finally {
      this.#zeroKeys(rec);
      this.#active.delete(recordingId);
    }
    this.#logger.info({ recordingId, segments: rec.manifest.segments.length }, 'recording ended');
    return cloneManifest(rec.manifest);
  }

  /** The manifest of one recording (metadata only), or RECORDING_NOT_FOUND. */
  async getManifest(recordingId: string): Promise<RecordingManifest> {
    this.#assertOpen();
    assertId('recordingId', recordingId);
    const m = await this.#loadManifest(recordingId);
    if (m === null) throw notFound(recordingId);
    return m;
  }

  /** Summaries of every recording in the store (metadata only; no audio, no keys). */
  async listRecordings(): Promise<RecordingSummary[]> {
    this.#assertOpen();
    const byId = new Map<string, RecordingManifest>();
    const ids = new Set<string>();
    for await (const obj of this.#listObjects(this.buckets.keys, MANIFESTS_PREFIX, false)) {
      const id = parseManifestObjectKey(obj.name);
      if (id !== null) ids.add(id);
    }
    for (const it of this.#spool.list()) if (it.kind === 'manifest') ids.add(it.recordingId);
    await mapLimit([...ids], 8, async (id) => {
      const m = await this.#loadManifest(id).catch(() => null);
      if (m !== null) byId.set(id, m);
    });
    for (const [id, rec] of this.#active) byId.set(id, cloneManifest(rec.manifest));
    return [...byId.values()].sort((a, b) => a.startedAtMs - b.startedAtMs).map(summarize);
  }

  /**
   * Reads one participant's track back: verifies each sealed object against the manifest digest,
   * unwraps the data key, opens each segment (AAD check) and yields standalone Ogg files in order.
   * Refuses an expired recording. The data key is zeroed when iteration ends, however it ends.
   */
  async *openTrack(recordingId: string, participantId: string): AsyncGenerator<TrackSegment, void, undefined> {
    this.#assertOpen();
    assertId('recordingId', recordingId);
    assertId('participantId', participantId);
    const manifest = await this.#loadManifest(recordingId);
    if (manifest === null) throw notFound(recordingId);
    if (this.#now() >= manifest.expiresAtMs) {
      throw new OptinError('RECORDING_EXPIRED', `recording ${recordingId} expired at ${manifest.expiresAt}; it can no longer be played`);
    }
    const participant = manifest.participants.find((p) => p.participantId === participantId);
    if (participant === undefined) throw new OptinError('PARTICIPANT_UNKNOWN', `recording ${recordingId} has no participant ${participantId}`);
    if (participant.erased !== undefined) throw new OptinError('PARTICIPANT_ERASED', `participant ${participantId} of recording ${recordingId} was erased`);
    const segments = manifest.segments.filter((s) => s.participantId === participantId);
    if (segments.length === 0) return;

    const keyBody = await this.#readObject('keys', dataKeyObjectKey(recordingId, participantId));
    if (keyBody === null) {
      throw new OptinError('DATA_KEY_MISSING', `the data key of ${recordingId}/${participantId} is gone (destroyed by deletion or expiry): the track cannot be decrypted`);
    }
    const doc = parseKeyDoc(keyBody, recordingId, participantId);
    const dataKey = this.#keyring.unwrap(doc, { context: keyContext(doc) });
    // Read ahead: up to READ_AHEAD GETs in flight, consumed in order. A 30-minute track is 180
    // segments; one round trip at a time made the S3 latency most of an extract's time.
    const READ_AHEAD = 8;
    const inflight: Promise<Buffer | null>[] = [];
    const fetchNext = (i: number) => {
      const seg = segments[i];
      if (seg === undefined) return;
      const p = this.#readObject('media', seg.objectKey);
      p.catch(() => undefined); // surfaced when awaited in order below
      inflight.push(p);
    };
    for (let i = 0; i < READ_AHEAD; i++) fetchNext(i);
    try {
      for (let i = 0; i < segments.length; i++) {
        const seg = segments[i]!;
        const sealed = await inflight.shift()!;
        fetchNext(i + READ_AHEAD);
        if (sealed === null) {
          throw new OptinError('SEGMENT_MISSING', `segment ${seg.segment} of ${recordingId}/${participantId} is listed in the manifest but missing from the store (${seg.objectKey})`);
        }
        if (sealed.length !== seg.sealedBytes || sha256Hex(sealed) !== seg.sha256) {
          throw new SegmentAuthError('authentication', `segment ${seg.segment} of ${recordingId}/${participantId} does not match the digest in the manifest (altered, truncated or replaced)`);
        }
        const ogg = openSegment(dataKey, sealed, {
          bucket: this.buckets.media,
          objectKey: seg.objectKey,
          recordingId,
          participantId,
          segment: seg.segment,
        });
        yield { segment: seg.segment, ogg, meta: { ...seg } };
      }
    } finally {
      dataKey.fill(0);
    }
  }

  /**
   * Complete deletion (R9): data keys first (crypto-shredding: memory, spool, store), then media
   * objects (every version), spool copies, and the manifest (or the participant's part of it).
   * Idempotent: a second call returns a receipt with `nothingLeft: true`. Refuses with
   * OBJECT_LOCKED, before destroying anything, when an object lock would block the deletion.
   * During an outage the local part happens at once and the rest is completed by the uploader
   * when the store returns (receipt `complete: false`; a second audit entry when done).
   */
  async deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<DeletionReceipt> {
    this.#assertOpen();
    assertId('recordingId', recordingId);
    const { participantId, reason, actor } = options ?? ({} as { reason: string; actor: string });
    if (participantId !== undefined) assertId('participantId', participantId);
    checkReason(reason);
    // The audit trail records who acted as a pseudonymous id (or 'system'): same alphabet as ids.
    assertId('actor', actor);
    return this.#delete({ recordingId, participantId }, reason, actor, 'deletion');
  }

  /** Stops the uploader, flush tick and sweeper; writes active manifests (store or spool); zeroes keys. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.sweeper.close();
    if (this.#flushTimer !== undefined) clearInterval(this.#flushTimer);
    if (this.#sleepTimer !== undefined) clearTimeout(this.#sleepTimer);
    this.#wakeUp(true);
    await this.#uploader?.catch(() => undefined);
    for (const [id, rec] of this.#active) {
      await Promise.all([...rec.tracks.values()].map((t) => t.chain));
      await this.#writeManifest(id, true, true).catch((err: unknown) =>
        this.#logger.error({ recordingId: id, err: describe(err) }, 'could not save the manifest at close; crash repair will rebuild it'),
      );
      this.#zeroKeys(rec);
    }
    this.#active.clear();
    this.#spool.removeAllListeners();
  }

  // ---------------------------------------------------------------------------------------------
  // putSegment internals
  // ---------------------------------------------------------------------------------------------

  async #putSegmentNow(rec: Active, track: Track, m: SegmentInput, ogg: Buffer): Promise<PutSegmentResult> {
    const { recordingId, participantId, segment } = m;
    if (this.#active.get(recordingId) !== rec) this.#requireActive(recordingId);
    this.#refuseIfDeleting(recordingId, participantId);
    // Re-checked here: an erase may have completed while this segment waited in the track's queue.
    if (rec.manifest.participants.find((p) => p.participantId === participantId)?.erased !== undefined) {
      throw new OptinError('PARTICIPANT_ERASED', `participant ${participantId} of recording ${recordingId} was erased; nothing more is stored for it`);
    }
    if (segment <= track.lastSegment) {
      throw new OptinError('SEGMENT_OUT_OF_ORDER', `segment ${segment} of ${recordingId}/${participantId} is not after ${track.lastSegment}; segment numbers are monotonic per track`);
    }
    if (track.dataKey === null) await this.#createDataKey(rec, track);
    const dataKey = track.dataKey;
    if (dataKey === null) throw new OptinError('INTERNAL', 'data key vanished');

    const objectKey = mediaObjectKey(recordingId, participantId, segment);
    const sealed = sealSegment(dataKey, ogg, { bucket: this.buckets.media, objectKey, recordingId, participantId, segment });
    const sha256 = sha256Hex(sealed);
    const seg: ManifestSegment = {
      participantId,
      segment,
      run: m.run,
      objectKey,
      startWallClockMs: m.startWallClockMs,
      durationMs: m.durationMs,
      opusPayloadBytes: m.opusPayloadBytes,
      oggBytes: ogg.length,
      sealedBytes: sealed.length,
      sha256,
      quality: m.quality,
    };
    const expiresAtMs = rec.manifest.expiresAtMs;
    const tags = mediaTags({ recordingId, expiresAtMs, retentionSeconds: rec.manifest.retentionSeconds });
    const metadata = { 'Content-Type': 'application/octet-stream', [SEGMENT_META_HEADER]: encodeSegmentMeta(seg, expiresAtMs) };

    let stored: PutSegmentResult['stored'] | undefined;
    if (this.#canGoDirect()) {
      const t0 = performance.now();
      try {
        await this.#put('media', objectKey, sealed, { recordingId, participantId }, tags, metadata);
        this.#recordLatency(performance.now() - t0);
        stored = 'uploaded';
        this.#stats.uploaded++;
      } catch (err) {
        this.#noteFailure(err, { recordingId, participantId, segment });
      }
    }
    if (stored === undefined) {
      await this.#spool.append(
        { kind: 'media', bucketRole: 'media', objectKey, recordingId, participantId, segment, tags, metadata, expiresAtMs },
        sealed,
      );
      stored = 'spooled';
      this.#stats.spooled++;
    }
    track.lastSegment = segment;
    upsertSegment(rec.manifest, seg);
    rec.dirty = true;
    return { stored, objectKey, sealedBytes: sealed.length, sha256 };
  }

  /** First segment of a track: a fresh data key, wrapped, stored (or spooled) before any media. */
  async #createDataKey(rec: Active, track: Track): Promise<void> {
    const { recordingId } = rec.manifest;
    const { participantId } = track;
    const dataKey = newDataKey();
    try {
      const dataKeyId = `dk_${randomBytes(8).toString('hex')}`;
      const docBase = { format: 'optin-datakey/1' as const, recordingId, participantId, dataKeyId };
      const wrapped = this.#keyring.wrap(dataKey, { alg: this.#wrapAlg, context: keyContext(docBase) });
      const doc: DataKeyDoc = { ...docBase, ...wrapped, createdAtMs: this.#now() };
      const body = Buffer.from(JSON.stringify(doc));
      const objectKey = dataKeyObjectKey(recordingId, participantId);
      let done = false;
      if (this.#canGoDirect()) {
        try {
          await this.#put('keys', objectKey, body, { recordingId, participantId });
          done = true;
        } catch (err) {
          this.#noteFailure(err, { recordingId, participantId });
        }
      }
      if (!done) {
        await this.#spool.append({ kind: 'key', bucketRole: 'keys', objectKey, recordingId, participantId, expiresAtMs: rec.manifest.expiresAtMs }, body);
      }
      const p = rec.manifest.participants.find((q) => q.participantId === participantId);
      if (p !== undefined) {
        p.dataKeyId = dataKeyId;
        p.kekId = wrapped.kekId;
      }
      track.dataKey = dataKey;
      rec.dirty = true;
    } catch (err) {
      dataKey.fill(0);
      throw err;
    }
  }

  #canGoDirect(): boolean {
    // Keep order: while anything waits in the spool, new objects queue behind it.
    return this.#setupDone && !this.#closed && this.#spool.isEmpty();
  }

  /** One PUT with the short timeout. The raw request stays tracked so a deletion can wait for it. */
  async #put(
    role: BucketRole,
    objectKey: string,
    body: Buffer,
    scope: { recordingId: string; participantId?: string },
    tags?: Record<string, string>,
    metadata?: Record<string, string>,
  ): Promise<void> {
    const bucket = this.buckets[role];
    const raw: Promise<unknown> =
      role === 'media' && tags !== undefined
        ? putObjectWithTags(this.#client, bucket, objectKey, body, tags, metadata)
        : this.#client.putObject(bucket, objectKey, body, body.length, { 'Content-Type': 'application/json', ...metadata });
    this.#trackInflight(scope.recordingId, scope.participantId, raw, { bucket, objectKey }).catch(() => undefined);
    await withTimeout(raw, this.#uploadTimeoutMs, `PUT ${bucket}/${objectKey}`);
  }

  #recordLatency(ms: number): void {
    if (this.#latencies.length >= LATENCY_WINDOW) this.#latencies.shift();
    this.#latencies.push(ms);
  }

  #noteFailure(err: unknown, ids: Record<string, unknown>): void {
    this.#failures++;
    // First failure and then every 100th: an outage of minutes must not flood the logs.
    if (this.#failures === 1 || this.#failures % 100 === 0) {
      this.#logger.warn({ ...ids, err: describe(err), failures: this.#failures }, 'object store write failed; spooling');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Manifests
  // ---------------------------------------------------------------------------------------------

  /**
   * Writes an active recording's manifest, serialized per recording so revisions land in order.
   * `durable`: if the store cannot take it now, spool it (replacing older spooled versions);
   * otherwise leave it dirty for the next flush (segment-only changes: crash repair rebuilds those
   * from the objects themselves).
   */
  #writeManifest(recordingId: string, durable: boolean, force = false): Promise<'uploaded' | 'spooled' | 'deferred'> {
    return this.#serialRun(recordingId, async () => {
      const rec = this.#active.get(recordingId);
      if (rec === undefined) return 'deferred';
      if (!rec.dirty && !force && !durable) return 'deferred';
      return this.#storeManifest(rec.manifest, durable, () => (rec.dirty = false));
    });
  }

  /** Caller holds the recording's serial slot. */
  async #storeManifest(manifest: RecordingManifest, durable: boolean, onStored?: () => void): Promise<'uploaded' | 'spooled' | 'deferred'> {
    manifest.revision++;
    manifest.updatedAtMs = this.#now();
    const body = serializeManifest(manifest);
    const objectKey = manifestObjectKey(manifest.recordingId);
    if (this.#canGoDirect()) {
      try {
        await this.#put('keys', objectKey, body, { recordingId: manifest.recordingId });
        onStored?.();
        return 'uploaded';
      } catch (err) {
        this.#noteFailure(err, { recordingId: manifest.recordingId });
      }
    }
    if (!durable) return 'deferred';
    const item = await this.#spool.append(
      { kind: 'manifest', bucketRole: 'keys', objectKey, recordingId: manifest.recordingId, expiresAtMs: manifest.expiresAtMs },
      body,
    );
    // Only the newest manifest matters; older spooled versions would just be overwritten.
    await this.#spool.removeWhere((it) => it.kind === 'manifest' && it.objectKey === objectKey && it.seq < item.seq);
    onStored?.();
    return 'spooled';
  }

  async #flushDirty(): Promise<void> {
    if (this.#closed || !this.#canGoDirect()) return;
    for (const [id, rec] of this.#active) {
      if (!rec.dirty) continue;
      await this.#writeManifest(id, false).catch((err: unknown) => this.#logger.warn({ recordingId: id, err: describe(err) }, 'manifest flush failed'));
    }
  }

  /** Newest manifest: active in memory, else spooled, else in the store. null when none exists. */
  async #loadManifest(recordingId: string): Promise<RecordingManifest | null> {
    const rec = this.#active.get(recordingId);
    if (rec !== undefined) return cloneManifest(rec.manifest);
    const body = await this.#readObject('keys', manifestObjectKey(recordingId));
    return body === null ? null : parseManifest(body, recordingId);
  }

  /** Object bytes from the spool if a copy waits there, else from the store. null if absent. */
  async #readObject(role: BucketRole, objectKey: string): Promise<Buffer | null> {
    const item = this.#spool.find(role, objectKey);
    if (item !== undefined) {
      try {
        return await this.#spool.read(item);
      } catch (err) {
        if (this.#spool.has(item)) throw err;
        // Uploaded and removed between find and read: it is in the store now.
      }
    }
    try {
      const stream = await withTimeout(this.#client.getObject(this.buckets[role], objectKey), this.#uploadTimeoutMs * 2, `GET ${objectKey}`);
      return await readStream(stream);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw storeError(err, `read ${objectKey}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Deletion and expiry
  // ---------------------------------------------------------------------------------------------

  #expire(recordingId: string): Promise<void> {
    return this.#delete({ recordingId }, 'retention-expired', 'system', 'expiry').then(() => undefined);
  }

  #delete(scope: Scope, reason: string, actor: string, kind: 'deletion' | 'expiry'): Promise<DeletionReceipt> {
    // Mark before queueing: new putSegment calls in scope are refused from this instant.
    const run = this.#serialRun(scope.recordingId, () => this.#deleteNow(scope, reason, actor, kind));
    this.#deleting.set(scope, run);
    return run.finally(() => this.#deleting.delete(scope));
  }

  async #deleteNow(scope: Scope, reason: string, actor: string, kind: 'deletion' | 'expiry'): Promise<DeletionReceipt> {
    const { recordingId, participantId } = scope;
    const requestedAtMs = this.#now();
    await this.#waitInflight(scope);

    const rec = this.#active.get(recordingId);
    const manifest = rec?.manifest ?? (await this.#loadManifest(recordingId).catch(() => null));
    const subjectIds = (manifest?.participants ?? [])
      .filter((p) => participantId === undefined || p.participantId === participantId)
      .flatMap((p) => (p.subjectId === undefined ? [] : [p.subjectId]));

    // Preflight against the store: what exists, and would an object lock block us? Refuse before
    // destroying anything. If the store is unreachable we go on locally and leave a tombstone.
    let listing: RemoteListing | null = null;
    try {
      listing = await this.#listRemote(scope);
      await this.#assertNotLocked(listing);
    } catch (err) {
      if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
      this.#logger.warn({ recordingId, participantId, err: describe(err) }, 'store unreachable during deletion; deleting local copies now, the rest when it returns');
      listing = null;
    }

    const receipt = emptyReceipt(`del_${randomBytes(8).toString('hex')}`, kind, recordingId, participantId, reason, actor, requestedAtMs);
    const keyEntry = (pid: string): DeletionReceipt['dataKeys'][number] => {
      let e = receipt.dataKeys.find((d) => d.participantId === pid);
      if (e === undefined) {
        const mp = manifest?.participants.find((p) => p.participantId === pid);
        e = { participantId: pid, ...(mp?.dataKeyId ? { dataKeyId: mp.dataKeyId } : {}), ...(mp?.kekId ? { kekId: mp.kekId } : {}), destroyed: [] };
        receipt.dataKeys.push(e);
      }
      return e;
    };
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
    const spooledKeys = await this.#spool.removeWhere((it) => it.kind === 'key' && spoolInScope(it));
    for (const it of spooledKeys) keyEntry(it.participantId ?? '?').destroyed.push('spool');
    let remoteOk = listing !== null;
    if (listing !== null) {
      try {
        await this.#removeAll(this.buckets.keys, listing.keyObjects);
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
        await this.#removeAll(this.buckets.media, listing.mediaObjects);
        const names = [...new Set(listing.mediaObjects.map((o) => o.name))];
        receipt.mediaObjects.objectKeys.push(...names);
      } catch (err) {
        if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
        remoteOk = false;
      }
    }
    const spooledRest = await this.#spool.removeWhere(
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
        this.#zeroKeys(rec);
        this.#active.delete(recordingId);
      }
      this.#rememberDeleted(recordingId);
      this.sweeper.unschedule(recordingId);
      if (listing !== null && remoteOk) {
        try {
          await this.#removeAll(this.buckets.keys, listing.manifestObjects);
          receipt.manifest = listing.manifestObjects.length > 0 || manifest !== null ? 'deleted' : 'absent';
        } catch (err) {
          if (isOptinError(err, 'OBJECT_LOCKED')) throw err;
          remoteOk = false;
        }
      }
      if (!remoteOk) receipt.manifest = 'pending';
    } else if (manifest !== null) {
      const target = rec !== undefined ? rec.manifest : manifest;
      const changed = eraseParticipant(target, participantId, reason, this.#now());
      if (rec !== undefined) {
        rec.tracks.delete(participantId);
        rec.dirty = true;
      }
      if (changed || listing?.mediaObjects.length) {
        const how = remoteOk ? await this.#storeManifest(target, true, rec ? () => (rec.dirty = false) : undefined) : 'deferred';
        receipt.manifest = how === 'uploaded' ? 'updated' : 'pending';
        if (how !== 'uploaded') remoteOk = false;
      }
    } else if (!remoteOk) {
      receipt.manifest = 'pending';
    }

    this.#sweepLateLanders(scope);
    const foundAnything =
      receipt.dataKeys.some((d) => d.destroyed.length > 0) ||
      receipt.mediaObjects.count > 0 ||
      receipt.spool.itemsRemoved > 0 ||
      (participantId === undefined ? manifest !== null || (listing?.manifestObjects.length ?? 0) > 0 : receipt.manifest === 'updated');
    receipt.nothingLeft = remoteOk && !foundAnything;
    receipt.complete = remoteOk;
    if (!remoteOk) {
      await this.#spool.addTombstone({ recordingId, participantId, reason, actor, requestedAtMs, kind, receiptId: receipt.receiptId });
      this.#wakeUp();
    } else {
      await this.#spool.removeTombstone(recordingId, participantId);
    }
    receipt.completedAt = new Date(this.#now()).toISOString();

    this.#logger.info(
      { recordingId, participantId, kind, receiptId: receipt.receiptId, complete: receipt.complete, media: receipt.mediaObjects.count, nothingLeft: receipt.nothingLeft },
      kind === 'expiry' ? 'recording expired' : 'recording deleted',
    );
    await this.#auditReceipt(kind === 'expiry' ? 'recording.expired' : 'recording.deleted', receipt, subjectIds);
    this.safeEmit('deleted', receipt);
    return receipt;
  }

  /** The remote half of a deletion that met an outage; run by the uploader from a tombstone. */
  async #completeTombstone(t: SpoolTombstone): Promise<void> {
    const scope: Scope = { recordingId: t.recordingId, participantId: t.participantId };
    await this.#serialRun(t.recordingId, async () => {
      const listing = await this.#listRemote(scope);
      const receipt = emptyReceipt(t.receiptId, t.kind, t.recordingId, t.participantId, t.reason, t.actor, t.requestedAtMs);
      try {
        await this.#assertNotLocked(listing);
      } catch (err) {
        if (!isOptinError(err, 'OBJECT_LOCKED')) throw err;
        // Nothing we can do by retrying; say so loudly and stop blocking the queue.
        this.#logger.error({ recordingId: t.recordingId, participantId: t.participantId, err: err.message }, 'pending deletion blocked by object lock');
        receipt.complete = false;
        receipt.completedAt = new Date(this.#now()).toISOString();
        await this.#spool.removeTombstone(t.recordingId, t.participantId);
        await this.#auditReceipt('recording.deletion-blocked', receipt, []);
        return;
      }
      await this.#removeAll(this.buckets.keys, listing.keyObjects);
      for (const o of listing.keyObjects) {
        const k = parseDataKeyObjectKey(o.name);
        if (k !== null) receipt.dataKeys.push({ participantId: k.participantId, destroyed: ['store'] });
      }
      await this.#removeAll(this.buckets.media, listing.mediaObjects);
      receipt.mediaObjects.objectKeys = [...new Set(listing.mediaObjects.map((o) => o.name))].sort();
      receipt.mediaObjects.count = receipt.mediaObjects.objectKeys.length;
      if (t.participantId === undefined) {
        await this.#removeAll(this.buckets.keys, listing.manifestObjects);
        receipt.manifest = listing.manifestObjects.length > 0 ? 'deleted' : 'absent';
      } else {
        const rec = this.#active.get(t.recordingId);
        const m = rec?.manifest ?? (await this.#loadManifest(t.recordingId));
        if (m !== null) {
          eraseParticipant(m, t.participantId, t.reason, this.#now());
          await this.#storeManifest(m, true, rec ? () => (rec.dirty = false) : undefined);
          receipt.manifest = 'updated';
        }
      }
      receipt.completedAt = new Date(this.#now()).toISOString();
      await this.#spool.removeTombstone(t.recordingId, t.participantId);
      this.#logger.info({ recordingId: t.recordingId, participantId: t.participantId, receiptId: t.receiptId }, 'pending deletion completed');
      await this.#auditReceipt('recording.deletion-completed', receipt, []);
    });
  }

  async #auditReceipt(type: StorageAuditEntry['type'], receipt: DeletionReceipt, subjectIds: string[]): Promise<void> {
    if (this.#audit === undefined) return;
    try {
      await this.#audit.append({
        type,
        actor: receipt.actor,
        role: receipt.kind === 'expiry' ? 'system' : 'operator',
        purpose: receipt.reason,
        subjects: { recordingId: receipt.recordingId, ...(receipt.participantId ? { participantId: receipt.participantId } : {}), subjectIds },
        details: receipt,
      });
    } catch (err) {
      // The deletion itself happened; an audit outage must not hide that. Loud log for the DPO trail.
      this.#logger.error({ recordingId: receipt.recordingId, receiptId: receipt.receiptId, err: describe(err) }, 'deletion done but the audit append failed');
    }
  }

  async #listRemote(scope: Scope): Promise<RemoteListing> {
    const { recordingId, participantId } = scope;
    const keyPrefix = participantId === undefined ? dataKeyPrefix(recordingId) : dataKeyObjectKey(recordingId, participantId);
    const keyObjects = await collect(this.#listObjects(this.buckets.keys, keyPrefix, true));
    const mediaObjects = await collect(this.#listObjects(this.buckets.media, mediaPrefix(recordingId, participantId), true));
    const manifestObjects =
      participantId === undefined
        ? (await collect(this.#listObjects(this.buckets.keys, manifestObjectKey(recordingId), true))).filter((o) => o.name === manifestObjectKey(recordingId))
        : [];
    return {
      keyObjects: keyObjects.filter((o) => participantId !== undefined || parseDataKeyObjectKey(o.name)?.recordingId === recordingId),
      mediaObjects,
      manifestObjects,
    };
  }

  /** Every version (when `versions`), so a versioned bucket keeps no older copy. */
  async *#listObjects(bucket: string, prefix: string, versions: boolean): AsyncGenerator<RemoteObject> {
    const stream = this.#client.listObjects(bucket, prefix, true, versions ? { IncludeVersion: true } : undefined);
    const timer = setTimeout(() => stream.destroy(new Error(`listing ${bucket}/${prefix} timed out`)), this.#uploadTimeoutMs * 4);
    try {
      for await (const raw of stream as AsyncIterable<{ name?: string; versionId?: string | null }>) {
        if (typeof raw.name !== 'string') continue;
        yield { name: raw.name, ...(raw.versionId && raw.versionId !== 'null' ? { versionId: raw.versionId } : {}) };
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async #isLockEnabled(bucket: string): Promise<boolean> {
    const cached = this.#lockEnabled.get(bucket);
    if (cached !== undefined) return cached;
    let enabled = false;
    try {
      const cfg = (await this.#client.getObjectLockConfig(bucket)) as { objectLockEnabled?: string } | undefined;
      enabled = cfg?.objectLockEnabled === 'Enabled';
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ObjectLockConfigurationNotFoundError' && code !== 'NoSuchObjectLockConfiguration') throw err;
    }
    this.#lockEnabled.set(bucket, enabled);
    return enabled;
  }

  /** OBJECT_LOCKED, naming the object and its retention, if any object in the listing is locked. */
  async #assertNotLocked(listing: RemoteListing): Promise<void> {
    const groups: Array<[string, RemoteObject[]]> = [
      [this.buckets.keys, [...listing.keyObjects, ...listing.manifestObjects]],
      [this.buckets.media, listing.mediaObjects],
    ];
    const now = this.#now();
    for (const [bucket, objects] of groups) {
      if (objects.length === 0 || !(await this.#isLockEnabled(bucket))) continue;
      for (const o of objects) {
        const opts = o.versionId ? { versionId: o.versionId } : undefined;
        const retention = await this.#client.getObjectRetention(bucket, o.name, opts as { versionId: string }).catch(() => null);
        const until = retention?.retainUntilDate ? Date.parse(retention.retainUntilDate) : NaN;
        if (retention && Number.isFinite(until) && until > now) {
          throw lockedError(bucket, o.name, `${retention.mode} retention until ${new Date(until).toISOString()}`);
        }
        const hold = await this.#client.getObjectLegalHold(bucket, o.name, opts as { versionId: string }).catch(() => null);
        if (hold === 'ON') throw lockedError(bucket, o.name, 'a legal hold');
      }
    }
  }

  async #removeAll(bucket: string, objects: RemoteObject[]): Promise<void> {
    for (let i = 0; i < objects.length; i += 1000) {
      const batch = objects.slice(i, i + 1000).map((o) => (o.versionId ? { name: o.name, versionId: o.versionId } : { name: o.name }));
      const result = (await withTimeout(this.#client.removeObjects(bucket, batch), this.#uploadTimeoutMs * 4, `delete in ${bucket}`)) as unknown[];
      for (const r of result ?? []) {
        // minio-js returns per-object errors in two shapes depending on the server's XML.
        const e = (r as { Error?: { Code?: string; Key?: string; Message?: string } } | null)?.Error ?? (r as { Code?: string; Key?: string; Message?: string } | null);
        if (!e?.Code) continue;
        if (e.Code === 'NoSuchKey' || e.Code === 'NoSuchVersion') continue;
        if (e.Code === 'AccessDenied' && (await this.#isLockEnabled(bucket))) throw lockedError(bucket, e.Key ?? '?', 'an object lock');
        throw new OptinError('STORAGE_UNAVAILABLE', `deleting ${e.Key ?? '?'} in ${bucket} failed: ${e.Code}`, { retryable: true });
      }
    }
  }

  async #waitInflight(scope: Scope): Promise<void> {
    const pending = [...this.#inflight].filter((f) => inScope(scope, f.recordingId, f.participantId)).map((f) => f.promise.catch(() => undefined));
    if (pending.length === 0) return;
    // Bounded: a request that hangs past its timeout must not hold a deletion forever. A PUT that
    // lands later still races us: #sweepLateLanders removes it when it does.
    await Promise.race([Promise.all(pending), sleep(this.#uploadTimeoutMs * 2)]);
  }

  /** PUTs of a deleted scope still in flight after the bounded wait: delete each object if it lands. */
  #sweepLateLanders(scope: Scope): void {
    for (const f of this.#inflight) {
      if (f.target === undefined || !inScope(scope, f.recordingId, f.participantId)) continue;
      const { bucket, objectKey } = f.target;
      f.promise
        .then(async (res) => {
          const versionId = (res as { versionId?: string | null } | undefined)?.versionId;
          await this.#client.removeObject(bucket, objectKey, versionId ? { versionId } : undefined);
          this.#logger.warn({ recordingId: f.recordingId, objectKey }, 'removed an object that landed after its deletion');
        })
        .catch(() => undefined);
    }
  }

  #trackInflight<T>(recordingId: string, participantId: string | undefined, promise: Promise<T>, target?: Inflight['target']): Promise<T> {
    const entry: Inflight = { recordingId, participantId, promise, ...(target ? { target } : {}) };
    this.#inflight.add(entry);
    const done = (): void => {
      this.#inflight.delete(entry);
    };
    promise.then(done, done);
    return promise;
  }

  #refuseIfDeleting(recordingId: string, participantId: string): void {
    if (this.#deleted.has(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; nothing more is stored for it`);
    for (const scope of this.#deleting.keys()) {
      if (scope.recordingId === recordingId && (scope.participantId === undefined || scope.participantId === participantId)) {
        throw new OptinError('RECORDING_DELETED', `recording ${recordingId} is being deleted; nothing more is stored for it`);
      }
    }
  }

  #rememberDeleted(recordingId: string): void {
    this.#deleted.add(recordingId);
    if (this.#deleted.size > DELETED_MEMORY) {
      const oldest = this.#deleted.values().next().value;
      if (oldest !== undefined) this.#deleted.delete(oldest);
    }
  }

  #zeroKeys(rec: Active): void {
    for (const t of rec.tracks.values()) {
      t.dataKey?.fill(0);
      t.dataKey = null;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Setup, uploader, crash repair, sweeper scan
  // ---------------------------------------------------------------------------------------------

  /** Buckets and lifecycle rules, idempotently. */
  async #setup(): Promise<void> {
    // The audit bucket is src/audit's to create (with object lock): creating it here would make it
    // without, so it is left alone.
    for (const bucket of [this.buckets.media, this.buckets.keys]) {
      const exists = await withTimeout(this.#client.bucketExists(bucket), this.#uploadTimeoutMs, `HEAD ${bucket}`);
      if (!exists) {
        try {
          await this.#client.makeBucket(bucket, this.#region);
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code !== 'BucketAlreadyOwnedByYou' && code !== 'BucketAlreadyExists') throw err;
        }
      }
    }
    const days = lifecycleDays(this.retentionSeconds);
    // Backstop for the sweeper: whole days, rounded up, so never earlier than the exact expiry.
    await this.#ensureLifecycle(this.buckets.media, [{ id: `${LIFECYCLE_RULE_PREFIX}media`, prefix: MEDIA_PREFIX, days }]);
    await this.#ensureLifecycle(this.buckets.keys, [
      { id: `${LIFECYCLE_RULE_PREFIX}keys`, prefix: KEYS_PREFIX, days },
      { id: `${LIFECYCLE_RULE_PREFIX}manifests`, prefix: MANIFESTS_PREFIX, days },
    ]);
    this.#setupDone = true;
  }

  async #ensureLifecycle(bucket: string, wanted: Array<{ id: string; prefix: string; days: number }>): Promise<void> {
    type Rule = { ID: string; Status?: string; Filter?: { Prefix?: string }; Expiration?: { Days?: number }; [k: string]: unknown };
    let current: Rule[] = [];
    try {
      const cfg = (await this.#client.getBucketLifecycle(bucket)) as { Rule?: Rule | Rule[] } | null;
      const r = cfg?.Rule;
      current = r === undefined ? [] : Array.isArray(r) ? r : [r];
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'NoSuchLifecycleConfiguration') throw err;
    }
    const rules: Rule[] = current.filter((r) => !wanted.some((w) => w.id === r.ID));
    let same = true;
    for (const w of wanted) {
      const have = current.find((r) => r.ID === w.id);
      if (!have || have.Status !== 'Enabled' || have.Filter?.Prefix !== w.prefix || Number(have.Expiration?.Days) !== w.days) same = false;
      rules.push({ ID: w.id, Status: 'Enabled', Filter: { Prefix: w.prefix }, Expiration: { Days: w.days } });
    }
    if (same) return;
    await this.#client.setBucketLifecycle(bucket, { Rule: rules as never });
    this.#logger.info({ bucket, rules: wanted.map((w) => `${w.prefix}:${w.days}d`) }, 'lifecycle rules installed');
  }

  /** Wakes an idle uploader (new work). During a backoff only close() does: retries stay spaced. */
  #wakeUp(force = false): void {
    if (this.#backingOff && !force) return;
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#sleepTimer = setTimeout(resolve, ms);
    });
    if (this.#sleepTimer !== undefined) clearTimeout(this.#sleepTimer);
    this.#wake = undefined;
  }

  /**
   * One loop, no busy wait: pending deletions first, then spool items in order, then crash
   * repairs; sleeps until woken by new work, backs off exponentially (with jitter) on failure.
   */
  async #runUploader(): Promise<void> {
    let backoff = this.#retryMinMs;
    let failing = false;
    while (!this.#closed) {
      try {
        if (!this.#setupDone) await this.#setup();
        const tomb = this.#spool.tombstones()[0];
        if (tomb !== undefined) {
          await this.#completeTombstone(tomb);
        } else if (!this.#spool.isEmpty()) {
          await this.#uploadBatch();
        } else if (this.#repairPending.size > 0) {
          const id = this.#repairPending.values().next().value as string;
          try {
            await this.#repair(id);
          } catch (err) {
            // A store outage retries (backoff below); a manifest that cannot be repaired must not
            // stall the uploader forever: say so and move on (its objects still expire).
            if (!isOptinError(err) || err.retryable) throw err;
            this.#logger.error({ recordingId: id, err: err.message }, 'manifest repair impossible; skipped');
          }
          this.#repairPending.delete(id);
        } else {
          if (failing) this.#logger.info({}, 'object store reachable again; spool drained');
          failing = false;
          this.#failures = 0;
          this.safeEmit('drained');
          await this.#flushDirty();
          if (this.#spool.isEmpty() && this.#spool.tombstones().length === 0 && this.#repairPending.size === 0) {
            await this.#sleep(this.#retryMaxMs * 12);
          }
          continue;
        }
        backoff = this.#retryMinMs;
      } catch (err) {
        if (this.#closed) break;
        if (!failing) this.#logger.warn({ err: describe(err), spoolItems: this.#spool.size() }, 'uploader: store unavailable, retrying with backoff');
        failing = true;
        this.#backingOff = true;
        try {
          await this.#sleep(backoff * (0.75 + Math.random() * 0.5));
        } finally {
          this.#backingOff = false;
        }
        backoff = Math.min(backoff * 2, this.#retryMaxMs);
      }
    }
  }

  /**
   * Uploads up to `drainConcurrency` spool items at once, at most one per lane (a participant's
   * track, or a recording's manifest), each the oldest of its lane: order holds within a track
   * (its key before its first segment, segments in sequence) while the drain outpaces a full
   * recorder's production. Throws after all settle if any failed, so the loop backs off.
   */
  async #uploadBatch(): Promise<void> {
    const lanes = new Set<string>();
    const batch: SpoolItem[] = [];
    for (const it of this.#spool.list()) {
      const lane = `${it.recordingId}/${it.participantId ?? ''}`;
      if (lanes.has(lane)) continue;
      lanes.add(lane);
      batch.push(it);
      if (batch.length >= this.#drainConcurrency) break;
    }
    const results = await Promise.allSettled(batch.map((it) => this.#uploadItem(it)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  async #uploadItem(item: SpoolItem): Promise<void> {
    // A deletion in progress will remove the item itself; wait for it rather than race it.
    for (const [scope, p] of this.#deleting) {
      if (inScope(scope, item.recordingId, item.participantId)) {
        await p.catch(() => undefined);
        return;
      }
    }
    const op = (async () => {
      if (!this.#spool.has(item)) return;
      let body: Buffer;
      try {
        body = await this.#spool.read(item);
      } catch (err) {
        if (!this.#spool.has(item)) return;
        if (isOptinError(err, 'SPOOL_CORRUPT')) {
          // Re-uploading damaged bytes would only plant a segment that fails to open later.
          this.#logger.error({ recordingId: item.recordingId, participantId: item.participantId, segment: item.segment, objectKey: item.objectKey }, 'discarding a corrupt spool item');
          await this.#spool.remove(item);
          return;
        }
        throw err;
      }
      await this.#put(item.bucketRole, item.objectKey, body, { recordingId: item.recordingId, participantId: item.participantId }, item.tags, item.metadata);
      // Only now, with the PUT confirmed: a crash before this line re-uploads the same key, which
      // overwrites identical bytes (idempotent), never a duplicate.
      await this.#spool.remove(item);
      this.#stats.drained++;
    })();
    await this.#trackInflight(item.recordingId, item.participantId, op);
  }

  /**
   * Crash repair: rebuild the manifest's segment list and key ids from what is in the store (the
   * spool has drained by now), close a recording left in 'recording' state as 'interrupted'.
   * Segments listed but absent everywhere are dropped (with a warning): the manifest must describe
   * what exists.
   */
  async #repair(recordingId: string): Promise<void> {
    if (this.#active.has(recordingId) || this.#deleted.has(recordingId)) return;
    await this.#serialRun(recordingId, async () => {
      const manifest = await this.#loadManifest(recordingId);
      const listing = await this.#listRemote({ recordingId });
      if (manifest === null) {
        if (listing.mediaObjects.length > 0 || listing.keyObjects.length > 0) {
          this.#logger.error({ recordingId }, 'objects without a manifest; they will expire by lifecycle rule');
        }
        return;
      }
      let changed = false;
      const present = new Set(listing.mediaObjects.map((o) => o.name));
      const listed = new Set(manifest.segments.map((s) => s.objectKey));
      for (const name of present) {
        const parsed = parseMediaObjectKey(name);
        if (parsed === null || listed.has(name)) continue;
        const p = manifest.participants.find((q) => q.participantId === parsed.participantId);
        if (p === undefined || p.erased !== undefined) continue;
        const stat = await this.#client.statObject(this.buckets.media, name);
        const meta = decodeSegmentMeta((stat.metaData as Record<string, unknown>)[SEGMENT_META_HEADER.slice('x-amz-meta-'.length)]);
        if (meta === null || meta.objectKey !== name) {
          this.#logger.warn({ recordingId, objectKey: name }, 'media object without readable segment metadata; left out of the manifest');
          continue;
        }
        const { expiresAtMs: _ignored, ...seg } = meta;
        upsertSegment(manifest, seg);
        changed = true;
      }
      const before = manifest.segments.length;
      manifest.segments = manifest.segments.filter((s) => present.has(s.objectKey));
      if (manifest.segments.length !== before) {
        this.#logger.warn({ recordingId, dropped: before - manifest.segments.length }, 'segments listed in the manifest but absent from the store');
        changed = true;
      }
      for (const o of listing.keyObjects) {
        const k = parseDataKeyObjectKey(o.name);
        const p = k && manifest.participants.find((q) => q.participantId === k.participantId);
        if (!p || p.dataKeyId) continue;
        const body = await this.#readObject('keys', o.name);
        if (body === null) continue;
        const doc = parseKeyDoc(body, recordingId, p.participantId);
        p.dataKeyId = doc.dataKeyId;
        p.kekId = doc.kekId;
        changed = true;
      }
      if (manifest.state === 'recording' && manifest.nodeId === this.nodeId) {
        manifest.state = 'interrupted';
        manifest.endedAtMs = manifest.segments.reduce((mx, s) => Math.max(mx, s.startWallClockMs + s.durationMs), manifest.startedAtMs);
        changed = true;
      }
      if (changed) {
        await this.#storeManifest(manifest, true);
        this.#logger.info({ recordingId, segments: manifest.segments.length, state: manifest.state }, 'manifest repaired');
      }
      this.sweeper.schedule(recordingId, manifest.expiresAtMs);
    });
  }

  /** The sweeper's scan: manifests it does not know yet; also finds this node's interrupted recordings. */
  async *#scanManifests(isKnown: (id: string) => boolean): AsyncGenerator<{ recordingId: string; expiresAtMs: number }> {
    if (!this.#setupDone) return;
    const fresh: string[] = [];
    for await (const o of this.#listObjects(this.buckets.keys, MANIFESTS_PREFIX, false)) {
      const id = parseManifestObjectKey(o.name);
      if (id !== null && !isKnown(id) && !this.#deleted.has(id)) fresh.push(id);
    }
    for (const id of fresh) {
      if (this.#closed) return;
      let m: RecordingManifest | null;
      try {
        m = await this.#loadManifest(id);
      } catch (err) {
        this.#logger.warn({ recordingId: id, err: describe(err) }, 'unreadable manifest skipped by the sweeper scan');
        continue;
      }
      if (m === null) continue;
      if (m.state === 'recording' && m.nodeId === this.nodeId && !this.#active.has(id)) {
        this.#repairPending.add(id);
        this.#wakeUp();
      }
      yield { recordingId: id, expiresAtMs: m.expiresAtMs };
    }
  }

  // ---------------------------------------------------------------------------------------------

  #serialRun<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#serial.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#serial.set(key, tail);
    void tail.then(() => {
      if (this.#serial.get(key) === tail) this.#serial.delete(key);
    });
    return run;
  }

  #assertOpen(): void {
    if (this.#closed) throw new OptinError('STORE_CLOSED', 'the recording store is closed');
  }

  #requireActive(recordingId: string): Active {
    const rec = this.#active.get(recordingId);
    if (rec !== undefined) return rec;
    if (this.#deleted.has(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; nothing more is stored for it`);
    throw new OptinError('RECORDING_NOT_ACTIVE', `recording ${recordingId} is not active in this process (unknown or already ended); call beginRecording first`);
  }

  #requireActiveOrThrow(recordingId: string): never {
    this.#requireActive(recordingId);
    throw new OptinError('RECORDING_NOT_ACTIVE', `recording ${recordingId} ended while waiting`);
  }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

function keyContext(doc: { recordingId: string; participantId: string; dataKeyId: string }): string {
  return `optin/datakey/${doc.recordingId}/${doc.participantId}/${doc.dataKeyId}`;
}

function parseKeyDoc(body: Buffer, recordingId: string, participantId: string): DataKeyDoc {
  let doc: DataKeyDoc;
  try {
    doc = JSON.parse(body.toString('utf8')) as DataKeyDoc;
  } catch {
    throw new OptinError('DATA_KEY_INVALID', `the stored data key of ${recordingId}/${participantId} is not JSON`);
  }
  if (doc.format !== 'optin-datakey/1' || doc.recordingId !== recordingId || doc.participantId !== participantId || typeof doc.dataKeyId !== 'string') {
    throw new OptinError('DATA_KEY_INVALID', `the stored data key of ${recordingId}/${participantId} belongs elsewhere or is malformed`);
  }
  return doc;
}

/** A receipt with nothing destroyed yet; the deletion fills it in as it goes. */
function emptyReceipt(
  receiptId: string,
  kind: DeletionReceipt['kind'],
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

/** Validates the R6 evidence kept with a recording (bounded: at most 512 windows). */
function checkPolicy(policy: RecordingPolicy): RecordingPolicy {
  const ok =
    Array.isArray(policy.agentWindows) &&
    policy.agentWindows.length <= 512 &&
    policy.agentWindows.every((w) => Number.isFinite(w.start) && Number.isFinite(w.end) && w.end > w.start) &&
    Number.isInteger(policy.monthlyCap) &&
    policy.monthlyCap >= 0;
  if (!ok) throw new OptinError('INVALID_INPUT', 'policy must be { agentWindows: [{ start, end }] (<= 512, end > start), monthlyCap: integer >= 0 }');
  return { agentWindows: policy.agentWindows.map((w) => ({ start: w.start, end: w.end })), monthlyCap: policy.monthlyCap };
}

function eraseParticipant(m: RecordingManifest, participantId: string, reason: string, atMs: number): boolean {
  const p = m.participants.find((q) => q.participantId === participantId);
  const before = m.segments.length;
  m.segments = m.segments.filter((s) => s.participantId !== participantId);
  if (p === undefined) return before !== m.segments.length;
  const already = p.erased !== undefined && p.subjectId === undefined && p.dataKeyId === undefined;
  delete p.subjectId;
  delete p.teamLeadId;
  delete p.dataKeyId;
  delete p.kekId;
  p.erased ??= { atMs, reason };
  return !already || before !== m.segments.length;
}

function summarize(m: RecordingManifest): RecordingSummary {
  return {
    recordingId: m.recordingId,
    callId: m.callId,
    state: m.state,
    startedAt: new Date(m.startedAtMs).toISOString(),
    ...(m.endedAtMs === undefined ? {} : { endedAt: new Date(m.endedAtMs).toISOString() }),
    expiresAt: m.expiresAt,
    retentionClass: m.retentionClass,
    participants: m.participants.map((p) => {
      const segs = m.segments.filter((s) => s.participantId === p.participantId);
      return {
        participantId: p.participantId,
        role: p.role,
        ...(p.subjectId === undefined ? {} : { subjectId: p.subjectId }),
        erased: p.erased !== undefined,
        segments: segs.length,
        durationMs: segs.reduce((a, s) => a + s.durationMs, 0),
      };
    }),
    segments: m.segments.length,
    sealedBytes: m.segments.reduce((a, s) => a + s.sealedBytes, 0),
  };
}

function notFound(recordingId: string): OptinError {
  return new OptinError('RECORDING_NOT_FOUND', `no recording ${recordingId} (never recorded, deleted, or expired)`);
}

function lockedError(bucket: string, objectKey: string, what: string): OptinError {
  return new OptinError(
    'OBJECT_LOCKED',
    `object ${objectKey} in bucket ${bucket} is protected by ${what}; deletion refused and nothing was deleted. ` +
      'Ask the storage administrator to lift the lock (object lock must not be enabled on optin buckets), then retry.',
  );
}

function storeError(err: unknown, what: string): OptinError {
  if (err instanceof OptinError) return err;
  return new OptinError('STORAGE_UNAVAILABLE', `object store: ${what} failed (${describe(err)}); check the S3 endpoint`, { retryable: true, cause: err });
}

/** A reason is a short code ('agent-request', 'consent-withdrawn-erase'); it becomes the audit purpose. */
function checkReason(value: unknown): asserts value is string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9][\x20-\x7e]{0,127}$/.test(value)) {
    throw new OptinError('INVALID_INPUT', 'reason must be a short code of 1-128 printable ASCII characters, e.g. "agent-request" (no personal data)');
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Rejects after `ms` with a retryable OptinError; the underlying request keeps its own fate. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new OptinError('STORAGE_TIMEOUT', `${what} took longer than ${ms} ms`, { retryable: true })), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function mapLimit<T>(items: T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
