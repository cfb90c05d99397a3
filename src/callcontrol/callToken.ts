import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { idProblem } from '../ids/ids.ts';

/**
 * Call-control tokens (docs/call-control.md): a ticket for ONE use, by ONE kind of client, into
 * ONE call as ONE participant, for a short time. Issued by the voice platform (which knows who is
 * who), checked by the recorder. Two audiences, each with its own secret:
 *   softphone-join  a browser joining a call over /signal (sent in the first WebSocket message)
 *   sip-leg         a SIP/PSTN gateway opening a plain RTP leg (Authorization: Bearer)
 * so a customer's softphone link can never open a plain leg, and a leaked gateway secret never
 * lets a browser in.
 *
 * Format: `v1.<claims, base64url JSON>.<HMAC-SHA256, base64url>`; the MAC key is derived from the
 * audience's secret and the audience name (domain separation, on top of the two secrets).
 * Claims: aud, callId, participantId (pseudonymous ids), iat and exp (seconds since the epoch),
 * jti (random, >= 128 bits). The verifier refuses, each with its own reason: a forged or
 * malformed token, another audience, an expired one, one issued in the future, one whose lifetime
 * exceeds the configured maximum, another call or participant, and a second use of a jti.
 */

export type TokenAudience = 'softphone-join' | 'sip-leg';
export const TOKEN_AUDIENCES: readonly TokenAudience[] = ['softphone-join', 'sip-leg'];

export interface CallTokenClaims {
  aud: TokenAudience;
  callId: string;
  participantId: string;
  /** Issued at, seconds since the epoch. */
  iat: number;
  /** Expires at, seconds since the epoch. */
  exp: number;
  /** Unique id of this token (single use). */
  jti: string;
}

export type TokenRefusal =
  | 'malformed'
  | 'forged'
  | 'wrong-audience'
  | 'expired'
  | 'not-yet-valid'
  | 'lifetime-too-long'
  | 'invalid-claims'
  | 'wrong-call'
  | 'wrong-participant'
  | 'reused'
  | 'replay-cache-full';

/** A refused token: `reason` says which rule, for tests and metrics; the message says it for a person. */
export class TokenRefused extends OptinError {
  readonly reason: TokenRefusal;

  constructor(reason: TokenRefusal, message: string) {
    super('TOKEN_REFUSED', message);
    this.name = 'TokenRefused';
    this.reason = reason;
  }
}

const MAX_TOKEN_CHARS = 2048;
const JTI_PATTERN = /^[A-Za-z0-9_-]{22,64}$/;

function macKey(secret: string, aud: TokenAudience): Buffer {
  return createHmac('sha256', secret).update(`optin-call-token/v1/${aud}`).digest();
}

function mac(secret: string, aud: TokenAudience, body: string): Buffer {
  return createHmac('sha256', macKey(secret, aud)).update(`v1.${body}`).digest();
}

/** Issues a token (the voice platform's side; tests and the demo use it too). */
export function signCallToken(
  secret: string,
  claims: { aud: TokenAudience; callId: string; participantId: string; lifetimeSeconds?: number; nowMs?: number; jti?: string; iat?: number; exp?: number },
): string {
  for (const [field, value] of [['callId', claims.callId], ['participantId', claims.participantId]] as const) {
    const problem = idProblem(value);
    if (problem !== undefined) throw new OptinError('INVALID_ID', `${field} ${problem}`);
  }
  const iat = claims.iat ?? Math.floor((claims.nowMs ?? Date.now()) / 1000);
  const full: CallTokenClaims = {
    aud: claims.aud,
    callId: claims.callId,
    participantId: claims.participantId,
    iat,
    exp: claims.exp ?? iat + (claims.lifetimeSeconds ?? 120),
    jti: claims.jti ?? randomBytes(18).toString('base64url'),
  };
  const body = Buffer.from(JSON.stringify(full)).toString('base64url');
  return `v1.${body}.${mac(secret, claims.aud, body).toString('base64url')}`;
}

export interface CallTokenVerifierOptions {
  secret: string;
  audience: TokenAudience;
  /** Longest exp - iat accepted, seconds. */
  maxLifetimeSeconds: number;
  /** Clock difference tolerated between issuer and recorder, seconds. */
  clockSkewSeconds?: number;
  /** Live (unexpired) jtis remembered; beyond it new tokens are refused (fail closed). */
  maxRememberedTokens?: number;
  now?: () => number;
}

/**
 * Checks tokens of one audience and remembers each accepted jti until its token expires, so a
 * token opens at most one join or leg on this recorder. (Per process: a deployment whose gateways
 * can reach several recorders for one call should route a call to one recorder.)
 */
