import { mapLimit } from '../async/promises.ts';
import { sha256Hex } from '../crypto/digest.ts';
import { Keyring } from '../crypto/Keyring.ts';
import { SegmentAuthError, openSegment } from '../crypto/segmentSeal.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { assertId } from '../ids/ids.ts';
import { unwrapDataKey } from './dataKeys.ts';
import { MANIFESTS_PREFIX, dataKeyObjectKey, manifestObjectKey, parseManifestObjectKey, type BucketNames } from './layout.ts';
import { openManifest, type RecordingManifest } from './manifest.ts';
import { S3Objects } from './S3Objects.ts';
import type { BucketRole } from './Spool.ts';
import type { RecordingReaderOptions, RecordingSource, RecordingSummary, TrackSegment } from './types.ts';

/**
 * The read path (DESIGN §6): manifests, the list of recordings, and tracks read back verified and
 * decrypted. It holds no spool, runs no uploader and no sweeper, and writes nothing: the CLI
 * extract uses it on its own; the RecordingStore uses one with the copies only the writer has
 * (active manifests in memory, objects still in the spool) laid over the store.
 */

/** What a writer in this process holds that the object store may not have yet. */
export interface LocalCopies {
  /** A copy of the manifest of a recording active in this process. */
  manifest(recordingId: string): RecordingManifest | undefined;
  /** Copies of the manifests of every active recording. */
  manifests(): RecordingManifest[];
  /** Recordings whose manifest waits in the spool. */
  spooledManifestIds(): string[];
  /** The bytes of an object waiting in the spool; undefined when none waits (read the store). */
  read(role: BucketRole, objectKey: string): Promise<Buffer | undefined>;
}

/** Segments fetched ahead of the one being decrypted. */
const READ_AHEAD = 8;
/** Manifests read in parallel when listing. */
const LIST_CONCURRENCY = 8;
const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

export class RecordingReader implements RecordingSource {
  readonly buckets: Readonly<BucketNames>;
  readonly #objects: S3Objects;
  readonly #local: LocalCopies | undefined;
  readonly #now: () => number;
  readonly #onRefused: ((recordingId: string, err: Error) => void) | undefined;
  #keyring: Keyring;

  /**
   * `internals` is the RecordingStore's: its S3 adapter and its local copies. A reader on its own
   * (the CLI) passes only `options`.
   */
  constructor(options: RecordingReaderOptions, internals?: { objects: S3Objects; local: LocalCopies }) {
    if (!(options.keyring instanceof Keyring)) throw new OptinError('CONFIG_INVALID', 'RecordingReader: keyring must be a Keyring (Keyring.fromConfig)');
    for (const role of ['media', 'keys'] as const) {
      const name = options.buckets?.[role];
      if (typeof name !== 'string' || name.length < 3) throw new OptinError('CONFIG_INVALID', `RecordingReader: buckets.${role} is missing (use bucketNames())`);
    }
    this.buckets = Object.freeze({ ...options.buckets });
    this.#keyring = options.keyring;
    this.#now = options.now ?? Date.now;
    this.#onRefused = options.onManifestRefused;
    this.#objects = internals?.objects ?? new S3Objects(options.client, this.buckets, options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
    this.#local = internals?.local;
  }

  /** Replaces the keyring (rotation): documents wrapped under any of its KEKs unwrap. */
  setKeyring(keyring: Keyring): void {
    if (!(keyring instanceof Keyring)) throw new OptinError('CONFIG_INVALID', 'setKeyring: expected a Keyring');
    this.#keyring = keyring;
  }

  async getManifest(recordingId: string): Promise<RecordingManifest> {
    assertId('recordingId', recordingId);
    const m = await this.loadManifest(recordingId);
    if (m === null) throw notFound(recordingId);
    return m;
  }

  async listRecordings(): Promise<RecordingSummary[]> {
    return (await this.listManifests()).map(summarize);
  }

