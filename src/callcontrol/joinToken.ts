import { createHmac, timingSafeEqual } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { ID_PATTERN } from '../ids/ids.ts';


export interface JoinClaims {
  callId: string;
  participantId: string;
  /** Seconds since epoch. */
  exp: number;
}

/**
 * A softphone's ticket into one call as one participant, issued by the voice platform (which
 * knows who is who) and checked by the signalling server: HMAC-SHA256 over the claims with the
 * call-control secret. It carries pseudonymous ids only.
 */
export function signJoinToken(secret: string, claims: JoinClaims): string {
  if (!ID_PATTERN.test(claims.callId) || !ID_PATTERN.test(claims.participantId)) throw new OptinError('INVALID_ID', 'callId and participantId must be pseudonymous ids');
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

export function verifyJoinToken(secret: string, token: unknown, nowMs = Date.now()): JoinClaims {
  if (typeof token !== 'string' || token.length > 1024) throw new OptinError('JOIN_DENIED', 'missing or oversized join token');
  const [body, mac] = token.split('.');
  if (!body || !mac) throw new OptinError('JOIN_DENIED', 'malformed join token');
  const want = createHmac('sha256', secret).update(body).digest();
  const got = Buffer.from(mac, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new OptinError('JOIN_DENIED', 'join token signature invalid');
  let claims: JoinClaims;
  try {
    claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as JoinClaims;
  } catch {
    throw new OptinError('JOIN_DENIED', 'malformed join token');
  }
  if (!ID_PATTERN.test(String(claims.callId)) || !ID_PATTERN.test(String(claims.participantId)) || typeof claims.exp !== 'number') {
    throw new OptinError('JOIN_DENIED', 'join token claims invalid');
  }
  if (claims.exp * 1000 < nowMs) throw new OptinError('JOIN_DENIED', 'join token expired');
  return claims;
}
