import { sha256Hex } from '../crypto/digest.ts';
import { Keyring, type WrapAlg } from '../crypto/Keyring.ts';
import { SEAL_MAX_PLAINTEXT_BYTES, sealSegment } from '../crypto/segmentSeal.ts';
import { OptinError } from '../errors/OptinError.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { assertId } from '../ids/ids.ts';
import type { Logger } from '../log/logger.ts';
import { newDataKeyDocument } from './dataKeys.ts';
import { checkBeginInput, checkDeletion, checkPolicy, checkSegmentInput, checkStoreOptions, oggBytesOf } from './inputs.ts';
import { dataKeyObjectKey, isoSeconds, mediaObjectKey, mediaTags, retentionClass, type BucketNames } from './layout.ts';
import {
  MANIFEST_FORMAT,
  SEGMENT_META_HEADER,
  cloneManifest,
  encodeSegmentMeta,
  upsertSegment,
  type ManifestSegment,
  type RecordingManifest,
} from './manifest.ts';
import { RecordingDeletion } from './RecordingDeletion.ts';
import { RecordingReader, type LocalCopies } from './RecordingReader.ts';
import { RecordingRegistry, zeroKeys, type ActiveRecording, type Track } from './RecordingRegistry.ts';
import { Recovery } from './Recovery.ts';
import { S3Objects } from './S3Objects.ts';
import { describeS3Error } from './s3Errors.ts';
import { Spool, type SpoolState } from './Spool.ts';
import { Sweeper } from './Sweeper.ts';
import type {
  BeginRecordingInput,
  DeletionOptions,
  DeletionReceipt,
  HeldSegment,
  PutSegmentResult,
  RecordingSource,
  RecordingStoreEvents,
  RecordingStoreOptions,
  RecordingSummary,
  SegmentBody,
  SegmentInput,
  StoreCloseResult,
  StoreStats,
  TrackSegment,
} from './types.ts';
import { Uploader } from './Uploader.ts';

/**
 * The storage API the recorder calls (DESIGN §5, R8, R9): sealed, expiring, durable.
 *
 * - Every participant of every recording has its own random data key, wrapped by the keyring's
 *   active KEK and stored in the keys bucket BEFORE any of that participant's media (dataKeys.ts).
 * - Segments are sealed (src/crypto/segmentSeal.ts) and PUT with their tags on the same request
 *   (S3Objects.ts).
 * - When the store is slow or down, sealed segments (and wrapped keys, and manifests) go to a
 *   bounded local spool in order; a single background uploader drains it exactly once (Uploader.ts).
 * - Deletion crypto-shreds first (keys), then removes media, spool copies and the manifest, and
 *   returns a receipt that is also appended to the audit trail (RecordingDeletion.ts). Expiry is
 *   the same deletion, triggered by the sweeper at the exact instant (Sweeper.ts).
 * - Reads go through a RecordingReader that also sees what only this process holds yet.
 * - After a crash, the spool is resumed and manifests are repaired from the store (Recovery.ts).
 *
 * This class is the facade that composes those parts: it owns the write path (begin, put, end),
 * the per-track queues and the manifest writes of active recordings. The package's public files
 * are listed in types.ts.
 */

const DEFAULT_UPLOAD_TIMEOUT_MS = 5_000;
const DEFAULT_MAX_SEGMENT_BYTES = 8 * 1024 * 1024;

export class RecordingStore extends TypedEmitter<RecordingStoreEvents> implements RecordingSource {
  readonly buckets: Readonly<BucketNames>;
  readonly retentionSeconds: number;
  readonly nodeId: string;
  readonly sweeper: Sweeper;

  readonly #spool: Spool;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #maxSegmentBytes: number;
  readonly #region: string;
  readonly #wrapAlg: WrapAlg;
  #keyring: Keyring;

  readonly #objects: S3Objects;
  readonly #registry = new RecordingRegistry();
  readonly #reader: RecordingReader;
  readonly #uploader: Uploader;
  readonly #closeDrainMs: number;
  readonly #deletion: RecordingDeletion;
  readonly #recovery: Recovery;

