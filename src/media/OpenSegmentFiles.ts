/**
 * An open segment's closed Ogg pages kept on disk, encrypted, instead of in memory.
 *
 * Why: with segments of a minute (the length that keeps a shared S3 server's PUT rate down) a
 * speech track's open segment holds ~70 KB on average and ~140 KB at its end, the largest part of
 * what each recorded stream costs in memory (README, performance). A page closes every ~5 s of a
 * track; from then on nothing needs it until the segment is finished, read back once, and handed
 * to the store for sealing. So each closed page goes to a file, and memory holds only the page
 * being filled.
 *
 * Never plaintext audio at rest (docs/rules.md): each file has its own random AES-256-GCM key,
 * held in memory only and zeroed when the file is read back or dropped. Each appended page is its
 * own GCM record (ciphertext + 16-byte tag; nonce = the record's index, unique under the file's
 * key), so a record moved, changed or cut off fails its check. Lengths are kept in memory and never
 * read from the file. Dropping a file (a run erased, R9) zeroes its key and unlinks it: what may
 * linger in freed disk blocks is ciphertext under a key that no longer exists. A crash leaves files
 * whose keys died with the process; the next start removes them (`OpenSegmentFiles.clear`).
 *
 * A file that cannot be written (disk full, directory gone) falls back to memory: what was written
 * is read back, checked, and kept in pool blocks with the rest of the segment; the failure is
 * counted and reported once per directory. Nothing recorded is lost to a full disk; a file removed
 * or changed behind our back fails its segment loudly (OPEN_SEGMENT_CORRUPT), never a shorter one.
 *
 * Synchronous file calls: a page (~12 KB) is written once per ~5 s per track into the page cache,
 * and a finished segment is read back once per segment length, each a few tens of µs, on the media
 * thread that owns the track (no ordering to keep across the libuv pool).
 */
