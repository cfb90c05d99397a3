import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { OptinError } from '../errors/OptinError.ts';
import type { Principal } from '../access/roles.ts';
import { principalFromClaims, type ClaimMapping } from './claims.ts';

/**
 * Bearer tokens of services (issue 14 §2: the extract service calls the API with OAuth2 client
 * credentials): JWT access tokens (RFC 9068) issued by the contact centre's identity provider,
 * verified against its published keys (the JWKS, fetched and cached by jose; a new key id
 * triggers a refetch, so the provider can rotate). Only asymmetric algorithms are accepted: no
 * shared secret exists anywhere in optin that could mint a token, and `alg: none` or HS256 are
 * refused before any signature logic runs.
 *
 * Checked: the signature, `typ: at+jwt` (RFC 9068 §4: an ID token is not an access token),
 * `iss`, `aud` (this API), `exp`, and `iat` no older than the maximum token age, whatever `exp`
 * says (a stolen long-lived token is bounded); then the subject and role claims as for people.
 */

export const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
const CLOCK_TOLERANCE_S = 5;
const MAX_TOKEN_CHARS = 8192;

export type AuthFailure = 'missing-token' | 'malformed-token' | 'expired-token' | 'too-old' | 'invalid-signature' | 'invalid-claims';

export class AuthError extends OptinError {
  readonly reason: AuthFailure;
  constructor(reason: AuthFailure, message: string) {
    super('UNAUTHENTICATED', message);
    this.reason = reason;
  }
}

export interface ServiceTokenOptions {
  issuer: string;
  audience: string;
  /** The provider's JWKS (its URL from discovery), or a key getter (tests). */
  jwks: URL | JWTVerifyGetKey;
  maxTokenAgeSeconds: number;
  claims: ClaimMapping;
  now?: () => number;
}

export class ServiceTokenVerifier {
  readonly #o: ServiceTokenOptions;
  readonly #keys: JWTVerifyGetKey;

  constructor(options: ServiceTokenOptions) {
    this.#o = options;
    this.#keys = options.jwks instanceof URL ? createRemoteJWKSet(options.jwks, { cooldownDuration: 30_000, timeoutDuration: 5_000 }) : options.jwks;
  }

  async verify(token: string): Promise<Principal> {
    if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) {
      throw new AuthError('malformed-token', 'the bearer token is not a compact JWT');
    }
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.#keys, {
        algorithms: [...ASYMMETRIC_ALGS],
        issuer: this.#o.issuer,
        audience: this.#o.audience,
        typ: 'at+jwt',
        requiredClaims: ['exp', 'iat', 'sub'],
        maxTokenAge: this.#o.maxTokenAgeSeconds,
        clockTolerance: CLOCK_TOLERANCE_S,
        ...(this.#o.now ? { currentDate: new Date(this.#o.now()) } : {}),
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        throw err.claim === 'iat'
          ? new AuthError('too-old', `the bearer token was issued more than ${this.#o.maxTokenAgeSeconds} s ago: get a new one`)
          : new AuthError('expired-token', 'the bearer token has expired: get a new one');
      }
      if (err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JWKSNoMatchingKey) throw new AuthError('invalid-signature', 'the bearer token signature does not verify against the identity provider\u2019s keys');
      if (err instanceof joseErrors.JOSEAlgNotAllowed) throw new AuthError('invalid-signature', 'the bearer token uses an algorithm this API does not accept (asymmetric signatures only)');
      if (err instanceof joseErrors.JWTClaimValidationFailed) throw new AuthError('invalid-claims', `the bearer token's "${err.claim}" claim is not acceptable (${err.reason})`);
      if (err instanceof joseErrors.JWKSTimeout || (err instanceof Error && /fetch|ECONNREFUSED|network/i.test(err.message))) {
        throw new OptinError('IDP_UNAVAILABLE', 'the identity provider\u2019s keys could not be fetched; retry shortly', { retryable: true });
      }
      throw new AuthError('malformed-token', 'the bearer token could not be parsed');
    }
    const r = principalFromClaims(payload, this.#o.claims);
    if (!r.ok) throw new AuthError('invalid-claims', r.message);
    return r.principal;
  }
}

/** The bearer token of an Authorization header, or undefined (no header, or another scheme). */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
