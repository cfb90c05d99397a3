import type { Client } from 'minio';
import { setTimeout as sleep } from 'node:timers/promises';
import { OptinError } from '../errors/OptinError.ts';
import { monthKey } from './month.ts';
import type { PolicyState } from './PolicyState.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * R6's monthly cap on recordings per agent, durable in the keys/manifests
 * bucket so that it survives restarts and holds across every worker sharing
 * the store. One empty marker object per admitted recording:
 *
 *   caps/<agentId>/<YYYY-MM>/<issuedAtMs, 15 digits>-<recordingId>
 *
 * Admission protocol (S3 gives strong read-after-write consistency for PUT
 * and LIST: AWS since 2020, MinIO, Ceph RGW):
 *   1. list the month's prefix; refuse at once if it already holds `cap`
 *      markers (or say yes if this recording already has one: idempotent);
 *   2. PUT our marker;
 *   3. LIST the prefix again. Accept iff the listing holds at most `cap`
 *      markers. If it holds more but ours ranks below `cap` in (timestamp, id)
 *      order, wait a little and list again (the higher-ranked contenders are
 *      deleting theirs); after a few tries, or at once if we rank at or beyond
 *      `cap`, DELETE our marker and refuse.
 *
 * Why this is safe under races: accepted markers are never deleted (within
 * the month), and a marker is accepted only by a LIST made after its own PUT
 * that saw at most `cap` markers. Suppose cap + 1 markers were accepted; take
 * the one whose PUT came last. Its accepting LIST came after that PUT, hence
 * after the PUTs of all the others, which were all still there, so it saw at
 * least cap + 1 markers and could not have accepted. Contradiction. Ranking by
 * (timestamp, id) only decides who backs off first, so clocks need not agree.
 *
 * Failure modes, all closed: concurrent admissions may both back off and
 * leave a slot unused; a worker that crashes between PUT and DELETE leaves a
 * marker that counts against the cap for the rest of the month; an S3 error
 * refuses (throws a retryable OptinError; the recorder keeps the gate closed).
 */

/** The part of the minio Client the ledger uses (tests may pass a fake). */
export type CapStore = Pick<Client, 'putObject' | 'removeObject' | 'listObjectsV2'>;

export interface CapLedgerOptions {
  client: CapStore;
  /** The keys/manifests bucket. */
  bucket: string;
  /** The agent's current monthly cap (from the PolicyState's schedule); undefined = no schedule = refuse. */
  capFor: (agentId: string) => number | undefined;
  /** Default `caps/`. */
  prefix?: string;
  /** How many times to re-list while contending (default 4). */
  retries?: number;
  /** Base delay between re-lists, jittered (default 25 ms). */
  retryDelayMs?: number;
}

const MARKER = /^(\d{15})-([A-Za-z0-9_-]{1,64})$/;

interface Marker {
  name: string;
  ts: number;
  recordingId: string;
}

export class CapLedger {
  readonly #client: CapStore;
  readonly #bucket: string;
  readonly #capFor: (agentId: string) => number | undefined;
  readonly #prefix: string;
  readonly #retries: number;
  readonly #retryDelayMs: number;

  constructor(options: CapLedgerOptions) {
    this.#client = options.client;
    this.#bucket = options.bucket;
    this.#capFor = options.capFor;
    this.#prefix = options.prefix ?? 'caps/';
    this.#retries = options.retries ?? 4;
    this.#retryDelayMs = options.retryDelayMs ?? 25;
  }

