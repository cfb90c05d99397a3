import { isOptinError, OptinError } from '../errors/OptinError.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import type { Logger } from '../log/logger.ts';
import { manifestObjectKey } from './layout.ts';
import { sealManifest, type ManifestAuthenticator, type RecordingManifest } from './manifest.ts';
import type { RecordingRegistry } from './RecordingRegistry.ts';
import type { S3Objects } from './S3Objects.ts';
import { describeS3Error } from './s3Errors.ts';
import type { BucketRole, Spool, SpoolItem, SpoolItemMeta, SpoolTombstone } from './Spool.ts';
import type { HeldSegment, WriteGuard } from './types.ts';

/**
 * Gets the store's objects into S3 (DESIGN §5, §7 "a store outage of minutes loses nothing"):
 * directly while the store answers and nothing waits in the spool, through the spool otherwise.
 *
 * One background loop, no busy wait, drains what waits: pending deletions (tombstones) first,
 * then spool items in order, then crash repairs; it sleeps until woken by new work and backs off
 * exponentially (with jitter) while the store fails. Exactly once: an item leaves the spool only
 * after its PUT is confirmed, and a re-upload after a crash rewrites the same key with the same
 * bytes, never a second object.
 *
 * What a drain needs besides uploads (bucket setup, completing a tombstone, repairing a manifest,
 * flushing dirty manifests) is the store's, passed in as `UploaderChores`.
 *
 * The write guard (types.ts WriteGuard) is asked before every PUT: an object of a recording (or
 * participant) deleted elsewhere is never written, and one waiting in the spool is discarded;
 * while the guard forbids uploads (the policy stream is stale) everything waits in the spool and
 * only the remote halves of deletions proceed.
 */

export interface UploaderChores {
  /** Buckets and lifecycle rules; retried by the loop until it succeeds. */
  setup(): Promise<void>;
  /** The remote half of a deletion that met an outage. */
  completeTombstone(t: SpoolTombstone): Promise<void>;
  /** Crash repair of one recording's manifest. */
  repair(recordingId: string): Promise<void>;
  /** Write the dirty manifests of active recordings. */
  flushDirty(): Promise<void>;
}

export interface UploaderOptions {
  objects: S3Objects;
  spool: Spool;
  registry: RecordingRegistry;
  chores: UploaderChores;
  logger: Logger;
  now: () => number;
  /** Spool items uploaded in parallel (one per lane at a time). */
  drainConcurrency: number;
  /** Retry backoff bounds, ms. */
  retryMinMs: number;
  retryMaxMs: number;
  /** Signs each manifest written (the keyring; read at each write, so rotation applies at once). */
  manifestAuth: () => ManifestAuthenticator;
  guard?: WriteGuard;
}

export type UploaderEvents = {
  /** The spool became empty with nothing left to retry. */
  drained: [];
};

export interface UploadCounts {
  uploaded: number;
  spooled: number;
  drained: number;
}

