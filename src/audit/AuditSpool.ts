import { chmodSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { open, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { AuditInput } from './AuditTrail.ts';
import type { Logger } from '../log/logger.ts';
import { OptinError } from '../errors/OptinError.ts';

/** What the spool writes to (AuditTrail satisfies it). */
export interface AuditAppendTarget {
  append(input: AuditInput): Promise<unknown>;
}

export interface AuditSpoolOptions {
  /** Entries waiting for the trail before `append` refuses (and the recorder closes its gates). */
  maxEntries?: number;
}

/** Enough for hours of gate transitions during a store outage on a busy worker. */
const DEFAULT_MAX_ENTRIES = 50_000;
/** Entries already in the trail before the pending file is compacted. */
const COMPACT_AFTER = 256;

/**
 * A durable queue in front of the audit trail for the entries the system writes on its own (gate
 * transitions, erasures, deletions, expiries). The audit bucket lives on the same store as the
 * recordings, so a store outage would otherwise lose exactly the entries that explain what
 * happened during it (R11). Each entry is appended to a local JSON-lines file and fsync'd before
 * `append` resolves, then written to the trail in order, with retries, when the store answers;
 * entries carry the instant they were queued (`details.queuedAt`), since the trail stamps its own
 * time when the entry lands. No audio or keys go in here: AuditTrail's own validation and
 * redaction apply when each entry is written.
 *
 * Delivery is at least once: a crash between delivering entries and compacting the file repeats
 * at most the last few hundred on the next start (each keeps its `queuedAt`).
 *
 * Nothing here blocks the event loop: file writes are asynchronous and grouped (the appends that
 * arrive while one fsync runs share the next one), and the pending file is compacted only every
 * few hundred delivered entries, not rewritten per entry. The queue is bounded: when it is full,
 * `append` refuses (AUDIT_SPOOL_FULL) and `full` is true, which the recorder reads as a reason to
 * close every gate: recording without being able to account for it would break R11.
 *
 * Access routes do not use this queue: an access must be audited before data leaves, so they
 * write to the trail directly and refuse (503) when they cannot.
 */
export class AuditSpool implements AuditAppendTarget {
  readonly #trail: AuditAppendTarget;
  readonly #file: string;
  readonly #log: Logger | undefined;
  readonly #maxEntries: number;
  /** Entries not yet in the trail, oldest first. */
  readonly #queue: AuditInput[] = [];
  /** Lines waiting for the next grouped append+fsync, with the callers waiting on it. */
  #unsynced: { line: string; done: (err?: Error) => void }[] = [];
  #writing: Promise<void> | undefined;
  /** Entries delivered to the trail since the pending file was last compacted. */
  #deliveredSinceCompact = 0;
  #draining: Promise<void> | undefined;
  #closed = false;
  #retryMs = 250;
  #timer: NodeJS.Timeout | undefined;
  #idle: (() => void)[] = [];

  constructor(trail: AuditAppendTarget, dir: string, logger?: Logger, options: AuditSpoolOptions = {}) {
    this.#trail = trail;
    this.#log = logger;
    this.#maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    // Once, at start, before any entry: the only synchronous file work this class does.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700); // an existing directory keeps its mode under mkdir
    this.#file = path.join(dir, 'audit-pending.jsonl');
    if (existsSync(this.#file)) chmodSync(this.#file, 0o600);
    // Entries left by a previous process (crash or outage at shutdown) go first.
    if (existsSync(this.#file)) {
      for (const line of readFileSync(this.#file, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          this.#queue.push(JSON.parse(line) as AuditInput);
        } catch {
          this.#log?.error('audit spool: an unreadable pending entry was skipped');
        }
      }
      if (this.#queue.length) this.#log?.warn({ pending: this.#queue.length }, 'audit spool: writing entries left by a previous run');
      // The file may hold entries already delivered before a crash: compact on the first delivery.
      this.#deliveredSinceCompact = COMPACT_AFTER;
    }
    this.#kick();
  }

  get pending(): number {
    return this.#queue.length;
  }

  /** True when the queue is at its bound: new entries are refused until the trail catches up. */
  get full(): boolean {
    return this.#queue.length >= this.#maxEntries;
  }

  /** Resolves once the entry is durable locally; it reaches the trail as soon as the store allows. */
  async append(input: AuditInput): Promise<void> {
    if (this.#closed) throw new OptinError('AUDIT_UNAVAILABLE', 'the audit spool is closed');
    if (this.full) {
      throw new OptinError('AUDIT_SPOOL_FULL', `the audit spool holds ${this.#queue.length} entries the trail has not taken; the audit store must come back before more is recorded`);
    }
    const entry: AuditInput = { ...input, details: { ...(input.details ?? {}), queuedAt: new Date().toISOString() } };
    const line = `${JSON.stringify(entry)}\n`;
    // Queued for delivery now, in call order; durable locally when the grouped fsync resolves.
    this.#queue.push(entry);
    await new Promise<void>((resolve, reject) => {
      this.#unsynced.push({ line, done: (err) => (err ? reject(err) : resolve()) });
      this.#writeSoon();
    });
    this.#kick();
  }

  /** Resolves when every queued entry is in the trail (or after `timeoutMs`). */
  async flushed(timeoutMs = 30_000): Promise<boolean> {
    if (this.#queue.length === 0) return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.#idle.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /** Stops delivering; waits for the file write and the delivery in flight. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#writing?.catch(() => undefined);
    await this.#draining?.catch(() => undefined);
  }

  // -- local file ------------------------------------------------------------------------------

  #writeSoon(): void {
    if (this.#writing) return;
    this.#writing = this.#writeBatches().finally(() => {
      this.#writing = undefined;
      if (this.#unsynced.length) this.#writeSoon();
    });
  }

  /** Group commit: every line queued while one fsync runs goes into the next one. */
  async #writeBatches(): Promise<void> {
    while (this.#unsynced.length) {
      const batch = this.#unsynced;
      this.#unsynced = [];
      let fh: FileHandle | undefined;
      try {
        fh = await open(this.#file, 'a', 0o600);
        await fh.appendFile(batch.map((b) => b.line).join(''));
        await fh.datasync();
        for (const b of batch) b.done();
      } catch (err) {
        for (const b of batch) b.done(err as Error);
      } finally {
        await fh?.close().catch(() => undefined);
      }
    }
  }

  /** Rewrites the pending file to hold exactly the queue (atomic rename, fsync'd). */
  async #compact(): Promise<void> {
    // Lines still waiting for their first write must land first, or the rewrite would race them.
    await this.#writing;
    const tmp = `${this.#file}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      if (this.#queue.length) await fh.writeFile(this.#queue.map((e) => JSON.stringify(e)).join('\n') + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.#file);
    this.#deliveredSinceCompact = 0;
  }

  // -- delivery to the trail -------------------------------------------------------------------

  #kick(): void {
    if (this.#draining || this.#closed || this.#timer) return;
    this.#draining = this.#drain().finally(() => {
      this.#draining = undefined;
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      try {
        await this.#trail.append(this.#queue[0]!);
      } catch (err) {
        const retryable = (err as { code?: string }).code !== 'AUDIT_INVALID_ENTRY';
        if (!retryable) {
          this.#log?.error({ err: (err as Error).message }, 'audit spool: entry refused by the trail, dropped');
        } else {
          this.#log?.warn({ err: (err as Error).message, pending: this.#queue.length, retryMs: this.#retryMs }, 'audit spool: trail unavailable, will retry');
          this.#timer = setTimeout(() => {
            this.#timer = undefined;
            this.#kick();
          }, this.#retryMs);
          this.#timer.unref();
          this.#retryMs = Math.min(this.#retryMs * 2, 10_000);
          return;
        }
      }
      this.#queue.shift();
      this.#retryMs = 250;
      this.#deliveredSinceCompact++;
      if (this.#closed) return;
      if (this.#queue.length === 0 || this.#deliveredSinceCompact >= COMPACT_AFTER) {
        await this.#compact().catch((err: Error) => this.#log?.error({ err: err.message }, 'audit spool: pending file not compacted'));
      }
    }
    if (this.#queue.length === 0) for (const fn of this.#idle.splice(0)) fn();
  }
}
