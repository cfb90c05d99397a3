import type { Logger } from '../log/logger.ts';
import { parseDataKeyDocument } from './dataKeys.ts';
import { MANIFESTS_PREFIX, parseDataKeyObjectKey, parseManifestObjectKey, parseMediaObjectKey } from './layout.ts';
import { SEGMENT_META_HEADER, decodeSegmentMeta, upsertSegment, type RecordingManifest } from './manifest.ts';
import { summarizeManifest, type ManifestSummary } from './manifestSummary.ts';
import type { RecordingReader } from './RecordingReader.ts';
import type { RecordingRegistry } from './RecordingRegistry.ts';
import type { S3Objects } from './S3Objects.ts';
import { describeS3Error } from './s3Errors.ts';
import type { Spool } from './Spool.ts';
import type { Sweeper } from './Sweeper.ts';
import type { Uploader } from './Uploader.ts';

/**
 * What a process does about the recordings a crash (of this process, before a restart) left
 * behind (DESIGN §7):
 *
 * - at open, whatever the previous process left in the spool still expires on time, and its
 *   recordings' manifests are repaired once the spool has drained;
 * - repair rebuilds a manifest from what is in the store (segments from each media object's own
 *   metadata, key ids from the key documents) and closes one left in 'recording' as 'interrupted';
 * - the sweeper's periodic scan finds manifests this process does not know yet (for their
 *   expiry) and this node's interrupted recordings (for repair).
 */

export interface RecoveryOptions {
  registry: RecordingRegistry;
  reader: RecordingReader;
  objects: S3Objects;
  uploader: Uploader;
  sweeper: Sweeper;
  logger: Logger;
  /** This process's node id: only its own recordings are closed as interrupted. */
  nodeId: string;
  isClosed: () => boolean;
  /** A manifest was repaired (or found already right): what it says now. */
  onRepaired: (summary: ManifestSummary) => void;
}

export class Recovery {
  readonly #o: RecoveryOptions;

  constructor(options: RecoveryOptions) {
    this.#o = options;
  }

  /** At open: schedules the spool's recordings for expiry and repair; remembers pending deletions. */
  resumeFromSpool(spool: Spool): void {
    const { registry, sweeper, uploader } = this.#o;
    for (const t of spool.tombstones()) if (t.participantId === undefined) registry.rememberDeleted(t.recordingId);
    for (const it of spool.list()) {
      sweeper.schedule(it.recordingId, it.expiresAtMs);
      if (!registry.isDeleted(it.recordingId)) uploader.queueRepair(it.recordingId);
    }
  }

  /**
   * Crash repair: rebuild the manifest's segment list and key ids from what is in the store (the
   * spool has drained by now), close a recording left in 'recording' state as 'interrupted'.
   * Segments listed but absent everywhere are dropped (with a warning): the manifest must describe
   * what exists.
   */
  async repair(recordingId: string): Promise<void> {
    const { registry, reader, objects, logger } = this.#o;
    if (registry.has(recordingId) || registry.isDeleted(recordingId)) return;
    await registry.serial(recordingId, async () => {
      const manifest = await reader.loadManifest(recordingId);
      const listing = await objects.listRecording(recordingId);
      if (manifest === null) {
        if (listing.mediaObjects.length > 0 || listing.keyObjects.length > 0) {
          logger.error({ recordingId }, 'objects without a manifest; they will expire by lifecycle rule');
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
        const meta = decodeSegmentMeta((await objects.metadata('media', name))[SEGMENT_META_HEADER.slice('x-amz-meta-'.length)]);
        if (meta === null || meta.objectKey !== name) {
          logger.warn({ recordingId, objectKey: name }, 'media object without readable segment metadata; left out of the manifest');
          continue;
        }
        const { expiresAtMs: _ignored, ...seg } = meta;
        upsertSegment(manifest, seg);
        changed = true;
      }
      const before = manifest.segments.length;
      manifest.segments = manifest.segments.filter((s) => present.has(s.objectKey));
      if (manifest.segments.length !== before) {
        logger.warn({ recordingId, dropped: before - manifest.segments.length }, 'segments listed in the manifest but absent from the store');
        changed = true;
      }
      for (const o of listing.keyObjects) {
        const k = parseDataKeyObjectKey(o.name);
        const p = k && manifest.participants.find((q) => q.participantId === k.participantId);
        if (!p || p.dataKeyId) continue;
        const body = await reader.readObject('keys', o.name);
        if (body === null) continue;
        const doc = parseDataKeyDocument(body, recordingId, p.participantId);
        p.dataKeyId = doc.dataKeyId;
        p.kekId = doc.kekId;
        changed = true;
      }
      if (manifest.state === 'recording' && manifest.nodeId === this.#o.nodeId) {
        manifest.state = 'interrupted';
        manifest.endedAtMs = manifest.segments.reduce((mx, s) => Math.max(mx, s.startWallClockMs + s.durationMs), manifest.startedAtMs);
        changed = true;
      }
      if (changed) {
        await this.#o.uploader.sendManifest(manifest, true);
        logger.info({ recordingId, segments: manifest.segments.length, state: manifest.state }, 'manifest repaired');
      }
      this.#o.sweeper.schedule(recordingId, manifest.expiresAtMs);
      this.#o.onRepaired(summarizeManifest(manifest));
    });
  }

  /** The sweeper's scan: manifests it does not know yet; also finds this node's interrupted recordings. */
  async *scan(isKnown: (id: string) => boolean): AsyncGenerator<{ recordingId: string; expiresAtMs: number }> {
    const { registry, reader, objects, uploader, logger } = this.#o;
    if (!uploader.ready) return;
    const fresh: string[] = [];
    for await (const o of objects.list('keys', MANIFESTS_PREFIX, false)) {
      const id = parseManifestObjectKey(o.name);
      if (id !== null && !isKnown(id) && !registry.isDeleted(id)) fresh.push(id);
    }
    for (const id of fresh) {
      if (this.#o.isClosed()) return;
      let m: RecordingManifest | null;
      try {
        m = await reader.loadManifest(id);
      } catch (err) {
        logger.warn({ recordingId: id, err: describeS3Error(err) }, 'unreadable manifest skipped by the sweeper scan');
        continue;
      }
      if (m === null) continue;
      if (m.state === 'recording' && m.nodeId === this.#o.nodeId && !registry.has(id)) {
        uploader.queueRepair(id);
        uploader.wakeUp();
      }
      yield { recordingId: id, expiresAtMs: m.expiresAtMs };
    }
  }
}
