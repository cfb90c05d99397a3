import type { IncomingMessage } from 'node:http';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { OptinError } from '../errors/OptinError.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * Authentication of the HTTP API (docs/architecture.md §6: every request is authenticated).
 *
 * Bearer JWTs, HS256 with a shared secret from configuration (`http.jwtSecret`, >= 32 chars):
 * the identity provider of the contact centre signs them; `issueToken` exists for tests and the
 * demo. Claims: `sub` (the caller's pseudonymous subject id), `role` (one of ROLES), `exp`
 * (required: a token that never expires is refused), `iss` and `aud` (checked, so a token minted
 * for another service with the same secret is not accepted here).
 *
 * Only the algorithm we configured is accepted (`algorithms: ['HS256']`): a token claiming
 * `alg: none` or an asymmetric algorithm is refused by jose before any signature logic runs.
 */

export const ROLES = ['agent', 'team-lead', 'dpo', 'extract-operator'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  /** Pseudonymous subject id of the caller (`sub`). */
  sub: string;
  role: Role;
}

export const DEFAULT_ISSUER = 'optin';
export const DEFAULT_AUDIENCE = 'optin-api';
/** Accepted clock skew between the token issuer and us. */
const CLOCK_TOLERANCE_S = 5;
/** Longest lifetime issueToken hands out: tokens are short-lived bearer credentials. */
export const MAX_TTL_SECONDS = 12 * 3600;
/** A bearer token longer than this is not a token we issue (and not worth parsing). */
const MAX_TOKEN_CHARS = 4096;

export interface AuthOptions {
  secret: string;
  issuer?: string;
  audience?: string;
  /** For tests: the verifier's clock (ms since epoch). */
  now?: () => number;
}

/** Why authentication failed: machine-readable, shown to the caller and written to the audit trail. */
export type AuthFailure = 'missing-token' | 'malformed-token' | 'expired-token' | 'invalid-signature' | 'invalid-claims';

export class AuthError extends OptinError {
  readonly reason: AuthFailure;
  constructor(reason: AuthFailure, message: string) {
    super('UNAUTHENTICATED', message);
    this.reason = reason;
  }
}

function keyOf(secret: string): Uint8Array {
  if (typeof secret !== 'string' || secret.length < 32) {
    throw new OptinError('CONFIG_INVALID', 'http.jwtSecret (OPTIN_JWT_SECRET) must be at least 32 characters (e.g. `openssl rand -base64 32`)');
  }
  return new TextEncoder().encode(secret);
}

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Signs a token for tests and the demo (production tokens come from the identity provider). */
export async function issueToken(
  secret: string,
  claims: { sub: string; role: Role; ttlSeconds?: number },
  options: { issuer?: string; audience?: string; nowMs?: number } = {},
): Promise<string> {
  if (!ID_PATTERN.test(claims.sub)) throw new OptinError('INVALID_ID', 'sub must be a pseudonymous id matching [A-Za-z0-9_-]{1,64}');
  if (!isRole(claims.role)) throw new OptinError('INVALID_INPUT', `role must be one of ${ROLES.join(', ')}`);
  const ttl = claims.ttlSeconds ?? 900;
  if (!Number.isInteger(ttl) || ttl > MAX_TTL_SECONDS) throw new OptinError('INVALID_INPUT', `ttlSeconds must be an integer of at most ${MAX_TTL_SECONDS}`);
  const iat = Math.floor((options.nowMs ?? Date.now()) / 1000);
  return new SignJWT({ role: claims.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuer(options.issuer ?? DEFAULT_ISSUER)
    .setAudience(options.audience ?? DEFAULT_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttl)
    .sign(keyOf(secret));
}

/** Verifies a compact JWT and returns the caller; throws AuthError saying why not. */
export async function verifyToken(token: string, options: AuthOptions): Promise<Principal> {
  const key = keyOf(options.secret);
  if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) {
    throw new AuthError('malformed-token', 'the bearer token is not a compact JWT');
  }
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['HS256'],
      issuer: options.issuer ?? DEFAULT_ISSUER,
      audience: options.audience ?? DEFAULT_AUDIENCE,
      requiredClaims: ['exp', 'sub'],
      clockTolerance: CLOCK_TOLERANCE_S,
      ...(options.now ? { currentDate: new Date(options.now()) } : {}),
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new AuthError('expired-token', 'the bearer token has expired: get a new one');
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw new AuthError('invalid-signature', 'the bearer token signature does not verify');
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
      throw new AuthError('invalid-claims', `the bearer token's "${err.claim}" claim is not acceptable (${err.reason})`);
    }
    if (err instanceof joseErrors.JOSEAlgNotAllowed) throw new AuthError('invalid-signature', 'the bearer token uses an algorithm this API does not accept (HS256 only)');
    throw new AuthError('malformed-token', 'the bearer token could not be parsed');
  }
  const { sub, role } = payload;
  if (typeof sub !== 'string' || !ID_PATTERN.test(sub)) throw new AuthError('invalid-claims', 'the "sub" claim must be a pseudonymous id ([A-Za-z0-9_-]{1,64})');
  if (!isRole(role)) throw new AuthError('invalid-claims', `the "role" claim must be one of ${ROLES.join(', ')}`);
  return { sub, role };
}

/** The bearer token of a request, or undefined (no header, or another scheme). */
export function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/** Authenticates a request: the caller, or AuthError (missing, malformed, expired, forged). */
export async function authenticate(req: IncomingMessage, options: AuthOptions): Promise<Principal> {
  const token = bearerToken(req);
  if (token === undefined) throw new AuthError('missing-token', 'send a bearer token: Authorization: Bearer <JWT>');
  return verifyToken(token, options);
}
