import { sha256Hex } from '../crypto/digest.ts';
import { sealSegment, type SegmentAad } from '../crypto/segmentSeal.ts';
import { OptinError } from '../errors/OptinError.ts';
import { discardBytes, ownsItsMemory } from '../media/discardBytes.ts';
import { LeanPut, type LeanPutOptions, type LeanPutStats } from '../storage/LeanPut.ts';
import type { S3Config } from '../storage/s3Endpoint.ts';

/**
 * A media thread's finished segments, from the segmenter's close until the main thread says the
 * segment is stored or refused (issue 16 item 1: sealing and upload on every core).
 *
 * The main thread keeps the books (the checks against deletions and erasures, the data key, the
 * manifest, the spool) and asks, in order: seal this segment with this key (the Ogg and the key
 * are zeroed right after: from then on the thread holds ciphertext only), PUT it, or hand the
 * sealed bytes over (the spool, or a store reached through the minio client). The same request
 * LeanPut sends from the main thread goes out from here, on this thread's own keep-alive pool.
 *
 * A segment is forgotten when the main thread releases it (its put settled either way), so a
 * refused or failed segment never lingers; a thread that dies takes what it holds with it, as
 * its open segments.
 */

interface Held {
  /** The Ogg file until it is sealed. */
  ogg: Buffer | undefined;
  sealed: Buffer | undefined;
  /** The sealed bytes' SHA-256 (hex), worked out once for the manifest and sent with the PUT. */
  sha256: string | undefined;
  /** PUTs of the sealed bytes still in flight (their buffer must not be moved away meanwhile). */
  putting: number;
  /** A PUT of the sealed bytes was answered 200: the store read all of them, no socket still writes from them. */
  stored: boolean;
}

export class SegmentHold {
  readonly #held = new Map<number, Held>();
  readonly #lean: LeanPut | undefined;

  /** `s3`: where this thread PUTs; undefined when segments are PUT from the main thread. */
  constructor(s3: S3Config | undefined, lean: LeanPutOptions = {}) {
    this.#lean = s3 === undefined ? undefined : new LeanPut(s3, lean);
  }

  /** True when this thread PUTs segments itself. */
  get canPut(): boolean {
    return this.#lean !== undefined;
  }

  /** Segments held now (a gauge for tests and stats). */
  get size(): number {
    return this.#held.size;
  }

  leanPutStats(): LeanPutStats | undefined {
    return this.#lean?.stats();
  }

  /** Keeps a finished segment's Ogg under `id` until released. The buffer must be the segment's own. */
  hold(id: number, ogg: Buffer): void {
    if (this.#held.has(id)) throw new OptinError('INTERNAL', `segment ${id} is already held`);
    this.#held.set(id, { ogg, sealed: undefined, sha256: undefined, putting: 0, stored: false });
  }

  /** Seals the held Ogg with `key` for `aad` (crypto/segmentSeal.ts); zeroes the key and the Ogg. */
  seal(id: number, key: Uint8Array, aad: SegmentAad): { sealedBytes: number; sha256: string } {
    try {
      const h = this.#require(id);
      if (h.ogg === undefined) throw new OptinError('INTERNAL', `segment ${id} was sealed already`);
      const sealed = sealSegment(Buffer.from(key.buffer, key.byteOffset, key.byteLength), h.ogg, aad);
      discardBytes(h.ogg);
      h.ogg = undefined;
      h.sealed = sealed;
      h.sha256 = sha256Hex(sealed);
      return { sealedBytes: sealed.length, sha256: h.sha256 };
    } finally {
      key.fill(0);
    }
  }

  /** PUTs the sealed bytes (LeanPut.putWithTags: the main thread's request, from here). */
  async put(id: number, bucket: string, objectKey: string, tags: Record<string, string>, metadata: Record<string, string>): Promise<void> {
    const h = this.#require(id);
    if (this.#lean === undefined) throw new OptinError('INTERNAL', 'this media thread has no PUT path; the main thread PUTs its segments');
    if (h.sealed === undefined) throw new OptinError('INTERNAL', `segment ${id} is not sealed yet`);
    h.putting++;
    try {
      await this.#lean.putWithTags(bucket, objectKey, h.sealed, tags, metadata, {}, h.sha256);
      h.stored = true;
    } finally {
      h.putting--;
    }
  }

  /**
   * The sealed bytes for the main thread, as a buffer of their own: moved (the thread keeps none),
   * or copied while a PUT of them is still being written (a timed-out PUT goes on meanwhile).
   */
  take(id: number): Uint8Array {
    const h = this.#require(id);
    const sealed = h.sealed;
    if (sealed === undefined) throw new OptinError('INTERNAL', `segment ${id} is not sealed yet`);
    const own = h.putting === 0 && ownsItsMemory(sealed);
    h.sealed = undefined;
    return own ? new Uint8Array(sealed.buffer, 0, sealed.byteLength) : new Uint8Array(sealed);
  }

  /**
   * The main thread is done with segment `id` (stored, spooled or refused): forgotten, its Ogg
   * zeroed and freed; its sealed bytes freed too once a PUT of them was answered (else the
   * collector frees them: a PUT that timed out may still be writing from them).
   */
  release(id: number): void {
    const h = this.#held.get(id);
    if (h === undefined) return;
    if (h.ogg !== undefined) discardBytes(h.ogg);
    if (h.sealed !== undefined && h.stored && h.putting === 0) discardBytes(h.sealed);
    this.#held.delete(id);
  }

  /** Closes the PUT pool (the thread stops). */
  close(): void {
    for (const id of [...this.#held.keys()]) this.release(id);
    this.#lean?.close();
  }

  #require(id: number): Held {
    const h = this.#held.get(id);
    if (h === undefined) throw new OptinError('INTERNAL', `segment ${id} is not held by this media thread`);
    return h;
  }
}
