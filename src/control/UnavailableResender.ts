/**
 * Frames the control plane could not handle because its database was down (it answers
 * `unavailable` with the frame's ref: a recording id for `recording.report`, the erasure or
 * deletion id for a confirmation) are sent again after a backoff, until they stop failing.
 *
 * Only the latest frame per ref is kept (a catalogue report supersedes the previous one: the
 * control plane's upsert is monotonic), and only the most recent `max` refs: an older one falls
 * back on the other paths (reports are resent after a reconnect, confirmations after the next
 * snapshot, the catalogue is rebuilt from the store).
 */

export interface UnavailableResenderOptions<M> {
  resend: (message: M) => void;
  minMs?: number;
  maxMs?: number;
  max?: number;
}

interface Kept<M> {
  message: M;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

export class UnavailableResender<M> {
  readonly #resend: (message: M) => void;
  readonly #minMs: number;
  readonly #maxMs: number;
  readonly #max: number;
  readonly #kept = new Map<string, Kept<M>>();

  constructor(options: UnavailableResenderOptions<M>) {
    this.#resend = options.resend;
    this.#minMs = options.minMs ?? 500;
    this.#maxMs = options.maxMs ?? 30_000;
    this.#max = options.max ?? 10_000;
  }

  /** `message` was just sent under `ref`: the one to send again if the control plane fails it. */
  sent(ref: string, message: M): void {
    const previous = this.#kept.get(ref);
    if (previous?.timer !== undefined) clearTimeout(previous.timer);
    this.#kept.delete(ref);
    this.#kept.set(ref, { message, failures: 0, timer: undefined });
    while (this.#kept.size > this.#max) this.#forget(this.#kept.keys().next().value as string);
  }

  /** The control plane answered `unavailable` for `ref`. Returns whether a frame was kept for it. */
  unavailable(ref: string): boolean {
    const kept = this.#kept.get(ref);
    if (kept === undefined) return false;
    if (kept.timer !== undefined) return true; // a resend is already due
    const delay = Math.min(this.#maxMs, this.#minMs * 2 ** Math.min(kept.failures, 16));
    kept.failures++;
    kept.timer = setTimeout(() => {
      kept.timer = undefined;
      if (this.#kept.get(ref) === kept) this.#resend(kept.message);
    }, delay);
    kept.timer.unref();
    return true;
  }

  get size(): number {
    return this.#kept.size;
  }

  close(): void {
    for (const ref of [...this.#kept.keys()]) this.#forget(ref);
  }

  #forget(ref: string): void {
    const kept = this.#kept.get(ref);
    if (kept?.timer !== undefined) clearTimeout(kept.timer);
    this.#kept.delete(ref);
  }
}
