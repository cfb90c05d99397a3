import { randomBytes } from 'node:crypto';
import type { Database } from '../db/Database.ts';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';
import type { ExtractFormat, ExtractPackage, ExtractProgress } from './extract.ts';
import { ExtractStore, type HeldExtract } from './ExtractStore.ts';

/**
 * Subject-access requests as jobs (issue 14 §7): the extract operator names a subject and a case
 * reference; a job row records it (table `extract_jobs`), the work runs in the background on
 * this replica with its progress written to the row, and the finished package (one speaker's
 * audio plus the manifest) is held in this replica's memory (ExtractStore) for its owner to
 * download until it expires, or until a recording in it is deleted or its subject erased, when
 * it is withdrawn at once (R9).
 *
 * A replica that restarts loses what it held: its unfinished jobs become `failed` and its
 * finished ones `expired` at start (`recover`), and the operator starts again.
 */

export type ExtractJobState = 'queued' | 'running' | 'ready' | 'failed' | 'expired' | 'withdrawn';

export interface ExtractJobFile {
  name: string;
  contentType: string;
  bytes: number;
  sha256: string;
}

export interface ExtractJob {
  id: string;
  owner: string;
  subjectId: string;
  caseRef: string;
  format: ExtractFormat;
  state: ExtractJobState;
  progress: { done: number; total: number };
  recordingIds: string[];
  files: ExtractJobFile[];
  replicaId: string;
  error?: string;
  createdAt: number;
  updatedAt: number;
  expiresAt?: number;
}

interface Row {
  id: string;
  owner: string;
  subject_id: string;
  case_ref: string;
  format: ExtractFormat;
  state: ExtractJobState;
  progress_done: number;
  progress_total: number;
  recording_ids: string[];
  files: ExtractJobFile[];
  replica_id: string;
  error: string | null;
  created_at_ms: number;
  updated_at_ms: number;
  expires_at_ms: number | null;
}

const COLUMNS = 'id, owner, subject_id, case_ref, format, state, progress_done, progress_total, recording_ids, files, replica_id, error, created_at_ms, updated_at_ms, expires_at_ms';

function toJob(r: Row): ExtractJob {
  return {
    id: r.id,
    owner: r.owner,
    subjectId: r.subject_id,
    caseRef: r.case_ref,
    format: r.format,
    state: r.state,
    progress: { done: r.progress_done, total: r.progress_total },
    recordingIds: r.recording_ids,
    files: r.files,
    replicaId: r.replica_id,
    ...(r.error === null ? {} : { error: r.error }),
    createdAt: r.created_at_ms,
    updatedAt: r.updated_at_ms,
    ...(r.expires_at_ms === null ? {} : { expiresAt: r.expires_at_ms }),
  };
}

/** What runs a job: the access service's extract, with the hooks it needs. */
export type ExtractRunner = (
  job: Pick<ExtractJob, 'id' | 'owner' | 'subjectId' | 'caseRef' | 'format'>,
  hooks: { signal: AbortSignal; onProgress: (p: ExtractProgress) => void; maxBytes: number },
) => Promise<ExtractPackage>;

export interface ExtractJobsOptions {
  db: Database;
  replicaId: string;
  logger: Logger;
  run: ExtractRunner;
  maxBytes: number;
  ttlMs: number;
  /** Jobs an operator may have queued or running at once (default 2). */
  perOwner?: number;
  now?: () => number;
}

/** Progress is written at most this often (a 30-minute track is 180 segments). */
const PROGRESS_EVERY_MS = 200;

export class ExtractJobs {
  readonly held: ExtractStore;
  readonly #o: ExtractJobsOptions;
  readonly #now: () => number;
  readonly #running = new Map<string, { abort: AbortController; recordingIds: Set<string> | undefined; subjectId: string; done: Promise<void> }>();
  #closed = false;