const LATENCY_WINDOW = 1024;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export class Uploader extends TypedEmitter<UploaderEvents> {
  readonly #objects: S3Objects;
  readonly #spool: Spool;
  readonly #registry: RecordingRegistry;
  readonly #chores: UploaderChores;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #drainConcurrency: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #manifestAuth: () => ManifestAuthenticator;
  readonly #guard: WriteGuard | undefined;

  readonly #repairPending = new Set<string>();
  readonly #latencies: number[] = [];
  readonly #counts: UploadCounts = { uploaded: 0, spooled: 0, drained: 0 };
  #setupDone = false;
  #closed = false;
  #wake: (() => void) | undefined;
  /** True while the loop backs off after a failure: new work must not cut the backoff short. */
  #backingOff = false;
  #sleepTimer: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #failures = 0;

  constructor(options: UploaderOptions) {
    super();
    this.#objects = options.objects;
    this.#spool = options.spool;
    this.#registry = options.registry;
    this.#chores = options.chores;
    this.#logger = options.logger;
    this.#now = options.now;
    this.#drainConcurrency = options.drainConcurrency;
    this.#retryMinMs = options.retryMinMs;
    this.#retryMaxMs = options.retryMaxMs;
    this.#manifestAuth = options.manifestAuth;
    this.#guard = options.guard;
  }

  /** Buckets and lifecycle rules are in place (until then everything is spooled). */
  get ready(): boolean {
    return this.#setupDone;
  }

  async setup(): Promise<void> {
    await this.#chores.setup();
    this.#setupDone = true;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops the loop (an upload in progress finishes first). Later writes go to the spool. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sleepTimer !== undefined) clearTimeout(this.#sleepTimer);
    this.wakeUp(true);
    await this.#loop?.catch(() => undefined);
  }

  counts(): UploadCounts & { uploadLatencyMs: { p50: number; p99: number; samples: number } } {
    const sorted = [...this.#latencies].sort((a, b) => a - b);
    return { ...this.#counts, uploadLatencyMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length } };
  }

  // ---- writes ----

  canGoDirect(): boolean {
    // Keep order: while anything waits in the spool, new objects queue behind it.
    return this.#setupDone && !this.#closed && this.#spool.isEmpty() && this.#mayUpload();
  }

  #mayUpload(): boolean {
    return this.#guard === undefined || this.#guard.mayUpload();
  }

  /** True when the guard says this object's recording (or participant) was deleted. */
  isDeleted(recordingId: string, participantId?: string): boolean {
    return this.#guard !== undefined && this.#guard.isDeleted(recordingId, participantId);
  }

  #refuseDeleted(meta: { recordingId: string; participantId?: string }): void {
    if (this.isDeleted(meta.recordingId, meta.participantId)) {
      throw new OptinError('RECORDING_DELETED', `recording ${meta.recordingId}${meta.participantId === undefined ? '' : ` (participant ${meta.participantId})`} was deleted; nothing more is stored for it`);
    }
  }

  /**
   * Stores one object: a direct PUT when possible, else (or when it fails) the spool. Media
   * objects count in the stats and their direct PUT latency is sampled. Throws STORAGE_UNAVAILABLE
   * when the spool refuses (full), RECORDING_DELETED when the recording was deleted (tombstone).
   */
  async send(meta: SpoolItemMeta, body: Buffer | HeldSegment): Promise<'uploaded' | 'spooled'> {
    this.#refuseDeleted(meta);
    if (await this.#tryDirect(meta, body)) return 'uploaded';
    // A segment a media thread holds comes here, sealed, only now: the spool keeps it.
    await this.#spool.append(meta, Buffer.isBuffer(body) ? body : await body.take());
    if (meta.kind === 'media') this.#counts.spooled++;
    return 'spooled';
  }

  /**
   * Stamps the manifest's next revision and stores it. `durable`: if the store cannot take it now,
   * spool it (replacing older spooled versions); otherwise 'deferred', for the next flush.
   */
  async sendManifest(manifest: RecordingManifest, durable: boolean): Promise<'uploaded' | 'spooled' | 'deferred'> {
    this.#refuseDeleted({ recordingId: manifest.recordingId });
    manifest.revision++;
    manifest.updatedAtMs = this.#now();
    const body = sealManifest(manifest, this.#manifestAuth());
    const objectKey = manifestObjectKey(manifest.recordingId);
    const meta: SpoolItemMeta = { kind: 'manifest', bucketRole: 'keys', objectKey, recordingId: manifest.recordingId, expiresAtMs: manifest.expiresAtMs };
    if (await this.#tryDirect(meta, body)) return 'uploaded';
    if (!durable) return 'deferred';
    const item = await this.#spool.append(meta, body);
    // Only the newest manifest matters; older spooled versions would just be overwritten.
    await this.#spool.removeWhere((it) => it.kind === 'manifest' && it.objectKey === objectKey && it.seq < item.seq);
    return 'spooled';
  }

  async #tryDirect(meta: SpoolItemMeta, body: Buffer | HeldSegment): Promise<boolean> {
    if (!this.canGoDirect()) return false;
    const t0 = performance.now();
    try {
      await this.#put(meta.bucketRole, meta.objectKey, body, meta, meta.tags, meta.metadata);
    } catch (err) {
      this.#noteFailure(err, meta);
      return false;
    }
    if (meta.kind === 'media') {
      if (this.#latencies.length >= LATENCY_WINDOW) this.#latencies.shift();
      this.#latencies.push(performance.now() - t0);
      this.#counts.uploaded++;
    }
    return true;
  }

  /** One PUT with the short timeout. The raw request stays tracked so a deletion can wait for it. */
  async #put(
    role: BucketRole,
    objectKey: string,
    body: Buffer | HeldSegment,
    scope: { recordingId: string; participantId?: string },
    tags?: Record<string, string>,
    metadata?: Record<string, string>,
  ): Promise<void> {
    // The last word before the bytes leave: a tombstone learned while this write waited wins.
    this.#refuseDeleted(scope);
    const bucket = this.#objects.buckets[role];
    const raw = this.#objects.startPut(role, objectKey, body, tags, metadata);
    this.#registry.track(scope.recordingId, scope.participantId, raw, { bucket, objectKey }).catch(() => undefined);
    await this.#objects.timed(raw, `PUT ${bucket}/${objectKey}`);
  }

  #noteFailure(err: unknown, meta: SpoolItemMeta): void {
    this.#failures++;
    // First failure and then every 100th: an outage of minutes must not flood the logs.
    if (this.#failures === 1 || this.#failures % 100 === 0) {
      const ids = {
        recordingId: meta.recordingId,
        ...(meta.participantId === undefined ? {} : { participantId: meta.participantId }),
        ...(meta.segment === undefined ? {} : { segment: meta.segment }),
      };
      this.#logger.warn({ ...ids, err: describeS3Error(err), failures: this.#failures }, 'object store write failed; spooling');
    }
  }

  // ---- the drain ----

  /** A recording whose manifest must be rebuilt from the store once the spool has drained. */
  queueRepair(recordingId: string): void {
    this.#repairPending.add(recordingId);
  }

  #idle(): boolean {
    return this.#spool.isEmpty() && this.#spool.tombstones().length === 0 && this.#repairPending.size === 0;
  }

  /** Resolves when the spool is empty and no deletion or repair is pending remotely (or rejects after timeoutMs). */
  async whenDrained(timeoutMs: number): Promise<void> {
    if (this.#idle()) return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('drained', on);
        reject(new OptinError('STORAGE_UNAVAILABLE', `spool not drained within ${timeoutMs} ms (${this.#spool.size()} items left)`, { retryable: true }));
      }, timeoutMs);
      const on = (): void => {
        if (!this.#idle()) return;
        clearTimeout(t);
        this.off('drained', on);
        resolve();
      };
      this.on('drained', on);
      this.wakeUp();
    });
  }

  /** Wakes an idle loop (new work). During a backoff only close() does: retries stay spaced. */
  wakeUp(force = false): void {
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

  async #run(): Promise<void> {
    let backoff = this.#retryMinMs;
    let failing = false;
    while (!this.#closed) {
      try {
        if (!this.#setupDone) await this.setup();
        const tomb = this.#spool.tombstones()[0];
        if (tomb !== undefined) {
          await this.#chores.completeTombstone(tomb);
        } else if ((!this.#spool.isEmpty() || this.#repairPending.size > 0) && !this.#mayUpload()) {
          // The policy stream is stale: a deletion we have not heard of yet may cover what waits.
          await this.#discardDeleted();
          await this.#sleep(this.#retryMaxMs);
          continue;
        } else if (!this.#spool.isEmpty()) {
          await this.#uploadBatch();
        } else if (this.#repairPending.size > 0) {
          const id = this.#repairPending.values().next().value as string;
          try {
            await this.#chores.repair(id);
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
          await this.#chores.flushDirty();
          if (this.#idle()) await this.#sleep(this.#retryMaxMs * 12);
          continue;
        }
        backoff = this.#retryMinMs;
      } catch (err) {
        if (this.#closed) break;
        if (!failing) this.#logger.warn({ err: describeS3Error(err), spoolItems: this.#spool.size() }, 'uploader: store unavailable, retrying with backoff');
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

  /** Removes spooled objects of recordings (or participants) the guard says were deleted. */
  async #discardDeleted(): Promise<number> {
    if (this.#guard === undefined) return 0;
    const gone = await this.#spool.removeWhere((it) => this.isDeleted(it.recordingId, it.participantId));
    if (gone.length > 0) this.#logger.info({ items: gone.length, recordingIds: [...new Set(gone.map((g) => g.recordingId))].slice(0, 16) }, 'spooled objects of deleted recordings discarded (tombstone)');
    return gone.length;
  }

  async #uploadItem(item: SpoolItem): Promise<void> {
    // A deletion in progress will remove the item itself; wait for it rather than race it.
    const deletion = this.#registry.deletionCovering(item.recordingId, item.participantId);
    if (deletion !== undefined) {
      await deletion.catch(() => undefined);
      return;
    }
    if (this.isDeleted(item.recordingId, item.participantId)) {
      await this.#discardDeleted();
      return;
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
      this.#counts.drained++;
    })();
    await this.#registry.track(item.recordingId, item.participantId, op);
  }
}
