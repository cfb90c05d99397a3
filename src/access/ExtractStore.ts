import { OptinError } from '../errors/OptinError.ts';
import type { ExtractPackage } from './extract.ts';

/**
 * Finished extracts, held in memory for a short time so the operator can download each file,
 * then forgotten: an extract is a copy of someone's voice and must not pile up (R12 is about
 * giving the person their data, not about keeping another copy). Bounded by total bytes: when
 * full, new extracts are refused (retry later) rather than evicting one being downloaded.
 */
export interface HeldExtract {
  pkg: ExtractPackage;
  /** Who made it: only they may download it. */
  owner: string;
  expiresAtMs: number;
}

export class ExtractStore {
  readonly maxBytes: number;
  readonly ttlMs: number;
  readonly #now: () => number;
  readonly #held = new Map<string, HeldExtract>();
  #bytes = 0;

  constructor(options: { maxBytes: number; ttlMs: number; now?: () => number }) {
    this.maxBytes = options.maxBytes;
    this.ttlMs = options.ttlMs;
    this.#now = options.now ?? Date.now;
  }

  /** Bytes a new extract may still take. */
  free(): number {
    this.#purge();
    return Math.max(0, this.maxBytes - this.#bytes);
  }

  add(pkg: ExtractPackage, owner: string): HeldExtract {
    this.#purge();
    if (this.#bytes + pkg.totalBytes > this.maxBytes) {
      throw new OptinError('EXTRACT_STORE_FULL', 'too many extracts are waiting to be downloaded; retry in a few minutes', { retryable: true });
    }
    const held: HeldExtract = { pkg, owner, expiresAtMs: this.#now() + this.ttlMs };
    this.#held.set(pkg.extractId, held);
    this.#bytes += pkg.totalBytes;
    return held;
  }

  get(extractId: string): HeldExtract | undefined {
    this.#purge();
    return this.#held.get(extractId);
  }

  /** Forgets every extract holding a recording (after its deletion: R9 covers every copy). */
  dropRecording(recordingId: string): void {
    for (const [id, h] of this.#held) {
      if (h.pkg.manifest.recordings.some((r) => r.recordingId === recordingId)) this.#drop(id);
    }
  }

  clear(): void {
    this.#held.clear();
    this.#bytes = 0;
  }

  #purge(): void {
    const now = this.#now();
    for (const [id, h] of this.#held) if (h.expiresAtMs <= now) this.#drop(id);
  }

  #drop(id: string): void {
    const h = this.#held.get(id);
    if (h === undefined) return;
    this.#held.delete(id);
    this.#bytes -= h.pkg.totalBytes;
  }
}
