import { describe, expect, it } from 'vitest';
import { ControlClient } from '../../../src/control/ControlClient.ts';
import {
  NonceCache,
  assertSecret,
  createNonce,
  createWorkerToken,
  serverProof,
  verifyServerProof,
  verifyWorkerToken,
} from '../../../src/control/auth.ts';
import { MAX_MESSAGE_BYTES, encodeMessage, parseServerMessage, parseWorkerMessage } from '../../../src/control/protocol.ts';

const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef';
const NOW = 1_750_000_000_000;

describe('protocol parsing', () => {
  const delta = {
    v: 1, type: 'delta', seq: 4, at: NOW,
    fact: { type: 'consent.granted', callId: 'c1', participantId: 'p1', evidence: { method: 'dtmf', at: NOW, infoVersion: '2025-05.v3' } },
  };

  it('accepts a valid delta', () => {
    expect(parseServerMessage(JSON.stringify(delta))).toMatchObject({ ok: true, message: { seq: 4 } });
  });

  it.each([
    ['too-large', 'x'.repeat(MAX_MESSAGE_BYTES + 1)],
    ['bad-json', '{"v":1,'],
    ['bad-json', '[1,2]'],
    ['bad-version', JSON.stringify({ ...delta, v: 2 })],
    ['unknown-type', JSON.stringify({ ...delta, type: 'consent.implied' })],
    ['invalid-message', JSON.stringify({ ...delta, extra: true })],
    ['invalid-message', JSON.stringify({ ...delta, fact: { ...delta.fact, callId: 'bad id with spaces' } })],
    ['invalid-message', JSON.stringify({ ...delta, fact: { ...delta.fact, evidence: { method: 'silence', at: NOW, infoVersion: 'v' } } })],
    ['invalid-message', JSON.stringify({ ...delta, fact: { type: 'call.started', callId: 'c1', participants: [{ participantId: 'a', role: 'agent', subjectId: 's' }] } })],
    ['invalid-message', JSON.stringify({ ...delta, fact: { type: 'call.started', callId: 'c1', participants: [
      { participantId: 'a', role: 'agent', subjectId: 's' }, { participantId: 'a', role: 'customer', subjectId: 't' }] } })],
    ['invalid-message', JSON.stringify({ ...delta, fact: { type: 'call.started', callId: 'c1', participants: [
      { participantId: 'a', role: 'agent', subjectId: 's' }, { participantId: 'b', role: 'customer', subjectId: 't', teamLeadId: 'x' }] } })],
  ])('rejects %s', (code, text) => {
    const r = parseServerMessage(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.code).toBe(code);
  });

  it('refers to the offending seq and never echoes values', () => {
    const r = parseServerMessage(JSON.stringify({ ...delta, fact: { ...delta.fact, callId: 'secret-name@example.com' } }));
    expect(r).toMatchObject({ ok: false, code: 'invalid-message', ref: '4' });
    if (!r.ok) expect(r.message).not.toContain('example.com');
  });

  it('rejects binary frames', () => {
    expect(parseServerMessage(Buffer.from(JSON.stringify(delta)), true)).toMatchObject({ ok: false, code: 'bad-json' });
  });

  it('recording-state: reasons iff not recording', () => {
    const base = { v: 1, type: 'recording-state', callId: 'c1', at: NOW };
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: true, reasons: [], recordingId: 'r_0123456789abcdef' })).ok).toBe(true);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: ['no-consent'] })).ok).toBe(true);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: [] })).ok).toBe(false);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: true, reasons: ['paused'] })).ok).toBe(false);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: ['because'] })).ok).toBe(false);
  });

  it('encodeMessage refuses to produce an oversized frame', () => {
    expect(() => encodeMessage({ v: 1, type: 'error', code: 'internal', message: 'x', ref: 'y' })).not.toThrow();
    const huge = { v: 1 as const, type: 'snapshot' as const, seq: 0, at: 0, part: 0, parts: 1, calls: [], agents: Array.from({ length: 2000 }, (_, i) => ({ agentId: `agent-${i}`, windows: [], monthlyCap: 1 })) };
    expect(() => encodeMessage(huge)).toThrow(RangeError);
  });
});

describe('auth', () => {
  const nonce = createNonce();

  it('round-trips a worker token', () => {
    const token = createWorkerToken(SECRET, 'worker-1', nonce, NOW);
    expect(token).toMatch(/^worker-1\.\d+\.[A-Za-z0-9_-]{43}$/);
    expect(verifyWorkerToken(SECRET, `Bearer ${token}`, nonce, NOW + 1000)).toEqual({ ok: true, workerId: 'worker-1', issuedAtMs: NOW });
  });

  it.each([
    ['missing-token', undefined, nonce, NOW],
    ['malformed-token', 'Basic abc', nonce, NOW],
    ['missing-nonce', 'TOKEN', undefined, NOW],
    ['bad-nonce', 'TOKEN', 'short', NOW],
    ['bad-signature', 'TOKEN', createNonce(), NOW], // token bound to another nonce
    ['expired-token', 'TOKEN', nonce, NOW + 5 * 60_000 + 1],
    ['future-token', 'TOKEN', nonce, NOW - 60_000],
  ])('refuses %s', (reason, auth, n, now) => {
    const header = auth === 'TOKEN' ? `Bearer ${createWorkerToken(SECRET, 'worker-1', nonce, NOW)}` : auth;
    expect(verifyWorkerToken(SECRET, header, n, now)).toEqual({ ok: false, reason });
  });

  it('refuses a token made with another secret', () => {
    const token = createWorkerToken('another-secret-0123456789abcdef-0123456789', 'worker-1', nonce, NOW);
    expect(verifyWorkerToken(SECRET, `Bearer ${token}`, nonce, NOW)).toEqual({ ok: false, reason: 'bad-signature' });
  });

  it('server proof: right secret and nonce only; the worker MAC is not a proof', () => {
    const proof = serverProof(SECRET, nonce);
    expect(verifyServerProof(SECRET, nonce, proof)).toBe(true);
    expect(verifyServerProof(SECRET, createNonce(), proof)).toBe(false);
    expect(verifyServerProof('another-secret-0123456789abcdef-0123456789', nonce, proof)).toBe(false);
    const workerMac = createWorkerToken(SECRET, 'w', nonce, NOW).split('.')[2]!;
    expect(verifyServerProof(SECRET, nonce, workerMac)).toBe(false);
  });

  it('refuses short secrets', () => {
    expect(() => assertSecret('short')).toThrow(/at least 32 bytes/);
    expect(() => new ControlClient({ url: 'ws://127.0.0.1:1', workerId: 'w', secret: 'short' })).toThrow(/at least 32 bytes/);
  });

  it('nonce cache refuses replays within the validity and forgets them after', () => {
    const cache = new NonceCache(1000, 10);
    expect(cache.remember('n1', 0)).toBe(true);
    expect(cache.remember('n1', 500)).toBe(false);
    expect(cache.remember('n1', 1001)).toBe(true);
  });
});
