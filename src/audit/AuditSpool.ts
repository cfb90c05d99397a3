import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { AuditInput } from './AuditTrail.ts';
import type { Logger } from '../log/logger.ts';

/** What the spool writes to (AuditTrail satisfies it). */
export interface AuditAppendTarget {
  append(input: AuditInput): Promise<unknown>;
}

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
 * Access routes do not use this queue: an access must be audited before data leaves, so they
 * write to the trail directly and refuse (503) when they cannot.
 */
export class AuditSpool implements AuditAppendTarget {
  readonly #trail: AuditAppendTarget;
  readonly #file: string;
  readonly #log: Logger | undefined;
  readonly #queue: AuditInput[] = [];
  #draining = false;
  #closed = false;
  #retryMs = 250;
  #timer: NodeJS.Timeout | undefined;
  #idle: (() => void)[] = [];

  constructor(trail: AuditAppendTarget, dir: string, logger?: Logger) {
    this.#trail = trail;
    this.#log = logger;
    mkdirSync(dir, { recursive: true });
    this.#file = path.join(dir, 'audit-pending.jsonl');
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
    }
    this.#kick();
  }

  get pending(): number {
    return this.#queue.length;
  }

  /** Resolves once the entry is durable locally; it reaches the trail as soon as the store allows. */
  async append(input: AuditInput): Promise<void> {
    const entry: AuditInput = { ...input, details: { ...(input.details ?? {}), queuedAt: new Date().toISOString() } };
    const fd = openSync(this.#file, 'a');
    try {
      writeSync(fd, `${JSON.stringify(entry)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.#queue.push(entry);
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

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #kick(): void {
    if (this.#draining || this.#closed || this.#timer) return;
    void this.#drain();
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
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
        this.#rewrite();
      }
      if (this.#queue.length === 0) for (const fn of this.#idle.splice(0)) fn();
    } finally {
      this.#draining = false;
    }
  }

  /** The pending file always equals the queue (atomic rename, fsync'd). */
  #rewrite(): void {
    const tmp = `${this.#file}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      if (this.#queue.length) writeSync(fd, this.#queue.map((e) => JSON.stringify(e)).join('\n') + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.#file);
  }
}
