import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * Mutual authentication of the control stream with one shared secret.
 *
 * Worker -> server (HTTP upgrade headers):
 *   x-optin-nonce: <fresh random nonce, base64url, 16..96 bytes>
 *   Authorization: Bearer <workerId>.<issuedAtMs>.<base64url(HMAC-SHA256(secret, "worker:" + workerId + "." + issuedAtMs + "." + nonce))>
 * Server -> worker (first frame, `hello.proof`):
 *   base64url(HMAC-SHA256(secret, "server:" + nonce))
 *
 * The "worker:" / "server:" prefixes separate the two directions, so one side's
 * MAC can never be replayed as the other's. Binding the nonce into the token
 * means a captured token is useless with another nonce, and the server refuses
 * a nonce it has already seen within the token's validity, so it is useless
 * with the same one too. The worker learns that the server knows the secret
 * because only such a server can MAC the nonce the worker just drew.
 *
 * Secrets and tokens are never logged or put in error messages.
 */

export const TOKEN_MAX_AGE_MS = 5 * 60_000;
/** Tolerated clock lead of a worker over the server. */
export const TOKEN_MAX_SKEW_MS = 30_000;
export const MIN_SECRET_BYTES = 32;
export const NONCE_HEADER = 'x-optin-nonce';

const NONCE_PATTERN = /^[A-Za-z0-9_-]{22,128}$/;
const MAC_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export type Secret = string | Buffer;

/** Refuses secrets too short to resist guessing; call it when configuration is loaded. */
export function assertSecret(secret: Secret): void {
  const bytes = typeof secret === 'string' ? Buffer.byteLength(secret, 'utf8') : secret.length;
  if (bytes < MIN_SECRET_BYTES) {
    throw new OptinError(
      'CONFIG_INVALID',
      `the control-stream secret must be at least ${MIN_SECRET_BYTES} bytes; generate one with \`openssl rand -base64 48\``,
    );
  }
}

function mac(secret: Secret, input: string): string {
  return createHmac('sha256', secret).update(input, 'utf8').digest('base64url');
}

/** Constant-time comparison of two base64url MACs. */
function macEquals(a: string, b: string): boolean {
  const ba = Buffer.from(a, 'utf8');
  const bb = Buffer.from(b, 'utf8');
  return ba.length === bb.length && timingSafeEqual(ba, bb);
}

export function createNonce(): string {
  return randomBytes(24).toString('base64url');
}

export function createWorkerToken(secret: Secret, workerId: string, nonce: string, nowMs: number = Date.now()): string {
  if (!ID_PATTERN.test(workerId)) throw new OptinError('INVALID_ID', 'workerId must match /^[A-Za-z0-9_-]{1,64}$/');
  if (!NONCE_PATTERN.test(nonce)) throw new OptinError('CONTROL_BAD_NONCE', 'nonce must be 22..128 base64url characters');
  const issuedAt = Math.floor(nowMs);
  return `${workerId}.${issuedAt}.${mac(secret, `worker:${workerId}.${issuedAt}.${nonce}`)}`;
}

export type AuthFailureReason =
  | 'missing-token'
  | 'malformed-token'
  | 'missing-nonce'
  | 'bad-nonce'
  | 'bad-signature'
  | 'expired-token'
  | 'future-token'
  | 'nonce-reused';

export type TokenCheck = { ok: true; workerId: string; issuedAtMs: number } | { ok: false; reason: AuthFailureReason };

/** Checks an `Authorization` header value and nonce. Does not consult the replay cache (see NonceCache). */
export function verifyWorkerToken(
  secret: Secret,
  authorization: string | undefined,
  nonce: string | undefined,
  nowMs: number = Date.now(),
  maxAgeMs: number = TOKEN_MAX_AGE_MS,
): TokenCheck {
  if (authorization === undefined || authorization === '') return { ok: false, reason: 'missing-token' };
  const m = /^Bearer ([A-Za-z0-9_-]{1,64})\.(\d{1,16})\.([A-Za-z0-9_-]+)$/.exec(authorization);
  if (m === null) return { ok: false, reason: 'malformed-token' };
  const [, workerId = '', issued = '', sig = ''] = m;
  if (!MAC_PATTERN.test(sig)) return { ok: false, reason: 'malformed-token' };
  if (nonce === undefined || nonce === '') return { ok: false, reason: 'missing-nonce' };
  if (!NONCE_PATTERN.test(nonce)) return { ok: false, reason: 'bad-nonce' };
  // The signature is checked before the time so that a forger learns nothing about our clock.
  if (!macEquals(sig, mac(secret, `worker:${workerId}.${issued}.${nonce}`))) return { ok: false, reason: 'bad-signature' };
  const issuedAtMs = Number(issued);
  if (issuedAtMs > nowMs + TOKEN_MAX_SKEW_MS) return { ok: false, reason: 'future-token' };
  if (nowMs - issuedAtMs > maxAgeMs) return { ok: false, reason: 'expired-token' };
  return { ok: true, workerId, issuedAtMs };
}

export function serverProof(secret: Secret, nonce: string): string {
  return mac(secret, `server:${nonce}`);
}

export function verifyServerProof(secret: Secret, nonce: string, proof: string): boolean {
  return MAC_PATTERN.test(proof) && macEquals(proof, serverProof(secret, nonce));
}

/** Human-readable text for the 401 body: says what to fix, reveals nothing secret. */
export const AUTH_FAILURE_TEXT: Record<AuthFailureReason, string> = {
  'missing-token': 'missing Authorization: Bearer <workerId>.<issuedAtMs>.<hmac> header',
  'malformed-token': 'Authorization token is not <workerId>.<issuedAtMs>.<hmac>',
  'missing-nonce': `missing ${NONCE_HEADER} header (a fresh random nonce per connection)`,
  'bad-nonce': `${NONCE_HEADER} must be 22..128 base64url characters`,
  'bad-signature': 'token signature does not verify: worker and server must share the same secret',
  'expired-token': `token is older than the allowed validity; check the worker clock (NTP)`,
  'future-token': 'token is issued in the future; check the worker clock (NTP)',
  'nonce-reused': 'nonce already used: draw a fresh nonce and token for every connection',
};

/**
 * Remembers nonces of accepted tokens for the token validity, so a replayed
 * upgrade request is refused. Bounded: expired nonces are pruned on every
 * call, and when the cache is still full of live nonces (a flood) new
 * connections are refused rather than old nonces forgotten, which would
 * reopen the replay window.
 */
export class NonceCache {
  readonly #seen = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #ttlMs: number;

  constructor(ttlMs: number = TOKEN_MAX_AGE_MS + TOKEN_MAX_SKEW_MS, maxEntries = 100_000) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  /** Returns false if the nonce was seen (replay) or the cache is full of live nonces. */
  remember(nonce: string, nowMs: number = Date.now()): boolean {
    this.#prune(nowMs);
    if (this.#seen.has(nonce)) return false;
    if (this.#seen.size >= this.#maxEntries) return false;
    this.#seen.set(nonce, nowMs + this.#ttlMs);
    return true;
  }

  #prune(nowMs: number): void {
    // Map iteration is insertion order and expiries grow with it: stop at the first live entry.
    for (const [nonce, expiry] of this.#seen) {
      if (expiry > nowMs) break;
      this.#seen.delete(nonce);
    }
  }
}
