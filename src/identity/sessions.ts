import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Queryable } from '../db/Database.ts';
import { isRole, type Principal } from '../access/roles.ts';

/**
 * Server-side sessions of people signed in through the identity provider (issue 14 §2), in the
 * control plane's database so every replica sees them and any of them can be revoked at once
 * (table `web_sessions`, migration 002).
 *
 * The browser holds only a random 256-bit token in an httpOnly, Secure, SameSite=Lax cookie
 * (`__Host-` prefixed: no Domain, Path=/, so no sibling host can set or read it); the database
 * holds its sha256, so a read of the table opens no session. A session ends at sign-out, when
 * revoked (an operator, or every session of a subject), after `idleMs` without a request, or at
 * `absoluteMs` after sign-in, whichever comes first.
 *
 * CSRF: each session has a random synchronizer token, sent back by the app's forms (`_csrf`)
 * and scripts (`X-CSRF-Token`) on every state-changing request and compared in constant time.
 */

export interface Session {
  principal: Principal;
  csrfToken: string;
  createdAt: number;
  expiresAt: number;
  /** sha256 of the cookie token (the row's key). */
  idSha256: string;
}

export interface LoginTransaction {
  state: string;
  codeVerifier: string;
  nonce: string;
  returnTo: string;
}

export interface SessionStoreOptions {
  db: Queryable;
  /** Default 30 minutes. */
  idleMs?: number;
  /** Default 8 hours. */
  absoluteMs?: number;
  now?: () => number;
}

/** Abandoned sign-ins are forgotten after this long. */
export const LOGIN_TRANSACTION_MS = 10 * 60_000;
/** last_seen is written at most this often per session (a page is many requests). */
const TOUCH_EVERY_MS = 30_000;

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Constant-time comparison of two tokens (CSRF). */
export function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class SessionStore {
  readonly idleMs: number;
  readonly absoluteMs: number;
  readonly #db: Queryable;
  readonly #now: () => number;

  constructor(o: SessionStoreOptions) {
    this.#db = o.db;
    this.idleMs = o.idleMs ?? 30 * 60_000;
    this.absoluteMs = o.absoluteMs ?? 8 * 3600_000;
    this.#now = o.now ?? Date.now;
  }

  /** A new session: the cookie token (shown once) and the session. */
  async create(principal: Principal): Promise<{ token: string; session: Session }> {
    const token = randomToken();
    const idSha256 = sha256Hex(token);
    const csrfToken = randomToken();
    const now = this.#now();
    const expiresAt = now + this.absoluteMs;
    await this.#db.query(
      'INSERT INTO web_sessions (id_sha256, subject, role, csrf_token, created_at_ms, last_seen_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $5, $6)',
      [idSha256, principal.sub, principal.role, csrfToken, now, expiresAt],
    );
    return { token, session: { principal, csrfToken, createdAt: now, expiresAt, idSha256 } };
  }

  /** The live session of a cookie token, or undefined (unknown, revoked, idle too long, expired). */
  async lookup(token: string | undefined): Promise<Session | undefined> {
    if (token === undefined || !/^[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const idSha256 = sha256Hex(token);
    const now = this.#now();
    const { rows } = await this.#db.query<{ subject: string; role: string; csrf_token: string; created_at_ms: number; last_seen_ms: number; expires_at_ms: number; revoked_at_ms: number | null }>(
      'SELECT subject, role, csrf_token, created_at_ms, last_seen_ms, expires_at_ms, revoked_at_ms FROM web_sessions WHERE id_sha256 = $1',
      [idSha256],
    );
    const r = rows[0];
    if (r === undefined || r.revoked_at_ms !== null || r.expires_at_ms <= now || r.last_seen_ms + this.idleMs <= now || !isRole(r.role)) return undefined;
    if (now - r.last_seen_ms >= TOUCH_EVERY_MS) {
      await this.#db.query('UPDATE web_sessions SET last_seen_ms = $2 WHERE id_sha256 = $1 AND revoked_at_ms IS NULL', [idSha256, now]);
    }
    return { principal: { sub: r.subject, role: r.role }, csrfToken: r.csrf_token, createdAt: r.created_at_ms, expiresAt: r.expires_at_ms, idSha256 };
  }

  /** Ends one session (sign-out). Idempotent. */
  async revoke(idSha256: string, reason: string): Promise<void> {
    await this.#db.query('UPDATE web_sessions SET revoked_at_ms = $2, revoked_reason = $3 WHERE id_sha256 = $1 AND revoked_at_ms IS NULL', [idSha256, this.#now(), reason]);
  }

  /** Ends every session of a subject (an operator's revocation: a lost laptop, a role change). Returns how many. */
  async revokeSubject(subject: string, reason: string): Promise<number> {
    const res = await this.#db.query('UPDATE web_sessions SET revoked_at_ms = $2, revoked_reason = $3 WHERE subject = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2', [subject, this.#now(), reason]);
    return res.rowCount;
  }

  /** Records a sign-in in flight, bound to the browser's login cookie (its sha256). */
  async saveLogin(binding: string, tx: LoginTransaction): Promise<void> {
    await this.#db.query(
      'INSERT INTO login_transactions (state, binding_sha256, code_verifier, nonce, return_to, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)',
      [tx.state, sha256Hex(binding), tx.codeVerifier, tx.nonce, tx.returnTo, this.#now()],
    );
  }

  /** Takes (deletes) the sign-in a callback completes; only the browser that started it can. */
  async takeLogin(state: string, binding: string | undefined): Promise<LoginTransaction | undefined> {
    if (binding === undefined || state.length > 200) return undefined;
    const { rows } = await this.#db.query<{ state: string; code_verifier: string; nonce: string; return_to: string; created_at_ms: number }>(
      'DELETE FROM login_transactions WHERE state = $1 AND binding_sha256 = $2 RETURNING state, code_verifier, nonce, return_to, created_at_ms',
      [state, sha256Hex(binding)],
    );
    const r = rows[0];
    if (r === undefined || r.created_at_ms + LOGIN_TRANSACTION_MS <= this.#now()) return undefined;
    return { state: r.state, codeVerifier: r.code_verifier, nonce: r.nonce, returnTo: r.return_to };
  }

  /** Deletes ended sessions and abandoned sign-ins (Maintenance, every minute). */
  async purge(): Promise<void> {
    const now = this.#now();
    await this.#db.query('DELETE FROM web_sessions WHERE expires_at_ms <= $1 OR revoked_at_ms < $2 OR last_seen_ms < $3', [now, now - 24 * 3600_000, now - this.idleMs - 24 * 3600_000]);
    await this.#db.query('DELETE FROM login_transactions WHERE created_at_ms < $1', [now - LOGIN_TRANSACTION_MS]);
  }
}