  constructor(options: ExtractJobsOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.held = new ExtractStore({ maxBytes: options.maxBytes, ttlMs: options.ttlMs, now: this.#now });
  }

  /** At start: what a previous run of this replica left is gone from memory. */
  async recover(): Promise<void> {
    const now = this.#now();
    await this.#o.db.query(
      "UPDATE extract_jobs SET state = 'failed', error = 'the control plane restarted while the job ran; start it again', updated_at_ms = $2 WHERE replica_id = $1 AND state IN ('queued', 'running')",
      [this.#o.replicaId, now],
    );
    await this.#o.db.query("UPDATE extract_jobs SET state = 'expired', updated_at_ms = $2 WHERE replica_id = $1 AND state = 'ready'", [this.#o.replicaId, now]);
  }

  /** Creates a job and starts it in the background; refuses a third concurrent job of one operator. */
  async create(input: { owner: string; subjectId: string; caseRef: string; format: ExtractFormat }): Promise<ExtractJob> {
    if (this.#closed) throw new OptinError('EXTRACT_STORE_FULL', 'this replica is shutting down; retry', { retryable: true });
    const { rows: active } = await this.#o.db.query<{ n: number }>("SELECT count(*)::int AS n FROM extract_jobs WHERE owner = $1 AND state IN ('queued', 'running')", [input.owner]);
    if ((active[0]?.n ?? 0) >= (this.#o.perOwner ?? 2)) {
      throw new OptinError('EXTRACT_STORE_FULL', 'you have extracts still running; wait for one to finish', { retryable: true });
    }
    const id = `x_${randomBytes(8).toString('hex')}`;
    const now = this.#now();
    const { rows } = await this.#o.db.query<Row>(
      `INSERT INTO extract_jobs (id, owner, subject_id, case_ref, format, state, replica_id, created_at_ms, updated_at_ms)
       VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7) RETURNING ${COLUMNS}`,
      [id, input.owner, input.subjectId, input.caseRef, input.format, this.#o.replicaId, now],
    );
    const job = toJob(rows[0]!);
    const abort = new AbortController();
    const entry = { abort, recordingIds: undefined as Set<string> | undefined, subjectId: input.subjectId, done: Promise.resolve() };
    this.#running.set(id, entry);
    entry.done = this.#execute(job, abort.signal).finally(() => this.#running.delete(id));
    return job;
  }

  async get(id: string): Promise<ExtractJob | undefined> {
    const { rows } = await this.#o.db.query<Row>(`SELECT ${COLUMNS} FROM extract_jobs WHERE id = $1`, [id]);
    const job = rows[0] === undefined ? undefined : toJob(rows[0]);
    return job === undefined ? undefined : this.#reconcile(job);
  }

  /** An operator's jobs, newest first. */
  async list(owner: string): Promise<ExtractJob[]> {
    const { rows } = await this.#o.db.query<Row>(`SELECT ${COLUMNS} FROM extract_jobs WHERE owner = $1 ORDER BY created_at_ms DESC, id LIMIT 100`, [owner]);
    return Promise.all(rows.map((r) => this.#reconcile(toJob(r))));
  }

  /** The held package of a ready job of this replica. */
  package(id: string): HeldExtract | undefined {
    return this.held.get(id);
  }

  /**
   * Withdraws every job holding (or about to hold) a track of `recordingId` (of `participantId`
   * only, when given): running jobs are stopped, held packages dropped, rows marked `withdrawn`.
   * Synchronous on memory (the audio is gone when this returns); the rows follow.
   */
  withdraw(recordingId: string, participantId: string | undefined, why: string): Promise<void> {
    const ids = new Set(this.held.dropRecording(recordingId, participantId));
    for (const [id, r] of this.#running) {
      // A running job whose plan is not known yet is stopped too: it may be reading that recording.
      if (r.recordingIds === undefined || r.recordingIds.has(recordingId)) {
        r.abort.abort();
        ids.add(id);
      }
    }
    return this.#markWithdrawn([...ids], why);
  }

  /** Withdraws everything held or running for a subject (their erasure). */
  withdrawSubject(subjectId: string, why: string): Promise<void> {
    const ids: string[] = [];
    for (const id of this.held.ids()) {
      if (this.held.get(id)?.pkg.subjectId === subjectId) {
        this.held.drop(id);
        ids.push(id);
      }
    }
    for (const [id, r] of this.#running) {
      if (r.subjectId === subjectId) {
        r.abort.abort();
        ids.push(id);
      }
    }
    return this.#markWithdrawn(ids, why);
  }

  /** Drops expired packages and marks their rows (called every second by the service). */
  async sweep(): Promise<void> {
    const gone = this.held.purge();
    if (gone.length > 0) {
      await this.#o.db.query("UPDATE extract_jobs SET state = 'expired', updated_at_ms = $2 WHERE id = ANY($1) AND state = 'ready'", [gone, this.#now()]);
    }
  }

  /** Deletes job rows long finished (they name a subject and a case: R8). */
  async purgeRows(olderThanMs: number): Promise<number> {
    const res = await this.#o.db.query("DELETE FROM extract_jobs WHERE state IN ('failed', 'expired', 'withdrawn') AND updated_at_ms < $1", [olderThanMs]);
    return res.rowCount;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const r of this.#running.values()) r.abort.abort();
    await Promise.all([...this.#running.values()].map((r) => r.done.catch(() => undefined)));
    this.held.clear();
  }

  async #markWithdrawn(ids: string[], why: string): Promise<void> {
    if (ids.length === 0) return;
    await this.#o.db.query(
      "UPDATE extract_jobs SET state = 'withdrawn', error = $2, updated_at_ms = $3 WHERE id = ANY($1) AND state IN ('queued', 'running', 'ready')",
      [ids, why, this.#now()],
    );
  }

  /** A `ready` job of this replica whose package is no longer held has expired (or was withdrawn). */
  async #reconcile(job: ExtractJob): Promise<ExtractJob> {
    if (job.state === 'ready' && job.replicaId === this.#o.replicaId && this.held.get(job.id) === undefined) {
      await this.sweep();
      const { rows } = await this.#o.db.query<Row>(`SELECT ${COLUMNS} FROM extract_jobs WHERE id = $1`, [job.id]);
      const again = rows[0] === undefined ? job : toJob(rows[0]);
      if (again.state === 'ready') {
        await this.#o.db.query("UPDATE extract_jobs SET state = 'expired', updated_at_ms = $2 WHERE id = $1 AND state = 'ready'", [job.id, this.#now()]);
        return { ...again, state: 'expired' };
      }
      return again;
    }
    return job;
  }

  async #execute(job: ExtractJob, signal: AbortSignal): Promise<void> {
    const db = this.#o.db;
    let lastWrite = 0;
    let pending: Promise<unknown> = Promise.resolve();
    const writeProgress = (p: ExtractProgress, force = false): void => {
      const now = this.#now();
      if (!force && now - lastWrite < PROGRESS_EVERY_MS) return;
      lastWrite = now;
      pending = pending.then(() =>
        db.query("UPDATE extract_jobs SET progress_done = $2, progress_total = $3, updated_at_ms = $4 WHERE id = $1 AND state = 'running'", [job.id, p.done, p.total, now]).catch(() => undefined),
      );
    };
    try {
      await db.query("UPDATE extract_jobs SET state = 'running', updated_at_ms = $2 WHERE id = $1 AND state = 'queued'", [job.id, this.#now()]);
      const pkg = await this.#o.run(job, {
        signal,
        maxBytes: this.held.free(),
        onProgress: (p) => writeProgress(p, p.done === 0 || p.done === p.total),
      });
      await pending;
      if (signal.aborted) throw new OptinError('EXTRACT_WITHDRAWN', 'withdrawn while running');
      const notAfter = pkg.items.length === 0 ? undefined : Math.min(...pkg.items.map((i) => i.expiresAtMs));
      const held = this.held.add(pkg, job.owner, notAfter);
      const files: ExtractJobFile[] = pkg.files.map((f) => ({ name: f.name, contentType: f.contentType, bytes: f.bytes.length, sha256: f.sha256 }));
      const recordingIds = [...new Set(pkg.items.map((i) => i.recordingId))];
      const res = await db.query(
        `UPDATE extract_jobs SET state = 'ready', files = $2::jsonb, recording_ids = $3, progress_done = progress_total, expires_at_ms = $4, updated_at_ms = $5
          WHERE id = $1 AND state = 'running' RETURNING id`,
        [job.id, JSON.stringify(files), recordingIds, held.expiresAtMs, this.#now()],
      );
      // Withdrawn between the end of the work and here: the package must not stay.
      if (res.rowCount === 0) this.held.drop(job.id);
    } catch (err) {
      await pending;
      if (signal.aborted || isOptinError(err, 'EXTRACT_WITHDRAWN')) {
        this.held.drop(job.id);
        await db.query("UPDATE extract_jobs SET state = 'withdrawn', error = COALESCE(error, $2), updated_at_ms = $3 WHERE id = $1 AND state IN ('queued', 'running')", [
          job.id,
          'a recording in it was deleted or its subject erased while it ran',
          this.#now(),
        ]);
        return;
      }
      const message = isOptinError(err) && err.kind !== 'internal' && err.kind !== 'corrupt' ? err.message : 'the extract failed; the operators have the details in the log';
      this.#o.logger.warn({ jobId: job.id, code: (err as OptinError).code, err: (err as Error).message }, 'extract job failed');
      await db.query("UPDATE extract_jobs SET state = 'failed', error = $2, updated_at_ms = $3 WHERE id = $1 AND state IN ('queued', 'running')", [job.id, message, this.#now()]).catch(() => undefined);
    }
  }

  /** Lets the runner tell which recordings a running job reads (so a deletion stops only the jobs it concerns). */
  planned(jobId: string, recordingIds: readonly string[]): void {
    const r = this.#running.get(jobId);
    if (r !== undefined) r.recordingIds = new Set(recordingIds);
  }

  /** Waits for every running job (tests). */
  async idle(): Promise<void> {
    await Promise.all([...this.#running.values()].map((r) => r.done.catch(() => undefined)));
  }
}
