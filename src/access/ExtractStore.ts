import { OptinError } from '../errors/OptinError.ts';
import type { ExtractPackage } from './extract.ts';

/**
 * Finished extracts, held in memory for a short time so the operator can download each file,
 * then forgotten: an extract is a copy of someone's voice and must not pile up (R12 is about
 * giving the person their data, not about keeping another copy). Bounded by total bytes: when
 * full, new extracts are refused (retry later) rather than evicting one being downloaded. An
 * extract never outlives the earliest expiry of the recordings it holds (R8), and is dropped at
 * once when one of them is deleted or its subject erased (R9: every copy).
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

  get size(): number {
    return this.#held.size;
  }

  /** Bytes a new extract may still take. */
  free(): number {
    this.purge();
    return Math.max(0, this.maxBytes - this.#bytes);
  }

  /** Holds a package until `ttlMs` from now, or `notAfterMs` (the earliest recording expiry) if sooner. */
  add(pkg: ExtractPackage, owner: string, notAfterMs?: number): HeldExtract {
    this.purge();
    if (this.#bytes + pkg.totalBytes > this.maxBytes) {
      throw new OptinError('EXTRACT_STORE_FULL', 'too many extracts are waiting to be downloaded; retry in a few minutes', { retryable: true });
    }
    const held: HeldExtract = { pkg, owner, expiresAtMs: Math.min(this.#now() + this.ttlMs, notAfterMs ?? Number.POSITIVE_INFINITY) };
    this.#held.set(pkg.extractId, held);
    this.#bytes += pkg.totalBytes;
    return held;
  }

  get(extractId: string): HeldExtract | undefined {
    this.purge();
    return this.#held.get(extractId);
  }

  /** Ids held now. */
  ids(): string[] {
    return [...this.#held.keys()];
  }

  /**
   * Forgets every extract holding a track of `recordingId` (of `participantId` only, when
   * given); returns the ids dropped.
   */
  dropRecording(recordingId: string, participantId?: string): string[] {
    const dropped: string[] = [];
    for (const [id, h] of this.#held) {
      const hit = h.pkg.items.some((i) => i.recordingId === recordingId && (participantId === undefined || i.participantId === participantId));
      if (hit) {
        this.drop(id);
        dropped.push(id);
      }
    }
    return dropped;
  }

  drop(id: string): void {
    const h = this.#held.get(id);
    if (h === undefined) return;
    this.#held.delete(id);
    this.#bytes -= h.pkg.totalBytes;
  }

  clear(): void {
    this.#held.clear();
    this.#bytes = 0;
  }

  /** Drops what expired; returns the ids dropped. */
  purge(): string[] {
    const now = this.#now();
    const dropped: string[] = [];
    for (const [id, h] of this.#held) {
      if (h.expiresAtMs <= now) {
        this.drop(id);
        dropped.push(id);
      }
    }
    return dropped;
  }
}