import { closeSync, mkdirSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { BlockBytes, type BlockPool } from './BlockPool.ts';

const TAG_BYTES = 16;
const KEY_BYTES = 32;

/** Where an Ogg writer keeps its closed pages until the segment is finished. BlockBytes is one. */
export interface PageStore {
  readonly length: number;
  append(bytes: Uint8Array): void;
  /** Everything appended, after `prefix`, in one new Buffer; the store is empty afterwards. */
  take(prefix?: Uint8Array): Buffer;
  /** Drops everything appended. */
  discard(): void;
}

export interface OpenSegmentFilesOptions {
  /** This thread's own directory (created 0700; whatever is in it is removed first). */
  dir: string;
  /** Where a file's pages go when its disk refuses them. */
  pool: BlockPool;
  /** Told once when a file falls back to memory (the error carries no path with an id in it). */
  onFallback?: (err: Error) => void;
}

/** One thread's directory of open segment files; `create()` gives a writer its page store. */
export class OpenSegmentFiles {
  readonly dir: string;
  readonly #pool: BlockPool;
  readonly #onFallback: ((err: Error) => void) | undefined;
  #next = 0;
  #fallbacks = 0;
  #open = 0;

  constructor(o: OpenSegmentFilesOptions) {
    this.dir = o.dir;
    this.#pool = o.pool;
    this.#onFallback = o.onFallback;
    OpenSegmentFiles.clear(o.dir);
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  }

  /** Removes a directory of open segment files left by an earlier process (their keys are gone). */
  static clear(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
  }

  /** A new, empty page store backed by a file of this directory (created on its first page). */
  create(): PageStore {
    // Names are a counter: nothing about the call or the speaker on disk.
    return new OpenSegmentFile(this, join(this.dir, `${(this.#next++).toString(36)}.seg`));
  }

  get stats(): { open: number; fallbacks: number } {
    return { open: this.#open, fallbacks: this.#fallbacks };
  }

  /** @internal */ get pool(): BlockPool {
    return this.#pool;
  }
  /** @internal */ opened(): void {
    this.#open++;
  }
  /** @internal */ closed(): void {
    this.#open--;
  }
  /** @internal */ fellBack(err: Error): void {
    if (this.#fallbacks++ === 0) this.#onFallback?.(err);
  }
}

class OpenSegmentFile implements PageStore {
  readonly #dir: OpenSegmentFiles;
  readonly #path: string;
  #key: Buffer | undefined;
  /** Plaintext length of each record written, in order. */
  #records: number[] = [];
  #fileBytes = 0;
  #length = 0;
  /** Set once the disk refused a page: the rest of this segment stays in memory. */
  #memory: BlockBytes | undefined;

  constructor(dir: OpenSegmentFiles, path: string) {
    this.#dir = dir;
    this.#path = path;
  }

  get length(): number {
    return this.#length;
  }

  append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.#memory === undefined) {
      try {
        this.#writeRecord(bytes);
        this.#length += bytes.length;
        return;
      } catch (err) {
        this.#fallBack(err as Error);
      }
    }
    this.#memory!.append(bytes);
    this.#length += bytes.length;
  }

  take(prefix?: Uint8Array): Buffer {
    const head = prefix?.length ?? 0;
    if (this.#memory !== undefined) {
      const out = this.#memory.take(prefix);
      this.#length = 0;
      return out;
    }
    const out = Buffer.allocUnsafe(head + this.#length);
    if (prefix) out.set(prefix);
    try {
      this.#readInto(out, head);
    } finally {
      this.#drop();
    }
    return out;
  }

  discard(): void {
    this.#memory?.discard();
    this.#drop();
  }

  #writeRecord(bytes: Uint8Array): void {
    if (this.#key === undefined) {
      this.#key = randomBytes(KEY_BYTES);
      this.#dir.opened();
    }
    const cipher = createCipheriv('aes-256-gcm', this.#key, nonceOf(this.#records.length));
    const body = cipher.update(bytes);
    cipher.final();
    const tag = cipher.getAuthTag();
    // Opened per record (a page every ~5 s): no descriptor per track held open between pages.
    const fd = openSync(this.#path, this.#records.length === 0 ? 'wx' : 'a', 0o600);
    try {
      writeAll(fd, body);
      writeAll(fd, tag);
    } finally {
      closeSync(fd);
    }
    this.#records.push(bytes.length);
    this.#fileBytes += body.length + TAG_BYTES;
  }

  /** Decrypts and checks every record into `out` from `at`; throws if the file lost or changed any. */
  #readInto(out: Buffer, at: number): void {
    if (this.#records.length === 0) return;
    let fd: number;
    try {
      fd = openSync(this.#path, 'r');
    } catch (err) {
      throw new OptinError('OPEN_SEGMENT_CORRUPT', `an open segment file is gone (${(err as NodeJS.ErrnoException).code ?? 'error'}): its pages are lost`);
    }
    try {
      let from = 0;
      for (let i = 0; i < this.#records.length; i++) {
        // One record at a time through a reused scratch: no second copy of the segment in memory.
        const n = this.#records[i]!;
        const record = readScratch(n + TAG_BYTES);
        for (let got = 0; got < record.length; ) {
          const r = readSync(fd, record, got, record.length - got, from + got);
          if (r === 0) throw new OptinError('OPEN_SEGMENT_CORRUPT', `an open segment file ends inside record ${i}`);
          got += r;
        }
        const decipher = createDecipheriv('aes-256-gcm', this.#key!, nonceOf(i));
        decipher.setAuthTag(record.subarray(n));
        let plain: Buffer;
        try {
          plain = decipher.update(record.subarray(0, n));
          decipher.final();
        } catch {
          throw new OptinError('OPEN_SEGMENT_CORRUPT', `record ${i} of an open segment file failed its check`);
        }
        out.set(plain, at);
        plain.fill(0);
        at += n;
        from += n + TAG_BYTES;
      }
    } finally {
      closeSync(fd);
    }
  }

  /** The disk refused a page: what it holds moves to memory, and so does the rest of the segment. */
  #fallBack(err: Error): void {
    this.#dir.fellBack(err);
    const memory = new BlockBytes(this.#dir.pool);
    if (this.#records.length > 0) {
      const written = Buffer.allocUnsafe(this.#length);
      this.#readInto(written, 0);
      memory.append(written);
      written.fill(0);
    }
    this.#drop();
    this.#memory = memory;
    this.#length = memory.length;
  }

  /** Zeroes the key and removes the file (a file never created is fine). */
  #drop(): void {
    if (this.#key !== undefined) {
      this.#key.fill(0);
      this.#key = undefined;
      this.#dir.closed();
      try {
        unlinkSync(this.#path);
      } catch {
        // Its key is gone: what stays is ciphertext nobody can open. The directory is cleared at
        // the next start; failing the segment here would lose audio for no privacy gain.
      }
    }
    this.#records = [];
    this.#fileBytes = 0;
    if (this.#memory === undefined) this.#length = 0;
  }
}

function writeAll(fd: number, bytes: Buffer): void {
  for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at, bytes.length - at);
}

/** This thread's buffer for reading one record back (ciphertext only; grown to the largest page). */
let scratch = Buffer.alloc(0);
function readScratch(bytes: number): Buffer {
  if (scratch.length < bytes) scratch = Buffer.allocUnsafe(Math.max(bytes, 16 * 1024 + TAG_BYTES));
  return scratch.subarray(0, bytes);
}

/** GCM nonce of record `i` (unique under its file's own key). */
function nonceOf(i: number): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32BE(i, 8);
  return nonce;
}
