import { sleep } from '../async/promises.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { RecordingManifest } from './manifest.ts';

/**
 * What this process knows about its recordings right now, shared by the store's parts: the
 * active recordings (with each track's data key and write queue), the ids deleted lately,
 * deletions in progress, writes in flight, and one serial queue per recording (manifest writes,
 * deletions and repairs of a recording never overlap).
 *
 * The write path, the uploader and the deletion protocol meet here: a deletion refuses new
 * writes in its scope from the instant it is requested, waits (bounded) for writes already in
 * flight, and removes what lands late.
 */

export interface Track {
  participantId: string;
  /** Plaintext data key: in memory only while the recording is active, zeroed at end/deletion. */
  dataKey: Buffer | null;
  lastSegment: number;
  /** Serializes putSegment per participant: segments and the key go out in order. */
  chain: Promise<unknown>;
}

export interface ActiveRecording {
  manifest: RecordingManifest;
  tracks: Map<string, Track>;
  dirty: boolean;
}

/** A whole recording, or one participant of it. */
export interface Scope {
  recordingId: string;
  participantId?: string;
}

interface Inflight {
  recordingId: string;
  participantId?: string;
  promise: Promise<unknown>;
  /** For raw PUTs: where the object lands, so a deletion can remove it if it lands late. */
  target?: { bucket: string; objectKey: string };
}

/** A raw PUT that may still land after its deletion. */
export interface LateWrite {
  recordingId: string;
  bucket: string;
  objectKey: string;
  promise: Promise<unknown>;
}

/** Deleted recording ids remembered so a late putSegment is refused clearly. */
const DELETED_MEMORY = 100_000;

function inScope(scope: Scope, recordingId: string, participantId: string | undefined): boolean {
  if (scope.recordingId !== recordingId) return false;
  // A participant-scoped deletion also waits for recording-level work (manifest uploads).
  return scope.participantId === undefined || participantId === undefined || scope.participantId === participantId;
}

/** Zeroes and forgets every data key of a recording. */
export function zeroKeys(rec: ActiveRecording): void {
  for (const t of rec.tracks.values()) {
    t.dataKey?.fill(0);
    t.dataKey = null;
  }
}

export class RecordingRegistry {
  readonly #active = new Map<string, ActiveRecording>();
  readonly #deleted = new Set<string>();
  readonly #deleting = new Map<Scope, Promise<unknown>>();
  readonly #inflight = new Set<Inflight>();
  readonly #serial = new Map<string, Promise<unknown>>();

  // ---- active recordings ----

  get(recordingId: string): ActiveRecording | undefined {
    return this.#active.get(recordingId);
  }

  has(recordingId: string): boolean {
    return this.#active.has(recordingId);
  }

  set(recordingId: string, rec: ActiveRecording): void {
    this.#active.set(recordingId, rec);
  }

  delete(recordingId: string): void {
    this.#active.delete(recordingId);
  }

  entries(): IterableIterator<[string, ActiveRecording]> {
    return this.#active.entries();
  }

  clear(): void {
    this.#active.clear();
  }

  /** The active recording, or why there is none (RECORDING_DELETED, RECORDING_NOT_ACTIVE). */
  require(recordingId: string): ActiveRecording {
    const rec = this.#active.get(recordingId);
    if (rec !== undefined) return rec;
    if (this.#deleted.has(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; nothing more is stored for it`);
    throw new OptinError('RECORDING_NOT_ACTIVE', `recording ${recordingId} is not active in this process (unknown or already ended); call beginRecording first`);
  }

  // ---- deleted and being deleted ----

  isDeleted(recordingId: string): boolean {
    return this.#deleted.has(recordingId);
  }

  rememberDeleted(recordingId: string): void {
    this.#deleted.add(recordingId);
    if (this.#deleted.size > DELETED_MEMORY) {
      const oldest = this.#deleted.values().next().value;
      if (oldest !== undefined) this.#deleted.delete(oldest);
    }
  }

  /** Registers a deletion in progress until `run` settles; returns `run` with that bookkeeping attached. */
  markDeleting<T>(scope: Scope, run: Promise<T>): Promise<T> {
    this.#deleting.set(scope, run);
    return run.finally(() => this.#deleting.delete(scope));
  }

  /** A deletion in progress whose scope covers this recording/participant's work, if any. */
  deletionCovering(recordingId: string, participantId: string | undefined): Promise<unknown> | undefined {
    for (const [scope, p] of this.#deleting) if (inScope(scope, recordingId, participantId)) return p;
    return undefined;
  }

  /** RECORDING_DELETED when the recording (or this participant of it) is deleted or being deleted. */
  refuseIfDeleting(recordingId: string, participantId: string): void {
    if (this.#deleted.has(recordingId)) throw new OptinError('RECORDING_DELETED', `recording ${recordingId} was deleted; nothing more is stored for it`);
    for (const scope of this.#deleting.keys()) {
      if (scope.recordingId === recordingId && (scope.participantId === undefined || scope.participantId === participantId)) {
        throw new OptinError('RECORDING_DELETED', `recording ${recordingId} is being deleted; nothing more is stored for it`);
      }
    }
  }

  // ---- writes in flight ----

  /** Keeps `promise` in the in-flight set until it settles; returns it unchanged. */
  track<T>(recordingId: string, participantId: string | undefined, promise: Promise<T>, target?: Inflight['target']): Promise<T> {
    const entry: Inflight = { recordingId, participantId, promise, ...(target ? { target } : {}) };
    this.#inflight.add(entry);
    const done = (): void => {
      this.#inflight.delete(entry);
    };
    promise.then(done, done);
    return promise;
  }

  /**
   * Waits for the writes in `scope`, at most `maxMs`: a request that hangs past its timeout must
   * not hold a deletion forever (what lands later is in `lateWrites`).
   */
  async waitInflight(scope: Scope, maxMs: number): Promise<void> {
    const pending = [...this.#inflight].filter((f) => inScope(scope, f.recordingId, f.participantId)).map((f) => f.promise.catch(() => undefined));
    if (pending.length === 0) return;
    await Promise.race([Promise.all(pending), sleep(maxMs)]);
  }

  /** Raw PUTs in `scope` still in flight. */
  lateWrites(scope: Scope): LateWrite[] {
    const out: LateWrite[] = [];
    for (const f of this.#inflight) {
      if (f.target === undefined || !inScope(scope, f.recordingId, f.participantId)) continue;
      out.push({ recordingId: f.recordingId, bucket: f.target.bucket, objectKey: f.target.objectKey, promise: f.promise });
    }
    return out;
  }

  // ---- per-recording serial queue ----

  /** Runs `fn` after everything queued before it for `key` has settled (whatever the outcome). */
  serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#serial.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#serial.set(key, tail);
    void tail.then(() => {
      if (this.#serial.get(key) === tail) this.#serial.delete(key);
    });
    return run;
  }
}
