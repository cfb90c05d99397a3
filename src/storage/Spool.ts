import { chmod, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log/logger.ts';
import { sha256Hex } from '../crypto/digest.ts';
import { OptinError } from '../errors/OptinError.ts';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * A bounded, ordered, crash-safe local queue of objects waiting for the store (DESIGN §5, §7
 * "a store outage of minutes loses nothing").
 *
 * What it may hold: SEALED segments, WRAPPED data keys and manifests (metadata). Never plaintext
 * audio and never a plaintext key: the store hands us bytes that are already safe at rest.
 *
 * On disk, one item is two files in `<dir>/items/`:
 *   <seq:012>.bin   the object body, exactly as it will be PUT
 *   <seq:012>.json  a small sidecar: where it goes (bucket role + key), tags, metadata, digest
 * Each file is written to a `.tmp` name, fsynced, renamed, and the directory fsynced; the sidecar is
 * written after the body, so "sidecar present" means "item complete". At open, incomplete items
 * (no sidecar, a body shorter than the sidecar says, a digest mismatch) are discarded: they belong
 * to a putSegment that never returned, which is the "at most the open segment" a crash may lose.
 *
 * Pending deletions that could not reach the store ("tombstones") live in `<dir>/tombstones/` so a
 * deletion requested during an outage survives a crash and still completes (R9).
 */

export type BucketRole = 'media' | 'keys';
export type SpoolKind = 'media' | 'key' | 'manifest';

export interface SpoolItemMeta {
  kind: SpoolKind;
  bucketRole: BucketRole;
  objectKey: string;
  recordingId: string;
  participantId?: string;
  segment?: number;
  /** S3 tags to set on the PUT (media only). */
  tags?: Record<string, string>;
  /** S3 user metadata to set on the PUT. */
  metadata?: Record<string, string>;
  /** The recording's expiry instant, so the sweeper can purge spool copies on time even after a crash. */
  expiresAtMs: number;
}

export interface SpoolItem extends SpoolItemMeta {
  seq: number;
  /** hex sha256 of the body. */
  sha256: string;
  bodyBytes: number;
  createdAtMs: number;
}

export interface SpoolTombstone {
  recordingId: string;
  participantId?: string;
  reason: string;
  actor: string;
  requestedAtMs: number;
  /** 'deletion' or 'expiry': which audit entry the completion produces. */
  kind: 'deletion' | 'expiry';
  receiptId: string;
}

export interface SpoolState {
  bytes: number;
  maxBytes: number;
  items: number;
  full: boolean;
}

export type SpoolEvents = {
  /** Size or fullness changed. */
  change: [SpoolState];
  /** A new item is available to the uploader. */
  item: [SpoolItem];
};

/** When full, accept again only once usage falls below this fraction: no gate flapping. */
const RESUME_FRACTION = 0.9;
const SEQ_DIGITS = 12;

export class Spool extends TypedEmitter<SpoolEvents> {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #itemsDir: string;
  readonly #tombDir: string;
  readonly #logger: Logger;
  readonly #now: () => number;
  /** Durable items in seq order. */
  #items: SpoolItem[] = [];
  #nextSeq = 1;
  /** Bytes on disk plus bytes reserved by appends in progress. */
  #bytes = 0;
  #full = false;
  #tombstones = new Map<string, SpoolTombstone>();

  private constructor(dir: string, maxBytes: number, logger: Logger, now: () => number) {
    super();
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#itemsDir = join(dir, 'items');
    this.#tombDir = join(dir, 'tombstones');
    this.#logger = logger;
    this.#now = now;
  }

  /** Opens (creating if needed) a spool directory, recovering what a previous process left. */
  static async open(options: { dir: string; maxBytes: number; logger: Logger; now?: () => number }): Promise<Spool> {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 1024 * 1024) {
      throw new OptinError('CONFIG_INVALID', `storage.spoolMaxBytes must be an integer of at least 1 MiB; got ${String(options.maxBytes)}`);
    }
    const spool = new Spool(options.dir, options.maxBytes, options.logger, options.now ?? Date.now);
    await mkdir(spool.#itemsDir, { recursive: true, mode: 0o700 });
    await mkdir(spool.#tombDir, { recursive: true, mode: 0o700 });
    // A directory that already existed keeps its mode under mkdir: make it private now.
    for (const d of [options.dir, spool.#itemsDir, spool.#tombDir]) await chmod(d, 0o700);
    await spool.#recover();
    return spool;
  }

  bytes(): number {
    return this.#bytes;
  }

  size(): number {
    return this.#items.length;
  }

  isEmpty(): boolean {
    return this.#items.length === 0;
  }

  isFull(): boolean {
    return this.#full;
  }

  state(): SpoolState {
    return { bytes: this.#bytes, maxBytes: this.maxBytes, items: this.#items.length, full: this.#full };
  }

  /** Oldest complete item, or undefined. */
  peek(): SpoolItem | undefined {
    return this.#items[0];
  }

  list(): readonly SpoolItem[] {
    return this.#items;
  }

  find(bucketRole: BucketRole, objectKey: string): SpoolItem | undefined {
    // Newest wins (manifests are replaced by newer versions).
    for (let i = this.#items.length - 1; i >= 0; i--) {
      const it = this.#items[i]!;
      if (it.bucketRole === bucketRole && it.objectKey === objectKey) return it;
    }
    return undefined;
  }

  /**
   * Appends one item durably. Throws STORAGE_UNAVAILABLE (retryable) when it would exceed the
   * bound: the caller must stop producing (the recorder closes the gate, R4 forbids buffering
   * anything elsewhere).
   */
  async append(meta: SpoolItemMeta, body: Buffer): Promise<SpoolItem> {
    const seq = this.#nextSeq++;
    const item: SpoolItem = {
      ...meta,
      seq,
      sha256: sha256Hex(body),
      bodyBytes: body.length,
      createdAtMs: this.#now(),
    };
    const sidecar = Buffer.from(JSON.stringify(item));
    const need = body.length + sidecar.length;
    if (this.#full || this.#bytes + need > this.maxBytes) {
      this.#setFull(true);
      throw new OptinError(
        'STORAGE_UNAVAILABLE',
        `the object store is unreachable and the local spool is full (${this.#bytes} of ${this.maxBytes} bytes); ` +
          'recording must stop until the store is back (check the S3 endpoint) or spoolMaxBytes is raised',
        { retryable: true },
      );
    }
    // Reserve before any await so concurrent appends cannot overshoot the bound together.
    this.#bytes += need;
    const name = seqName(seq);
    const bodyPath = join(this.#itemsDir, `${name}.bin`);
    const sidecarPath = join(this.#itemsDir, `${name}.json`);
    try {
      await writeDurable(bodyPath, body);
      await writeDurable(sidecarPath, sidecar);
      await fsyncDir(this.#itemsDir);
    } catch (err) {
      this.#bytes -= need;
      await rm(bodyPath, { force: true }).catch(() => undefined);
      await rm(sidecarPath, { force: true }).catch(() => undefined);
      throw new OptinError('STORAGE_UNAVAILABLE', `cannot write to the local spool at ${this.dir}: ${(err as Error).message}`, {
        retryable: true,
        cause: err,
      });
    }
    this.#insert(item);
    this.#emitChange();
    this.safeEmit('item', item);
    return item;
  }

  /** Body of an item, verified against its digest (a damaged spool file is never uploaded). */
  async read(item: SpoolItem): Promise<Buffer> {
    const body = await readFile(join(this.#itemsDir, `${seqName(item.seq)}.bin`));
    if (body.length !== item.bodyBytes || sha256Hex(body) !== item.sha256) {
      throw new OptinError('SPOOL_CORRUPT', `spool item ${item.seq} (${item.objectKey}) does not match its digest`);
    }
    return body;
  }

  has(item: SpoolItem): boolean {
    return this.#items.includes(item);
  }

  /** Removes one item (after a confirmed PUT, or a deletion). Idempotent. */
  async remove(item: SpoolItem): Promise<boolean> {
    const idx = this.#items.indexOf(item);
    if (idx < 0) return false;
    this.#items.splice(idx, 1);
    await this.#unlinkItem(item);
    this.#emitChange();
    return true;
  }

  /** Removes every item matching `pred` (deletion and expiry of spool copies). */
  async removeWhere(pred: (item: SpoolItem) => boolean): Promise<SpoolItem[]> {
    const gone = this.#items.filter(pred);
    if (gone.length === 0) return [];
    const goneSet = new Set(gone);
    this.#items = this.#items.filter((it) => !goneSet.has(it));
    for (const it of gone) await this.#unlinkItem(it);
    this.#emitChange();
    return gone;
  }

  // ---- tombstones (pending remote deletions) ----

  tombstones(): SpoolTombstone[] {
    return [...this.#tombstones.values()];
  }

  async addTombstone(t: SpoolTombstone): Promise<void> {
    const name = tombName(t.recordingId, t.participantId);
    // A whole-recording deletion supersedes a pending participant-only one.
    this.#tombstones.set(name, t);
    await writeDurable(join(this.#tombDir, name), Buffer.from(JSON.stringify(t)));
    await fsyncDir(this.#tombDir);
  }

  async removeTombstone(recordingId: string, participantId?: string): Promise<void> {
    const name = tombName(recordingId, participantId);
    if (!this.#tombstones.delete(name)) return;
    await rm(join(this.#tombDir, name), { force: true });
    await fsyncDir(this.#tombDir);
  }

  // ---- internals ----

  async #unlinkItem(item: SpoolItem): Promise<void> {
    const name = seqName(item.seq);
    // Sidecar first: an item without sidecar is "incomplete" and discarded at the next open.
    await rm(join(this.#itemsDir, `${name}.json`), { force: true });
    await rm(join(this.#itemsDir, `${name}.bin`), { force: true });
    this.#bytes -= item.bodyBytes + Buffer.byteLength(JSON.stringify(item));
    if (this.#bytes < 0) this.#bytes = 0;
  }

  #insert(item: SpoolItem): void {
    // Appends complete out of order only across participants; keep the queue in seq order anyway.
    let i = this.#items.length;
    while (i > 0 && this.#items[i - 1]!.seq > item.seq) i--;
    this.#items.splice(i, 0, item);
  }

  #setFull(full: boolean): void {
    if (this.#full === full) return;
    this.#full = full;
    this.#logger.warn({ spoolBytes: this.#bytes, spoolMaxBytes: this.maxBytes, full }, full ? 'spool full' : 'spool accepting again');
    this.#emitChange();
  }

  #emitChange(): void {
    if (this.#full && this.#bytes < this.maxBytes * RESUME_FRACTION) {
      this.#full = false;
      this.#logger.info({ spoolBytes: this.#bytes, spoolMaxBytes: this.maxBytes }, 'spool accepting again');
    }
    this.safeEmit('change', this.state());
  }

  async #recover(): Promise<void> {
    const names = await readdir(this.#itemsDir);
    const sidecars = new Set(names.filter((n) => n.endsWith('.json')));
    const bodies = new Set(names.filter((n) => n.endsWith('.bin')));
    let maxSeq = 0;
    let discarded = 0;
    for (const n of names) {
      const m = /^(\d+)\.(bin|json)(\.tmp)?$/.exec(n);
      if (m === null || m[3] !== undefined) {
        await rm(join(this.#itemsDir, n), { force: true });
        discarded++;
        continue;
      }
      maxSeq = Math.max(maxSeq, Number(m[1]));
    }
    for (const sc of sidecars) {
      const base = sc.slice(0, -'.json'.length);
      let item: SpoolItem | null = null;
      try {
        item = parseSidecar(JSON.parse(await readFile(join(this.#itemsDir, sc), 'utf8')));
        if (item !== null && item.seq !== Number(base)) item = null;
        if (item !== null) {
          const st = await stat(join(this.#itemsDir, `${base}.bin`));
          if (st.size !== item.bodyBytes) item = null;
          else await this.read(item);
        }
      } catch {
        item = null;
      }
      if (item === null) {
        await rm(join(this.#itemsDir, sc), { force: true });
        await rm(join(this.#itemsDir, `${base}.bin`), { force: true });
        discarded++;
        continue;
      }
      bodies.delete(`${base}.bin`);
      this.#items.push(item);
      this.#bytes += item.bodyBytes + Buffer.byteLength(JSON.stringify(item));
    }
    for (const orphan of bodies) {
      if (!names.includes(orphan)) continue;
      await rm(join(this.#itemsDir, orphan), { force: true });
      discarded++;
    }
    this.#items.sort((a, b) => a.seq - b.seq);
    this.#nextSeq = maxSeq + 1;
    if (discarded > 0) await fsyncDir(this.#itemsDir);

    for (const n of await readdir(this.#tombDir)) {
      try {
        const t = JSON.parse(await readFile(join(this.#tombDir, n), 'utf8')) as SpoolTombstone;
        if (typeof t.recordingId === 'string' && ID_PATTERN.test(t.recordingId) && n === tombName(t.recordingId, t.participantId)) {
          this.#tombstones.set(n, t);
          continue;
        }
      } catch {
        // fall through: unreadable tombstone (torn write) is dropped below
      }
      await rm(join(this.#tombDir, n), { force: true });
    }
    this.#full = this.#bytes >= this.maxBytes;
    if (this.#items.length > 0 || discarded > 0 || this.#tombstones.size > 0) {
      this.#logger.info(
        { spoolItems: this.#items.length, spoolBytes: this.#bytes, discarded, tombstones: this.#tombstones.size },
        'spool recovered from a previous process',
      );
    }
  }
}

function seqName(seq: number): string {
  return String(seq).padStart(SEQ_DIGITS, '0');
}

/** `.` is not in the id alphabet, so `<rec>.<participant>.json` is unambiguous. */
function tombName(recordingId: string, participantId?: string): string {
  return participantId === undefined ? `${recordingId}.json` : `${recordingId}.${participantId}.json`;
}

function parseSidecar(v: unknown): SpoolItem | null {
  if (typeof v !== 'object' || v === null) return null;
  const it = v as SpoolItem;
  const ok =
    Number.isSafeInteger(it.seq) &&
    (it.kind === 'media' || it.kind === 'key' || it.kind === 'manifest') &&
    (it.bucketRole === 'media' || it.bucketRole === 'keys') &&
    typeof it.objectKey === 'string' &&
    typeof it.recordingId === 'string' &&
    ID_PATTERN.test(it.recordingId) &&
    typeof it.sha256 === 'string' &&
    Number.isSafeInteger(it.bodyBytes) &&
    typeof it.expiresAtMs === 'number';
  return ok ? it : null;
}

/** tmp + fsync + rename: the file is either absent or complete after a crash. */
async function writeDurable(path: string, data: Buffer): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Makes renames and unlinks in a directory durable (POSIX: the entry lives in the directory). */
async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
