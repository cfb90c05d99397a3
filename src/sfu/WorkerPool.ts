import os from 'node:os';
import * as mediasoup from 'mediasoup';
import type { types } from 'mediasoup';
import { TypedEmitter } from '../events/TypedEmitter.ts';
import { resolveWorkerBin } from './workerBin.ts';
import { OptinError } from '../errors/OptinError.ts';
import type { Logger } from '../log/logger.ts';

export interface WorkerPoolOptions {
  /** Number of mediasoup workers; default one per core. */
  size?: number;
  workerBin?: string;
  rtcMinPort?: number;
  rtcMaxPort?: number;
  logLevel?: types.WorkerLogLevel;
  logger: Logger;
}

export type WorkerPoolEvents = {
  /** A worker died; its calls are gone and `replaced` is the new worker. */
  workerdied: [{ index: number; pid: number; error: Error; replaced: types.Worker | undefined }];
};

/**
 * One mediasoup worker per core (docs/architecture.md §8), calls spread across them by load. A worker that
 * dies is reported (its calls' owners listen to their Routers' `workerclose`) and replaced, so
 * one crash ends only the calls it carried.
 */
export class WorkerPool extends TypedEmitter<WorkerPoolEvents> {
  readonly #workers: (types.Worker | undefined)[] = [];
  readonly #load = new Map<types.Worker, number>();
  readonly #opts: Required<Omit<WorkerPoolOptions, 'workerBin' | 'logger'>> & { workerBin: string; logger: Logger };
  #closed = false;

  private constructor(opts: WorkerPoolOptions) {
    super();
    this.#opts = {
      size: opts.size ?? Math.max(1, os.availableParallelism()),
      workerBin: resolveWorkerBin(opts.workerBin),
      rtcMinPort: opts.rtcMinPort ?? 40000,
      rtcMaxPort: opts.rtcMaxPort ?? 49999,
      logLevel: opts.logLevel ?? 'warn',
      logger: opts.logger,
    };
  }

  static async create(opts: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(opts);
    for (let i = 0; i < pool.#opts.size; i++) pool.#workers.push(await pool.#spawn(i));
    return pool;
  }

  get workers(): types.Worker[] {
    return this.#workers.filter((w): w is types.Worker => w !== undefined && !w.closed);
  }

  /** The least-loaded live worker; the caller reports its own load with `retain`/`release`. */
  pick(): types.Worker {
    let best: types.Worker | undefined;
    for (const w of this.workers) if (!best || (this.#load.get(w) ?? 0) < (this.#load.get(best) ?? 0)) best = w;
    if (!best) throw new OptinError('NO_MEDIA_WORKER', 'no mediasoup worker is alive', { retryable: true });
    return best;
  }

  retain(worker: types.Worker, weight = 1): void {
    this.#load.set(worker, (this.#load.get(worker) ?? 0) + weight);
  }

  release(worker: types.Worker, weight = 1): void {
    this.#load.set(worker, Math.max(0, (this.#load.get(worker) ?? 0) - weight));
  }

  async resourceUsage(): Promise<{ pid: number; cpuMs: number; maxRssKb: number }[]> {
    return Promise.all(
      this.workers.map(async (w) => {
        const u = await w.getResourceUsage();
        return { pid: w.pid, cpuMs: u.ru_utime + u.ru_stime, maxRssKb: u.ru_maxrss };
      }),
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.workers) w.close();
  }

  async #spawn(index: number): Promise<types.Worker> {
    let worker: types.Worker;
    try {
      worker = await mediasoup.createWorker({
        workerBin: this.#opts.workerBin,
        logLevel: this.#opts.logLevel,
        rtcMinPort: this.#opts.rtcMinPort,
        rtcMaxPort: this.#opts.rtcMaxPort,
      });
    } catch (cause) {
      throw new OptinError(
        'WORKER_START_FAILED',
        `mediasoup worker ${this.#opts.workerBin} failed to start (${(cause as Error).message}); ` +
          'rebuild it with `npm run setup` or check its shared libraries with ldd',
        { cause },
      );
    }
    this.#load.set(worker, 0);
    worker.on('died', (error) => {
      this.#load.delete(worker);
      this.#workers[index] = undefined;
      this.#opts.logger.error({ workerIndex: index, pid: worker.pid, err: error.message }, 'mediasoup worker died');
      if (this.#closed) return;
      this.#spawn(index).then(
        (replacement) => {
          this.#workers[index] = replacement;
          this.safeEmit('workerdied', { index, pid: worker.pid, error, replaced: replacement });
        },
        (err: Error) => {
          this.#opts.logger.error({ workerIndex: index, err: err.message }, 'mediasoup worker could not be replaced');
          this.safeEmit('workerdied', { index, pid: worker.pid, error, replaced: undefined });
        },
      );
    });
    return worker;
  }
}