  #closed = false;
  #flushTimer: NodeJS.Timeout | undefined;

  private constructor(options: RecordingStoreOptions, spool: Spool, retentionSeconds: number) {
    super();
    this.buckets = Object.freeze({ ...options.buckets });
    this.#keyring = options.keyring;
    this.#spool = spool;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.retentionSeconds = retentionSeconds;
    this.nodeId = options.nodeId ?? 'local';
    this.#maxSegmentBytes = Math.min(options.maxSegmentBytes ?? DEFAULT_MAX_SEGMENT_BYTES, SEAL_MAX_PLAINTEXT_BYTES);
    this.#region = options.region ?? 'us-east-1';
    this.#wrapAlg = options.wrapAlg ?? 'A256GCM';
    const uploadTimeoutMs = options.uploadTimeoutMs ?? DEFAULT_UPLOAD_TIMEOUT_MS;
    this.#closeDrainMs = options.closeDrainMs ?? 2 * uploadTimeoutMs;

    this.#objects = new S3Objects(options.client, this.buckets, uploadTimeoutMs, { ...(options.mediaPut === undefined ? {} : { mediaPut: options.mediaPut }) });
    this.#reader = new RecordingReader(
      {
        client: options.client,
        buckets: this.buckets,
        keyring: options.keyring,
        now: this.#now,
        onManifestRefused: (recordingId, err) => this.#logger.error({ recordingId, err: err.message }, 'manifest refused: its MAC does not verify (changed outside optin)'),
      },
      { objects: this.#objects, local: localCopies(this.#registry, spool) },
    );
    this.sweeper = new Sweeper({
      target: { scan: (isKnown) => this.#recovery.scan(isKnown), expire: (id) => this.#deletion.expire(id) },
      logger: this.#logger,
      now: this.#now,
      scanIntervalMs: options.sweepScanIntervalMs ?? 60_000,
    });
    this.#uploader = new Uploader({
      objects: this.#objects,
      spool,
      registry: this.#registry,
      chores: {
        setup: () => this.#objects.ensureBuckets(this.retentionSeconds, this.#region, this.#logger),
        completeTombstone: (t) => this.#deletion.completeTombstone(t),
        repair: (id) => this.#recovery.repair(id),
        flushDirty: () => this.#flushDirty(),
      },
      logger: this.#logger,
      now: this.#now,
      drainConcurrency: Math.max(1, Math.min(64, options.drainConcurrency ?? 8)),
      retryMinMs: options.retryMinMs ?? 250,
      retryMaxMs: options.retryMaxMs ?? 5_000,
      manifestAuth: () => this.#keyring,
      ...(options.writeGuard === undefined ? {} : { guard: options.writeGuard }),
    });
    const parts = { registry: this.#registry, reader: this.#reader, objects: this.#objects, uploader: this.#uploader, sweeper: this.sweeper, logger: this.#logger };
    this.#deletion = new RecordingDeletion({
      ...parts,
      spool,
      audit: options.audit,
      now: this.#now,
      inflightWaitMs: uploadTimeoutMs * 2,
      onDeleted: (receipt) => this.safeEmit('deleted', receipt),
    });
    this.#recovery = new Recovery({ ...parts, nodeId: this.nodeId, isClosed: () => this.#closed, onRepaired: (summary) => this.safeEmit('repaired', summary) });
    spool.on('change', (s) => this.safeEmit('spoolchange', s));
    spool.on('item', () => this.#uploader.wakeUp());
    this.#uploader.on('drained', () => this.safeEmit('drained'));
  }

  /**
   * Validates options, recovers the spool of a previous process, ensures buckets and lifecycle
   * rules (deferred to the uploader if the store is unreachable: the worker still starts and
   * spools), and starts the uploader, the manifest flush tick and the sweeper.
   */
  static async open(options: RecordingStoreOptions): Promise<RecordingStore> {
    const retention = checkStoreOptions(options);
    const spool = await Spool.open({ dir: options.spoolDir, maxBytes: options.spoolMaxBytes, logger: options.logger, now: options.now });
    const store = new RecordingStore(options, spool, retention);
    try {
      await store.#uploader.setup();
    } catch (err) {
      options.logger.warn({ err: describeS3Error(err) }, 'object store not ready at startup; spooling until it is');
    }
    store.#recovery.resumeFromSpool(spool);
    store.#uploader.start();
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
    this.#reader.setKeyring(keyring);
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
    const { uploaded, spooled, drained, uploadLatencyMs } = this.#uploader.counts();
    return { uploaded, spooled, drained, spool: this.#spool.state(), uploadLatencyMs };
  }

  /** Resolves when the spool is empty and no deletion is pending remotely (or rejects after timeoutMs). */
  drained(timeoutMs = 60_000): Promise<void> {
    return this.#uploader.whenDrained(timeoutMs);
  }

  /**
   * True when this process holds something of the recording: it is active here, or objects of it
   * wait in the spool (a recording of a previous run of this node). Such a node must carry out a
   * deletion itself: nobody else can reach its spool.
   */
  holds(recordingId: string): boolean {
    return this.#registry.has(recordingId) || this.#spool.list().some((it) => it.recordingId === recordingId);
  }

  /** The write guard's answers may have changed (the policy stream is fresh again): resume uploads. */
  writeGuardChanged(): void {
    this.#uploader.wakeUp();
  }

  /**
   * A recording the write guard says was deleted elsewhere: this process forgets it at once (data
   * keys zeroed, no manifest rewritten by the flush tick) and refuses every later write for it.
   */
  #refuseTombstoned(recordingId: string, participantId?: string): void {
    if (!this.#uploader.isDeleted(recordingId, participantId)) return;
    if (this.#uploader.isDeleted(recordingId)) {
      const rec = this.#registry.get(recordingId);
      if (rec !== undefined) {
        zeroKeys(rec);
        this.#registry.delete(recordingId);
        this.#logger.info({ recordingId }, 'recording deleted elsewhere (tombstone): forgotten, nothing more is written');
      }
      this.#registry.rememberDeleted(recordingId);
    }
    throw new OptinError('RECORDING_DELETED', `recording ${recordingId}${participantId === undefined ? '' : ` (participant ${participantId})`} was deleted; nothing more is stored for it`);
  }

  // ---- recording lifecycle ----

  /** Starts a recording: validates everything, writes the manifest (store or spool), schedules expiry. */
  async beginRecording(input: BeginRecordingInput): Promise<RecordingManifest> {
    this.#assertOpen();
    const now = this.#now();
    const { recordingId, callId, startedAtMs, participants, consentEvidence } = checkBeginInput(input, now);
    const expiresAtMs = startedAtMs + this.retentionSeconds * 1000;
    if (expiresAtMs <= now) throw new OptinError('RECORDING_EXPIRED', `recording ${recordingId} would already be expired (startedAt + retention is in the past)`);
    if (this.#registry.isDeleted(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; start a new recording id`);
    this.#refuseTombstoned(recordingId);

    const existing = this.#registry.get(recordingId);
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
    const rec: ActiveRecording = { manifest, tracks: new Map(), dirty: true };
    this.#registry.set(recordingId, rec);
    try {
      // Durable: the manifest carries the consent evidence; it must survive a crash even in an outage.
      await this.#writeManifest(recordingId, true);
    } catch (err) {
      this.#registry.delete(recordingId);
      throw err;
    }
    this.sweeper.schedule(recordingId, expiresAtMs);
    this.#logger.info({ recordingId, callId, participants: participants.length, expiresAt: manifest.expiresAt }, 'recording started');
    return cloneManifest(manifest);
  }

  /**
   * Seals and stores one segment. Resolves once the sealed segment is in the store ('uploaded') or
   * durably in the local spool ('spooled'). Throws STORAGE_UNAVAILABLE when the spool is full.
   * `ogg` is the Ogg file, or a media thread's handle on one it holds (HeldSegment): the checks,
   * the data key and the books stay here, the sealing and the PUT happen in that thread.
   */
  async putSegment(meta: SegmentInput, ogg: SegmentBody): Promise<PutSegmentResult> {
    this.#assertOpen();
    const quality = checkSegmentInput(meta, ogg, this.#maxSegmentBytes);
    const m = meta;
    this.#refuseTombstoned(m.recordingId, m.participantId);
    const rec = this.#registry.require(m.recordingId);
    const participant = rec.manifest.participants.find((p) => p.participantId === m.participantId);
    if (participant === undefined) {
      throw new OptinError('PARTICIPANT_UNKNOWN', `participant ${m.participantId} is not part of recording ${m.recordingId}; list it in beginRecording`);
    }
    if (participant.erased !== undefined) throw new OptinError('PARTICIPANT_ERASED', `participant ${m.participantId} of recording ${m.recordingId} was erased; nothing more is stored for it`);
    if (this.#now() >= rec.manifest.expiresAtMs) throw new OptinError('RECORDING_EXPIRED', `recording ${m.recordingId} reached its retention limit (${rec.manifest.expiresAt})`);
    this.#registry.refuseIfDeleting(m.recordingId, m.participantId);

    let track = rec.tracks.get(m.participantId);
    if (track === undefined) {
      track = { participantId: m.participantId, dataKey: null, lastSegment: -1, chain: Promise.resolve() };
      rec.tracks.set(m.participantId, track);
    }
    const t = track;
    const run = t.chain.then(() => this.#putSegmentNow(rec, t, { ...m, quality }, ogg));
    t.chain = run.catch(() => undefined);
    return this.#registry.track(m.recordingId, m.participantId, run);
  }

  /** Final manifest (segments, end time, expiry); zeroes the recording's data keys. */
  async endRecording(recordingId: string): Promise<RecordingManifest> {
    this.#assertOpen();
    assertId('recordingId', recordingId);
    this.#refuseTombstoned(recordingId);
    const rec = this.#registry.require(recordingId);
    // Let queued segments finish first: the final manifest lists them.
    await Promise.all([...rec.tracks.values()].map((t) => t.chain));
    this.#refuseTombstoned(recordingId);
    if (this.#registry.get(recordingId) !== rec) {
      this.#registry.require(recordingId);
      throw new OptinError('RECORDING_NOT_ACTIVE', `recording ${recordingId} ended while waiting`);
    }
    rec.manifest.state = 'ended';
    rec.manifest.endedAtMs = this.#now();
    rec.dirty = true;
    try {
      await this.#writeManifest(recordingId, true);
    } catch (err) {
      // Neither store nor spool took it (spool full). The segments are safe; crash repair rebuilds
      // the list from them and closes the recording once the store is back.
      this.#uploader.queueRepair(recordingId);
      throw err;
    } finally {
      zeroKeys(rec);
      this.#registry.delete(recordingId);
    }
    this.#logger.info({ recordingId, segments: rec.manifest.segments.length }, 'recording ended');
    return cloneManifest(rec.manifest);
  }

  // ---- reading (the reader, with this process's active manifests and spool laid over the store) ----

  /** The manifest of one recording (metadata only), or RECORDING_NOT_FOUND. */
  async getManifest(recordingId: string): Promise<RecordingManifest> {
    this.#assertOpen();
    return this.#reader.getManifest(recordingId);
  }

  /** Summaries of every recording in the store (metadata only; no audio, no keys). */
  async listRecordings(): Promise<RecordingSummary[]> {
    this.#assertOpen();
    return this.#reader.listRecordings();
  }

  /** Every recording's manifest, oldest first (metadata only; no audio, no keys). */
  async listManifests(): Promise<RecordingManifest[]> {
    this.#assertOpen();
    return this.#reader.listManifests();
  }

  /** One participant's track, verified and decrypted (see RecordingReader.openTrack). */
  async *openTrack(recordingId: string, participantId: string): AsyncGenerator<TrackSegment, void, undefined> {
    this.#assertOpen();
    yield* this.#reader.openTrack(recordingId, participantId);
  }

  // ---- deletion ----

  /**
   * Complete deletion (R9), see RecordingDeletion: keys first, then media, spool copies and the
   * manifest. Idempotent: a second call returns a receipt with `nothingLeft: true`. Refuses with
   * OBJECT_LOCKED, before destroying anything, when an object lock would block the deletion.
   * During an outage the local part happens at once and the rest is completed by the uploader
   * when the store returns (receipt `complete: false`; a second audit entry when done).
   */
  async deleteRecording(recordingId: string, options: DeletionOptions): Promise<DeletionReceipt> {
    this.#assertOpen();
    const { participantId, reason, actor } = checkDeletion(recordingId, options);
    return this.#deletion.delete({ recordingId, participantId }, reason, actor, 'deletion');
  }

  /**
   * Stops the uploader, flush tick and sweeper; writes active manifests (store or spool); zeroes
   * keys. Idempotent (a second call answers as clean: it has nothing left to do). Says whether
   * everything is durably in the store: `clean` is false when a manifest could not be written or
   * the spool did not drain within `closeDrainMs` (what is left is on disk for the next start),
   * so a process does not claim a clean stop it did not make.
   */
  async close(): Promise<StoreCloseResult> {
    if (this.#closed) return { clean: true, manifestsNotSaved: 0, drained: true, spoolItemsLeft: 0 };
    this.#closed = true;
    this.sweeper.close();
    if (this.#flushTimer !== undefined) clearInterval(this.#flushTimer);
    let manifestsNotSaved = 0;
    for (const [id, rec] of this.#registry.entries()) {
      await Promise.all([...rec.tracks.values()].map((t) => t.chain));
      await this.#writeManifest(id, true, true).catch((err: unknown) => {
        manifestsNotSaved++;
        this.#logger.error({ recordingId: id, err: describeS3Error(err) }, 'could not save the manifest at close; crash repair will rebuild it');
      });
      zeroKeys(rec);
    }
    // A graceful stop gives what waits in the spool (segments and manifests that met a slow store)
    // a bounded chance to land; what does not stays spooled for the next start.
    let drained = true;
    await this.#uploader.whenDrained(this.#closeDrainMs).catch((err: Error) => {
      drained = false;
      this.#logger.warn({ err: err.message }, 'spool not drained at close; the next start uploads the rest');
    });
    const spoolItemsLeft = drained ? 0 : this.#spool.size();
    await this.#uploader.close();
    this.#objects.close();
    this.#registry.clear();
    this.#spool.removeAllListeners();
    return { clean: drained && manifestsNotSaved === 0, manifestsNotSaved, drained, spoolItemsLeft };
  }

  // ---------------------------------------------------------------------------------------------
  // The write path
  // ---------------------------------------------------------------------------------------------

  async #putSegmentNow(rec: ActiveRecording, track: Track, m: SegmentInput, ogg: SegmentBody): Promise<PutSegmentResult> {
    const { recordingId, participantId, segment } = m;
    if (this.#registry.get(recordingId) !== rec) this.#registry.require(recordingId);
    this.#registry.refuseIfDeleting(recordingId, participantId);
    this.#refuseTombstoned(recordingId, participantId);
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
    const aad = { bucket: this.buckets.media, objectKey, recordingId, participantId, segment };
    // A segment a media thread holds is sealed there (and PUT from there); its bytes stay there.
    let body: Buffer | HeldSegment;
    let sealedBytes: number;
    let sha256: string;
    if (Buffer.isBuffer(ogg)) {
      body = sealSegment(dataKey, ogg, aad);
      sealedBytes = body.length;
      sha256 = sha256Hex(body);
    } else {
      ({ sealedBytes, sha256 } = await ogg.seal(dataKey, aad));
      body = ogg;
    }
    const seg: ManifestSegment = {
      participantId,
      segment,
      run: m.run,
      objectKey,
      startWallClockMs: m.startWallClockMs,
      durationMs: m.durationMs,
      opusPayloadBytes: m.opusPayloadBytes,
      oggBytes: oggBytesOf(ogg),
      sealedBytes,
      sha256,
      quality: m.quality,
    };
    const expiresAtMs = rec.manifest.expiresAtMs;
    const tags = mediaTags({ recordingId, expiresAtMs, retentionSeconds: rec.manifest.retentionSeconds });
    const metadata = { 'Content-Type': 'application/octet-stream', [SEGMENT_META_HEADER]: encodeSegmentMeta(seg, expiresAtMs) };
    const stored = await this.#uploader.send(
      { kind: 'media', bucketRole: 'media', objectKey, recordingId, participantId, segment, tags, metadata, expiresAtMs },
      body,
    );
    track.lastSegment = segment;
    upsertSegment(rec.manifest, seg);
    rec.dirty = true;
    return { stored, objectKey, sealedBytes, sha256 };
  }

  /** First segment of a track: a fresh data key, wrapped, stored (or spooled) before any media. */
  async #createDataKey(rec: ActiveRecording, track: Track): Promise<void> {
    const { recordingId } = rec.manifest;
    const { participantId } = track;
    const { dataKey, doc, body } = newDataKeyDocument(this.#keyring, this.#wrapAlg, { recordingId, participantId }, this.#now());
    try {
      const objectKey = dataKeyObjectKey(recordingId, participantId);
      await this.#uploader.send({ kind: 'key', bucketRole: 'keys', objectKey, recordingId, participantId, expiresAtMs: rec.manifest.expiresAtMs }, body);
      const p = rec.manifest.participants.find((q) => q.participantId === participantId);
      if (p !== undefined) {
        p.dataKeyId = doc.dataKeyId;
        p.kekId = doc.kekId;
      }
      track.dataKey = dataKey;
      rec.dirty = true;
    } catch (err) {
      dataKey.fill(0);
      throw err;
    }
  }

  /**
   * Writes an active recording's manifest, serialized per recording so revisions land in order.
   * `durable`: if the store cannot take it now, spool it (replacing older spooled versions);
   * otherwise leave it dirty for the next flush (segment-only changes: crash repair rebuilds those
   * from the objects themselves).
   */
  #writeManifest(recordingId: string, durable: boolean, force = false): Promise<'uploaded' | 'spooled' | 'deferred'> {
    return this.#registry.serial(recordingId, async () => {
      const rec = this.#registry.get(recordingId);
      if (rec === undefined) return 'deferred';
      if (this.#uploader.isDeleted(recordingId)) {
        // Deleted elsewhere: never rewritten (the flush tick must not resurrect it).
        try {
          this.#refuseTombstoned(recordingId);
        } catch {
          return 'deferred';
        }
      }
      if (!rec.dirty && !force && !durable) return 'deferred';
      const how = await this.#uploader.sendManifest(rec.manifest, durable);
      if (how !== 'deferred') rec.dirty = false;
      return how;
    });
  }

  async #flushDirty(): Promise<void> {
    if (this.#closed || !this.#uploader.canGoDirect()) return;
    for (const [id, rec] of this.#registry.entries()) {
      if (!rec.dirty) continue;
      await this.#writeManifest(id, false).catch((err: unknown) => this.#logger.warn({ recordingId: id, err: describeS3Error(err) }, 'manifest flush failed'));
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new OptinError('STORE_CLOSED', 'the recording store is closed');
  }
}

/** What the reader must see before the store has it: active manifests in memory, objects in the spool. */
function localCopies(registry: RecordingRegistry, spool: Spool): LocalCopies {
  return {
    manifest: (recordingId) => {
      const rec = registry.get(recordingId);
      return rec === undefined ? undefined : cloneManifest(rec.manifest);
    },
    manifests: () => [...registry.entries()].map(([, rec]) => cloneManifest(rec.manifest)),
    spooledManifestIds: () => spool.list().flatMap((it) => (it.kind === 'manifest' ? [it.recordingId] : [])),
    read: async (role, objectKey) => {
      const item = spool.find(role, objectKey);
      if (item === undefined) return undefined;
      try {
        return await spool.read(item);
      } catch (err) {
        if (spool.has(item)) throw err;
        // Uploaded and removed between find and read: it is in the store now.
        return undefined;
      }
    },
  };
}
