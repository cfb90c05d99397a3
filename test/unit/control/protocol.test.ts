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
import { MAX_MESSAGE_BYTES, encodeV2, parseServerMessageV2 as parseServerMessage, parseWorkerMessageV2 as parseWorkerMessage } from '../../../src/control/protocolV2.ts';

const SECRET = 'test-secret-0123456789abcdef-0123456789abcdef';
const NOW = 1_750_000_000_000;

/** The policy stream v2's JSON (what is left of a frame once its MAC checked: unit/controlplane/frameAuth.test.ts). */
describe('protocol parsing', () => {
  const delta = {
    v: 2, type: 'delta', seq: 4, at: NOW,
    fact: { type: 'consent.granted', callId: 'c1', participantId: 'p1', evidence: { method: 'dtmf', at: NOW, infoVersion: '2025-05.v3' } },
  };

  it('accepts a valid delta', () => {
    expect(parseServerMessage(JSON.stringify(delta))).toMatchObject({ ok: true, message: { seq: 4 } });
  });

  it.each([
    ['too-large', 'x'.repeat(MAX_MESSAGE_BYTES + 1)],
    ['bad-json', '{"v":2,'],
    ['bad-json', '[1,2]'],
    ['bad-version', JSON.stringify({ ...delta, v: 1 })],
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

  it('ledger facts: an erasure and a deletion parse; a deletion reason outside the list does not', () => {
    const erasure = { ...delta, fact: { type: 'erasure.requested', erasureId: 'e_1', callId: 'c1', participantId: 'p1', recordingIds: ['r_1'] } };
    expect(parseServerMessage(JSON.stringify(erasure)).ok).toBe(true);
    const deletion = { ...delta, fact: { type: 'recording.deleted', deletionId: 'd_1', recordingId: 'r_1', reason: 'team-lead' } };
    expect(parseServerMessage(JSON.stringify(deletion)).ok).toBe(true);
    expect(parseServerMessage(JSON.stringify({ ...deletion, fact: { ...deletion.fact, reason: 'whim' } }))).toMatchObject({ ok: false, code: 'invalid-message' });
  });

  it('recording-state: reasons iff not recording', () => {
    const base = { v: 2, type: 'recording-state', callId: 'c1', at: NOW };
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: true, reasons: [], recordingId: 'r_0123456789abcdef' })).ok).toBe(true);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: ['no-consent'] })).ok).toBe(true);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: [] })).ok).toBe(false);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: true, reasons: ['paused'] })).ok).toBe(false);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: ['because'] })).ok).toBe(false);
    expect(parseWorkerMessage(JSON.stringify({ ...base, recording: false, reasons: ['deleted'] })).ok).toBe(true);
  });

  it('encodeV2 refuses to produce an oversized frame', () => {
    expect(() => encodeV2({ v: 2, type: 'error', code: 'internal', message: 'x', ref: 'y' })).not.toThrow();
    const huge = {
      v: 2 as const, type: 'snapshot' as const, seq: 0, at: 0, part: 0, parts: 1, calls: [], erasures: [], deletions: [], tombstones: [],
      agents: Array.from({ length: 2000 }, (_, i) => ({ agentId: `agent-${i}`, windows: [], monthlyCap: 1 })),
    };
    expect(() => encodeV2(huge)).toThrow(RangeError);
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

  it('refuses plain ws:// off loopback (the stream needs TLS there), and anything not ws(s)', () => {
    for (const url of ['ws://127.0.0.1:8780/v1/stream', 'ws://localhost:1/', 'ws://[::1]:8780/v1/stream', 'wss://control.example:8780/v1/stream']) {
      expect(() => new ControlClient({ url, workerId: 'w', secret: SECRET }), url).not.toThrow();
    }
    for (const url of ['ws://10.0.0.5:8780/v1/stream', 'ws://control.example/v1/stream', 'http://127.0.0.1:8780/', 'not a url']) {
      let code = '';
      try {
        new ControlClient({ url, workerId: 'w', secret: SECRET });
      } catch (err) {
        code = (err as { code: string }).code;
      }
      expect(code, url).toBe('CONTROL_BAD_URL');
    }
  });

  it('nonce cache refuses replays within the validity and forgets them after', () => {
    const cache = new NonceCache(1000, 10);
    expect(cache.remember('n1', 0)).toBe(true);
    expect(cache.remember('n1', 500)).toBe(false);
    expect(cache.remember('n1', 1001)).toBe(true);
  });
});