export class CallTokenVerifier {
  readonly audience: TokenAudience;
  readonly #secret: string;
  readonly #maxLifetime: number;
  readonly #skew: number;
  readonly #max: number;
  readonly #now: () => number;
  /** jti -> expiry (ms). */
  readonly #used = new Map<string, number>();
  #sinceSweep = 0;

  constructor(options: CallTokenVerifierOptions) {
    if (typeof options.secret !== 'string' || options.secret.length < 32) throw new OptinError('CONFIG_INVALID', `the ${options.audience} secret must be at least 32 characters`);
    this.audience = options.audience;
    this.#secret = options.secret;
    this.#maxLifetime = options.maxLifetimeSeconds;
    this.#skew = options.clockSkewSeconds ?? 30;
    this.#max = options.maxRememberedTokens ?? 100_000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Verifies `token` for `expect` (the call and participant the request is about, when the
   * request names them) and consumes it. Throws TokenRefused.
   */
  verify(token: unknown, expect: { callId?: string; participantId?: string } = {}): CallTokenClaims {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_CHARS) throw new TokenRefused('malformed', 'missing or oversized call-control token');
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== 'v1' || !parts[1] || !parts[2]) throw new TokenRefused('malformed', 'malformed call-control token (expected v1.<claims>.<mac>)');
    const [, body, sig] = parts as [string, string, string];
    // Compared as text against the one canonical encoding: decoding first would accept other
    // spellings of the same MAC (base64url's last character carries 2 unused bits).
    if (!sameText(sig, mac(this.#secret, this.audience, body).toString('base64url'))) {
      // Tell a token of the other audience apart from a forgery only when our secret could have
      // signed it: the message must not help an attacker probe the other secret.
      const other = TOKEN_AUDIENCES.find((a) => a !== this.audience)!;
      if (sameText(sig, mac(this.#secret, other, body).toString('base64url'))) throw new TokenRefused('wrong-audience', `this token is for ${other}, not ${this.audience}`);
      throw new TokenRefused('forged', 'call-control token signature invalid');
    }
    let claims: Partial<CallTokenClaims>;
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Partial<CallTokenClaims>;
    } catch {
      throw new TokenRefused('malformed', 'malformed call-control token claims');
    }
    if (claims.aud !== this.audience) throw new TokenRefused('wrong-audience', `this token is for ${String(claims.aud)}, not ${this.audience}`);
    if (!Number.isSafeInteger(claims.iat) || !Number.isSafeInteger(claims.exp) || typeof claims.jti !== 'string' || !JTI_PATTERN.test(claims.jti)) {
      throw new TokenRefused('invalid-claims', 'call-control token claims invalid (iat, exp and jti are required)');
    }
    const callProblem = idProblem(claims.callId);
    const participantProblem = idProblem(claims.participantId);
    if (callProblem !== undefined || participantProblem !== undefined) {
      throw new TokenRefused('invalid-claims', `call-control token ids invalid: ${callProblem !== undefined ? `callId ${callProblem}` : `participantId ${participantProblem}`}`);
    }
    const nowS = this.#now() / 1000;
    const { iat, exp } = claims as { iat: number; exp: number };
    if (exp <= nowS) throw new TokenRefused('expired', 'call-control token expired: ask the voice platform for a new one');
    if (iat > nowS + this.#skew) throw new TokenRefused('not-yet-valid', 'call-control token issued in the future (check the clocks)');
    if (exp <= iat || exp - iat > this.#maxLifetime) throw new TokenRefused('lifetime-too-long', `call-control token lifetime exceeds ${this.#maxLifetime} s`);
    if (expect.callId !== undefined && claims.callId !== expect.callId) throw new TokenRefused('wrong-call', 'call-control token is for another call');
    if (expect.participantId !== undefined && claims.participantId !== expect.participantId) throw new TokenRefused('wrong-participant', 'call-control token is for another participant');
    this.#consume(claims.jti, exp * 1000);
    return claims as CallTokenClaims;
  }

  #consume(jti: string, expMs: number): void {
    if (this.#used.has(jti)) throw new TokenRefused('reused', 'call-control token already used: each token opens one join or leg');
    if (this.#used.size >= this.#max) {
      const now = this.#now();
      for (const [k, until] of this.#used) if (until <= now) this.#used.delete(k);
      if (this.#used.size >= this.#max) throw new TokenRefused('replay-cache-full', 'too many live call-control tokens: retry shortly (tokens should be short-lived)');
    }
    this.#used.set(jti, expMs);
    // Forget expired tokens now and then, so the map holds about the live ones only.
    if (++this.#sinceSweep >= 1024) {
      this.#sinceSweep = 0;
      const now = this.#now();
      for (const [k, until] of this.#used) if (until <= now) this.#used.delete(k);
    }
  }

  /** Tokens remembered (for tests and metrics). */
  get remembered(): number {
    return this.#used.size;
  }
}

/** Constant-time equality of two strings. */
function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
