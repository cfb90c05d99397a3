import type { Client } from 'minio';
import { OptinError } from '../errors/OptinError.ts';
import { assertId } from '../storage/layout.ts';
import { ID_PATTERN } from '../ids/ids.ts';
import { isNotFound } from '../storage/s3Errors.ts';

/**
 * Agents' requests for the deletion of their own recordings (R9: the team lead deletes at the
 * agent's request). One small JSON object per recording in the keys/manifests bucket (metadata,
 * pseudonymous ids only):
 *
 *   deletion-requests/<recordingId>.json
 *
 * A request is pending until the team lead completes the deletion; the object is then removed
 * (the audit trail keeps the facts: who asked, who deleted, the receipt), so nothing about a
 * deleted recording lingers beside the manifests.
 */

export const DELETION_REQUESTS_PREFIX = 'deletion-requests/';
const FORMAT = 'optin-deletion-request/1';

export interface DeletionRequest {
  format: typeof FORMAT;
  recordingId: string;
  /** The agent who asked (their subject id). */
  requestedBy: string;
  requestedAt: string;
  /** Team leads of the recording's agents when the request was made: who sees it. */
  teamLeadIds: string[];
  status: 'pending';
}

function objectKey(recordingId: string): string {
  assertId('recordingId', recordingId);
  return `${DELETION_REQUESTS_PREFIX}${recordingId}.json`;
}

function parse(body: Buffer): DeletionRequest | null {
  try {
    const d = JSON.parse(body.toString('utf8')) as Partial<DeletionRequest>;
    if (d.format !== FORMAT || typeof d.recordingId !== 'string' || !ID_PATTERN.test(d.recordingId)) return null;
    if (typeof d.requestedBy !== 'string' || typeof d.requestedAt !== 'string' || !Array.isArray(d.teamLeadIds)) return null;
    return { format: FORMAT, recordingId: d.recordingId, requestedBy: d.requestedBy, requestedAt: d.requestedAt, teamLeadIds: d.teamLeadIds.filter((t) => typeof t === 'string'), status: 'pending' };
  } catch {
    return null;
  }
}

export class DeletionRequests {
  readonly #client: Client;
  readonly #bucket: string;

  constructor(options: { client: Client; bucket: string }) {
    this.#client = options.client;
    this.#bucket = options.bucket;
  }

  async get(recordingId: string): Promise<DeletionRequest | null> {
    try {
      const stream = await this.#client.getObject(this.#bucket, objectKey(recordingId));
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
      return parse(Buffer.concat(chunks));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** Records a pending request; idempotent (an existing pending request is returned, `created: false`). */
  async create(input: { recordingId: string; requestedBy: string; teamLeadIds: string[]; nowMs: number }): Promise<{ request: DeletionRequest; created: boolean }> {
    assertId('requestedBy', input.requestedBy);
    const existing = await this.get(input.recordingId);
    if (existing !== null) return { request: existing, created: false };
    const request: DeletionRequest = {
      format: FORMAT,
      recordingId: input.recordingId,
      requestedBy: input.requestedBy,
      requestedAt: new Date(input.nowMs).toISOString(),
      teamLeadIds: [...new Set(input.teamLeadIds.filter((t) => ID_PATTERN.test(t)))].sort(),
      status: 'pending',
    };
    const body = Buffer.from(JSON.stringify(request));
    await this.#client.putObject(this.#bucket, objectKey(input.recordingId), body, body.length, { 'content-type': 'application/json' });
    return { request, created: true };
  }

  /** Every pending request (the caller filters by who may see them). */
  async list(): Promise<DeletionRequest[]> {
    const keys: string[] = [];
    for await (const item of this.#client.listObjectsV2(this.#bucket, DELETION_REQUESTS_PREFIX, true) as AsyncIterable<{ name?: string }>) {
      if (item.name && /^deletion-requests\/[A-Za-z0-9_-]{1,64}\.json$/.test(item.name)) keys.push(item.name);
    }
    const out: DeletionRequest[] = [];
    for (const key of keys) {
      const id = key.slice(DELETION_REQUESTS_PREFIX.length, -'.json'.length);
      const r = await this.get(id);
      if (r !== null) out.push(r);
    }
    return out.sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
  }

  /** Closes a request (after the deletion, or when its recording is gone). Idempotent. */
  async close(recordingId: string): Promise<void> {
    try {
      await this.#client.removeObject(this.#bucket, objectKey(recordingId));
    } catch (err) {
      if (!isNotFound(err)) throw new OptinError('STORAGE_UNAVAILABLE', `could not close the deletion request of ${recordingId}; retry`, { retryable: true, cause: err });
    }
  }
}
