import { describe, expect, it } from 'vitest';
import { FrameOpener, FrameSealer, deriveSessionKey } from '../../../src/control/frameAuth.ts';
import { encodeV2, parseServerMessageV2, parseWorkerMessageV2 } from '../../../src/control/protocolV2.ts';

const secret = 's'.repeat(48);
const key = deriveSessionKey(secret, 'w'.repeat(32), 'n'.repeat(32));

describe('per-frame MAC (policy stream v2)', () => {
  it('opens frames sealed in order by the other side', () => {
    const sealer = new FrameSealer(key, 's2w');
    const opener = new FrameOpener(key, 's2w');
    for (const json of ['{"a":1}', '{"b":2}', '{"c":3}']) expect(opener.open(sealer.seal(json))).toEqual({ ok: true, json });
  });

  it('refuses a modified, reordered, replayed or dropped frame, and everything after it', () => {
    const frames = (() => {
      const s = new FrameSealer(key, 's2w');
      return ['{"a":1}', '{"b":2}', '{"c":3}'].map((j) => s.seal(j));
    })();
    const modified = new FrameOpener(key, 's2w');
    expect(modified.open(frames[0]!.replace('"a":1', '"a":2')).ok).toBe(false);
    expect(modified.open(frames[1]!).ok).toBe(false); // broken for good
    const reordered = new FrameOpener(key, 's2w');
    expect(reordered.open(frames[1]!).ok).toBe(false);
    const replayed = new FrameOpener(key, 's2w');
    expect(replayed.open(frames[0]!).ok).toBe(true);
    expect(replayed.open(frames[0]!).ok).toBe(false);
    const dropped = new FrameOpener(key, 's2w');
    expect(dropped.open(frames[0]!).ok).toBe(true);
    expect(dropped.open(frames[2]!).ok).toBe(false);
  });

  it('binds the direction and the session', () => {
    const s2w = new FrameSealer(key, 's2w').seal('{}');
    expect(new FrameOpener(key, 'w2s').open(s2w).ok).toBe(false);
    const other = deriveSessionKey(secret, 'w'.repeat(32), 'm'.repeat(32));
    expect(new FrameOpener(other, 's2w').open(s2w).ok).toBe(false);
    expect(new FrameOpener(key, 's2w').open('no mac here').ok).toBe(false);
  });
});

describe('protocol v2 parsing', () => {
  it('accepts the worker frames and refuses unknown fields and versions', () => {
    const cap = { v: 2, type: 'cap.request', requestId: 'q1', recordingId: 'r1', callId: 'c1', agentIds: ['a1'], at: 1 };
    expect(parseWorkerMessageV2(JSON.stringify(cap)).ok).toBe(true);
    expect(parseWorkerMessageV2(JSON.stringify({ ...cap, extra: 1 }))).toMatchObject({ ok: false, code: 'invalid-message', ref: 'q1' });
    expect(parseWorkerMessageV2(JSON.stringify({ ...cap, v: 1 }))).toMatchObject({ ok: false, code: 'bad-version' });
    expect(parseWorkerMessageV2(JSON.stringify({ v: 2, type: 'recording-state', callId: 'c', recording: false, reasons: ['deleted', 'cap-unknown'], at: 1 })).ok).toBe(true);
    expect(parseWorkerMessageV2('{')).toMatchObject({ ok: false, code: 'bad-json' });
  });

  it('round-trips server frames, erasure facts included', () => {
    const delta = { v: 2 as const, type: 'delta' as const, seq: 5, at: 9, fact: { type: 'erasure.requested' as const, erasureId: 'e1', callId: 'c1', participantId: 'p1', recordingIds: ['r1'] } };
    expect(parseServerMessageV2(encodeV2(delta))).toEqual({ ok: true, message: delta });
    const decision = { v: 2 as const, type: 'cap.decision' as const, requestId: 'q', admitted: true, month: '2027-01', reason: 'cap-reached' as const };
    expect(parseServerMessageV2(JSON.stringify(decision)).ok).toBe(false);
  });
});