  /** Every recording's manifest (the store's, with this process's active and spooled ones over them), oldest first. */
  async listManifests(): Promise<RecordingManifest[]> {
    const byId = new Map<string, RecordingManifest>();
    const ids = new Set<string>();
    for await (const obj of this.#objects.list('keys', MANIFESTS_PREFIX, false)) {
      const id = parseManifestObjectKey(obj.name);
      if (id !== null) ids.add(id);
    }
    for (const id of this.#local?.spooledManifestIds() ?? []) ids.add(id);
    await mapLimit([...ids], LIST_CONCURRENCY, async (id) => {
      const m = await this.loadManifest(id).catch(() => null);
      if (m !== null) byId.set(id, m);
    });
    for (const m of this.#local?.manifests() ?? []) byId.set(m.recordingId, m);
    return [...byId.values()].sort((a, b) => a.startedAtMs - b.startedAtMs);
  }

  /**
   * Reads one participant's track back: verifies each sealed object against the manifest digest,
   * unwraps the data key, opens each segment (AAD check) and yields standalone Ogg files in order.
   * Refuses an expired recording. The data key is zeroed when iteration ends, however it ends.
   */
  async *openTrack(recordingId: string, participantId: string): AsyncGenerator<TrackSegment, void, undefined> {
    assertId('recordingId', recordingId);
    assertId('participantId', participantId);
    const manifest = await this.loadManifest(recordingId);
    if (manifest === null) throw notFound(recordingId);
    if (this.#now() >= manifest.expiresAtMs) {
      throw new OptinError('RECORDING_EXPIRED', `recording ${recordingId} expired at ${manifest.expiresAt}; it can no longer be played`);
    }
    const participant = manifest.participants.find((p) => p.participantId === participantId);
    if (participant === undefined) throw new OptinError('PARTICIPANT_UNKNOWN', `recording ${recordingId} has no participant ${participantId}`);
    if (participant.erased !== undefined) throw new OptinError('PARTICIPANT_ERASED', `participant ${participantId} of recording ${recordingId} was erased`);
    const segments = manifest.segments.filter((s) => s.participantId === participantId);
    if (segments.length === 0) return;

    const keyBody = await this.readObject('keys', dataKeyObjectKey(recordingId, participantId));
    if (keyBody === null) {
      throw new OptinError('DATA_KEY_MISSING', `the data key of ${recordingId}/${participantId} is gone (destroyed by deletion or expiry): the track cannot be decrypted`);
    }
    const dataKey = unwrapDataKey(this.#keyring, keyBody, recordingId, participantId);
    // Read ahead: up to READ_AHEAD GETs in flight, consumed in order. A 30-minute track is 180
    // segments; one round trip at a time made the S3 latency most of an extract's time.
    const inflight: Promise<Buffer | null>[] = [];
    const fetchNext = (i: number) => {
      const seg = segments[i];
      if (seg === undefined) return;
      const p = this.readObject('media', seg.objectKey);
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

  /** Newest manifest: active in memory, else spooled, else in the store. null when none exists. */
  async loadManifest(recordingId: string): Promise<RecordingManifest | null> {
    const active = this.#local?.manifest(recordingId);
    if (active !== undefined) return active;
    const body = await this.readObject('keys', manifestObjectKey(recordingId));
    if (body === null) return null;
    try {
      return openManifest(body, recordingId, this.#keyring);
    } catch (err) {
      if (isOptinError(err, 'MANIFEST_TAMPERED')) this.#onRefused?.(recordingId, err);
      throw err;
    }
  }

  /** Object bytes from the spool if a copy waits there, else from the store. null if absent. */
  async readObject(role: BucketRole, objectKey: string): Promise<Buffer | null> {
    const local = await this.#local?.read(role, objectKey);
    if (local !== undefined) return local;
    return this.#objects.get(role, objectKey);
  }
}

function notFound(recordingId: string): OptinError {
  return new OptinError('RECORDING_NOT_FOUND', `no recording ${recordingId} (never recorded, deleted, or expired)`);
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
