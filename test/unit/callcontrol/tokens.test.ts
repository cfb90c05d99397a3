/**
 * Call-control tokens (docs/call-control.md): every misuse is refused with its own reason.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CallTokenVerifier, TokenRefused, signCallToken, type TokenRefusal } from '../../../src/callcontrol/callToken.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

const joinSecret = randomBytes(32).toString('base64url');
const legSecret = randomBytes(32).toString('base64url');
let now = Date.parse('2026-06-01T10:00:00Z');
const clock = () => now;

function verifier(audience: 'softphone-join' | 'sip-leg' = 'softphone-join', max = 300): CallTokenVerifier {
  return new CallTokenVerifier({ secret: audience === 'softphone-join' ? joinSecret : legSecret, audience, maxLifetimeSeconds: max, now: clock });
}

function join(claims: Partial<Parameters<typeof signCallToken>[1]> = {}, secret = joinSecret): string {
  return signCallToken(secret, { aud: 'softphone-join', callId: 'call-1', participantId: 'p-cust', nowMs: now, lifetimeSeconds: 60, ...claims });
}

function refusal(fn: () => unknown): TokenRefusal {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TokenRefused);
    expect(isOptinError(err, 'TOKEN_REFUSED')).toBe(true);
    return (err as TokenRefused).reason;
  }
  throw new Error('expected a refusal');
}

describe('call-control tokens', () => {
  it('a signature spelled another way (the same MAC bytes) is refused as forged', () => {
    // base64url's 43rd character carries 4 bits of a 32-byte MAC and 2 unused ones: flipping the
    // unused ones decodes to the same bytes. Found when the call-control test's "forged" case
    // (last character changed A <-> B) was accepted about one run in 16.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    let token = join();
    for (let i = 0; i < 64 && alphabet.indexOf(token.at(-1)!) % 4 === 3; i++) token = join(); // room to flip an unused bit
    const last = alphabet.indexOf(token.at(-1)!);
    const respelled = token.slice(0, -1) + alphabet[last + 1]!;
    expect(Buffer.from(respelled.split('.')[2]!, 'base64url')).toEqual(Buffer.from(token.split('.')[2]!, 'base64url'));
    expect(refusal(() => verifier().verify(respelled))).toBe('forged');
  });

  it('a good token opens exactly once, and carries typed claims', () => {
    const v = verifier();
    const claims = v.verify(join(), { callId: 'call-1', participantId: 'p-cust' });
    expect(claims).toMatchObject({ aud: 'softphone-join', callId: 'call-1', participantId: 'p-cust', iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + 60 });
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{22,}$/);
  });

  it('refuses a forged token: another secret, an edited claim, garbage', () => {
    const v = verifier();
    expect(refusal(() => v.verify(join({}, randomBytes(32).toString('base64url'))))).toBe('forged');
    const [ver, body, mac] = join().split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const edited = Buffer.from(JSON.stringify({ ...claims, participantId: 'p-agent' })).toString('base64url');
    expect(refusal(() => v.verify(`${ver}.${edited}.${mac}`))).toBe('forged');
    expect(refusal(() => v.verify('not-a-token'))).toBe('malformed');
    expect(refusal(() => v.verify(undefined))).toBe('malformed');
    expect(refusal(() => v.verify('x'.repeat(5000)))).toBe('malformed');
  });

  it('refuses an expired token, one from the future, and one that lives too long', () => {
    const v = verifier();
    const t = join({ lifetimeSeconds: 30 });
    now += 31_000;
    expect(refusal(() => v.verify(t))).toBe('expired');
    expect(refusal(() => v.verify(join({ iat: Math.floor(now / 1000) + 120, exp: Math.floor(now / 1000) + 160 })))).toBe('not-yet-valid');
    expect(refusal(() => v.verify(join({ lifetimeSeconds: 3600 })))).toBe('lifetime-too-long');
  });

  it('refuses a token of the other audience: a softphone link cannot open a SIP leg, nor the reverse', () => {
    // Same secret for both (a misconfiguration the config refuses): the audience still separates them.
    const shared = randomBytes(32).toString('base64url');
    const legVerifier = new CallTokenVerifier({ secret: shared, audience: 'sip-leg', maxLifetimeSeconds: 300, now: clock });
    expect(refusal(() => legVerifier.verify(join({}, shared)))).toBe('wrong-audience');
    const joinVerifier = new CallTokenVerifier({ secret: shared, audience: 'softphone-join', maxLifetimeSeconds: 300, now: clock });
    expect(refusal(() => joinVerifier.verify(signCallToken(shared, { aud: 'sip-leg', callId: 'call-1', participantId: 'p-cust', nowMs: now })))).toBe('wrong-audience');
    // Different secrets (the configuration): a join token is simply not valid for legs.
    expect(refusal(() => verifier('sip-leg').verify(join()))).toBe('forged');
  });

  it('refuses a token for another call or participant', () => {
    const v = verifier('sip-leg');
    const leg = (callId: string, participantId: string) => signCallToken(legSecret, { aud: 'sip-leg', callId, participantId, nowMs: now });
    expect(refusal(() => v.verify(leg('call-1', 'p-cust'), { callId: 'call-2', participantId: 'p-cust' }))).toBe('wrong-call');
    expect(refusal(() => v.verify(leg('call-1', 'p-cust'), { callId: 'call-1', participantId: 'p-agent' }))).toBe('wrong-participant');
  });

  it('refuses a reused token (single use, jti), while a refused attempt does not burn it', () => {
    const v = verifier('sip-leg');
    const t = signCallToken(legSecret, { aud: 'sip-leg', callId: 'call-1', participantId: 'p-cust', nowMs: now });
    expect(refusal(() => v.verify(t, { callId: 'call-9' }))).toBe('wrong-call');
    expect(v.verify(t, { callId: 'call-1', participantId: 'p-cust' }).callId).toBe('call-1');
    expect(refusal(() => v.verify(t, { callId: 'call-1', participantId: 'p-cust' }))).toBe('reused');
  });

  it('is bounded: a full replay cache refuses new tokens (fail closed) until old ones expire', () => {
    const v = new CallTokenVerifier({ secret: joinSecret, audience: 'softphone-join', maxLifetimeSeconds: 300, maxRememberedTokens: 3, now: clock });
    for (let i = 0; i < 3; i++) v.verify(join({ lifetimeSeconds: 20 }));
    expect(refusal(() => v.verify(join()))).toBe('replay-cache-full');
    now += 21_000;
    expect(v.verify(join()).callId).toBe('call-1');
    expect(v.remembered).toBe(1);
  });

  it('never issues or accepts personal data as ids', () => {
    expect(() => join({ participantId: '46701234567' })).toThrow(/phone number/);
    expect(() => join({ callId: '+46 70 123 45 67' })).toThrow();
    const body = Buffer.from(JSON.stringify({ aud: 'softphone-join', callId: 'call-1', participantId: '0701234567', iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + 60, jti: randomBytes(18).toString('base64url') })).toString('base64url');
    // A token signed with the right secret but a phone number inside: the issuer's bug, refused here.
    const key = createHmac('sha256', joinSecret).update('optin-call-token/v1/softphone-join').digest();
    const mac = createHmac('sha256', key).update(`v1.${body}`).digest('base64url');
    expect(refusal(() => verifier().verify(`v1.${body}.${mac}`))).toBe('invalid-claims');
  });
});