  /**
   * Admits one recording of this agent in the month of `now` (UTC), or
   * refuses it because the cap is reached. Throws a retryable OptinError
   * (`cap-ledger-unavailable`) when the store cannot be reached.
   */
  async admit(agentId: string, recordingId: string, now: number | Date = Date.now()): Promise<boolean> {
    checkId('agentId', agentId);
    checkId('recordingId', recordingId);
    const nowMs = typeof now === 'number' ? now : now.getTime();
    const cap = this.#capFor(agentId);
    if (cap === undefined || cap <= 0) return false;
    const dir = this.#dir(agentId, monthKey(nowMs));

    const before = await this.#list(dir);
    if (before.some((m) => m.recordingId === recordingId)) return true;
    if (before.length >= cap) return false;

    const name = `${dir}${String(Math.max(0, Math.floor(nowMs))).padStart(15, '0')}-${recordingId}`;
    await this.#wrap('put', () => this.#client.putObject(this.#bucket, name, Buffer.alloc(0), 0, { 'Content-Type': 'application/octet-stream' }));
    try {
      for (let attempt = 0; ; attempt++) {
        const markers = await this.#list(dir);
        if (markers.length <= cap) return true;
        const rank = markers.findIndex((m) => m.name === name);
        // rank -1: our marker vanished (deleted by an operator?): treat as refused.
        if (rank < 0 || rank >= cap || attempt >= this.#retries) break;
        await sleep(this.#retryDelayMs * (1 + Math.random()));
      }
    } catch (err) {
      await this.#removeQuietly(name);
      throw err;
    }
    await this.#removeQuietly(name);
    return false;
  }

  /** Gives an admission back (a multi-agent call refused for another agent). */
  async release(agentId: string, recordingId: string, now: number | Date = Date.now()): Promise<void> {
    checkId('agentId', agentId);
    checkId('recordingId', recordingId);
    const nowMs = typeof now === 'number' ? now : now.getTime();
    const markers = await this.#list(this.#dir(agentId, monthKey(nowMs)));
    for (const m of markers) if (m.recordingId === recordingId) await this.#wrap('delete', () => this.#client.removeObject(this.#bucket, m.name));
  }

  /** Recordings admitted for the agent in `month` (`YYYY-MM`), including contenders in flight. */
  async count(agentId: string, month: string): Promise<number> {
    checkId('agentId', agentId);
    if (!/^\d{4}-\d{2}$/.test(month)) throw new OptinError('CAP_BAD_MONTH', 'month must be YYYY-MM (UTC)');
    return (await this.#list(this.#dir(agentId, month))).length;
  }

  /**
   * Admits a call's recording for every agent in it, all or nothing, and
   * records the outcome in the PolicyState (`markAdmitted` / `markCapRefused`)
   * so decideGate reflects it. Returns whether the recording may start.
   */
  async admitCall(state: PolicyState, callId: string, recordingId: string, now: number = Date.now()): Promise<boolean> {
    const agentIds = [...new Set(state.agentsOf(callId).map((a) => a.subjectId))];
    const admitted: string[] = [];
    try {
      for (const agentId of agentIds) {
        if (!(await this.admit(agentId, recordingId, now))) {
          await Promise.all(admitted.map((a) => this.release(a, recordingId, now).catch(() => undefined)));
          state.markCapRefused(callId);
          return false;
        }
        admitted.push(agentId);
      }
    } catch (err) {
      await Promise.all(admitted.map((a) => this.release(a, recordingId, now).catch(() => undefined)));
      throw err;
    }
    if (agentIds.length === 0) return false;
    state.markAdmitted(callId, recordingId, now);
    return true;
  }

  #dir(agentId: string, month: string): string {
    return `${this.#prefix}${agentId}/${month}/`;
  }

  /** Markers under `dir`, sorted by (timestamp, recordingId): names sort that way as zero-padded text. */
  async #list(dir: string): Promise<Marker[]> {
    const names = await this.#wrap('list', async () => {
      const out: string[] = [];
      for await (const item of this.#client.listObjectsV2(this.#bucket, dir, true) as AsyncIterable<{ name?: string }>) {
        if (typeof item.name === 'string') out.push(item.name);
      }
      return out;
    });
    const markers: Marker[] = [];
    for (const name of names) {
      const m = MARKER.exec(name.slice(dir.length));
      if (m !== null) markers.push({ name, ts: Number(m[1]), recordingId: m[2]! });
    }
    return markers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async #removeQuietly(name: string): Promise<void> {
    try {
      await this.#client.removeObject(this.#bucket, name);
    } catch {
      // Left behind, the marker only makes the cap stricter for this month (fails closed).
    }
  }

  async #wrap<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new OptinError('CAP_LEDGER_UNAVAILABLE', `cap ledger ${op} failed; the gate stays closed until the keys bucket is reachable`, {
        retryable: true,
        cause: err,
      });
    }
  }
}

function checkId(what: string, id: string): void {
  if (!ID_PATTERN.test(id)) throw new OptinError('INVALID_ID', `${what} must match /^[A-Za-z0-9_-]{1,64}$/`);
}
