/**
 * Pure units of the access layer: token verification, the authorization matrix, role views of a
 * manifest, byte ranges, the render cache, the extract manifest's "nothing about anyone else"
 * rule, and the coaching alignment of a track on the common time axis.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { SignJWT, UnsecuredJWT } from 'jose';
import { issueToken, verifyToken, ROLES, type Principal, type Role } from '../../../src/access/auth.ts';
import { ACTION_ROLES, authorize, recordingFacts, recordingView, rolesForAuditType, type Action } from '../../../src/access/policy.ts';
import { parseRange } from '../../../src/access/range.ts';
import { ACCESS_ROUTES } from '../../../src/access/routes.ts';
import { BoundedCache } from '../../../src/access/BoundedCache.ts';
import { buildExtractManifest } from '../../../src/access/extractManifest.ts';
import { alignTrack, renderCoaching } from '../../../src/access/coaching.ts';
import { synthSegments } from '../../support/synthRecording.ts';
import { readOggOpus } from '../../../src/media/OggOpusReader.ts';
import { decodeToPcm } from '../../../src/media/ffmpeg.ts';
import type { AuditEntry } from '../../../src/audit/AuditTrail.ts';
import type { RecordingManifest } from '../../../src/storage/manifest.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { rmsDb, toneAdvantageDb } from '../../support/audio.ts';

const SECRET = 'unit-test-secret-0123456789abcdef0123456789';

function manifest(over: Partial<RecordingManifest> = {}): RecordingManifest {
  const start = Date.parse('2025-03-10T09:00:00Z');
  return {
    format: 'optin-manifest/1',
    recordingId: 'r_aaaa',
    callId: 'call-secret-1',
    nodeId: 'n1',
    state: 'ended',
    startedAtMs: start,
    endedAtMs: start + 60_000,
    retentionSeconds: 2_592_000,
    retentionClass: 'training-30d',
    expiresAtMs: start + 2_592_000_000,
    expiresAt: new Date(start + 2_592_000_000).toISOString(),
    participants: [
      { participantId: 'leg-ag', role: 'agent', subjectId: 'agent-a1', teamLeadId: 'lead-l1' },
      { participantId: 'leg-cu', role: 'customer', subjectId: 'cust-c1' },
    ],
    consentEvidence: [{ method: 'dtmf', at: start - 500, infoVersion: 'notice-v1', ref: 'ivr-8812' }],
    segments: [
      { participantId: 'leg-ag', segment: 0, run: 0, objectKey: 'k0', startWallClockMs: start, durationMs: 10_000, opusPayloadBytes: 1, oggBytes: 1, sealedBytes: 1, sha256: 'a'.repeat(64), quality: {} },
      { participantId: 'leg-cu', segment: 0, run: 0, objectKey: 'k1', startWallClockMs: start + 5, durationMs: 10_000, opusPayloadBytes: 1, oggBytes: 1, sealedBytes: 1, sha256: 'b'.repeat(64), quality: {} },
    ],
    revision: 3,
    updatedAtMs: start,
    ...over,
  };
}

describe('auth: signed JWTs', () => {
  it('issues and verifies a token for every role', async () => {
    for (const role of ROLES) {
      const token = await issueToken(SECRET, { sub: 'subj-1', role });
      await expect(verifyToken(token, { secret: SECRET })).resolves.toEqual({ sub: 'subj-1', role });
    }
  });

  it('refuses expired, forged, foreign, unsigned and malformed tokens with a reason', async () => {
    const past = Date.now() - 3_600_000;
    const expired = await issueToken(SECRET, { sub: 's', role: 'agent', ttlSeconds: 60 }, { nowMs: past });
    await expect(verifyToken(expired, { secret: SECRET })).rejects.toMatchObject({ reason: 'expired-token' });
    const forged = await issueToken('another-secret-0123456789abcdef0123456', { sub: 's', role: 'dpo' });
    await expect(verifyToken(forged, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-signature' });
    const otherAud = await issueToken(SECRET, { sub: 's', role: 'dpo' }, { audience: 'billing' });
    await expect(verifyToken(otherAud, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-claims' });
    const otherIss = await issueToken(SECRET, { sub: 's', role: 'dpo' }, { issuer: 'evil' });
    await expect(verifyToken(otherIss, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-claims' });
    const none = new UnsecuredJWT({ role: 'dpo' }).setSubject('s').setIssuer('optin').setAudience('optin-api').setExpirationTime('1h').encode();
    await expect(verifyToken(none, { secret: SECRET })).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    await expect(verifyToken('not a token', { secret: SECRET })).rejects.toMatchObject({ reason: 'malformed-token' });
  });

  it('requires exp, a pseudonymous sub and a known role', async () => {
    const key = new TextEncoder().encode(SECRET);
    const base = () => new SignJWT({ role: 'dpo' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('optin').setAudience('optin-api');
    const noExp = await base().setSubject('s').sign(key);
    await expect(verifyToken(noExp, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-claims' });
    const badSub = await base().setSubject('has space').setExpirationTime('1h').sign(key);
    await expect(verifyToken(badSub, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-claims' });
    const badRole = await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('optin').setAudience('optin-api').setSubject('s').setExpirationTime('1h').sign(key);
    await expect(verifyToken(badRole, { secret: SECRET })).rejects.toMatchObject({ reason: 'invalid-claims' });
  });

  it('refuses a short secret at configuration time', async () => {
    await expect(issueToken('short', { sub: 's', role: 'agent' })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});

describe('policy: the authorization matrix (R10)', () => {
  const facts = recordingFacts(manifest());
  const who: Record<string, Principal> = {
    ownAgent: { sub: 'agent-a1', role: 'agent' },
    otherAgent: { sub: 'agent-a2', role: 'agent' },
    ownLead: { sub: 'lead-l1', role: 'team-lead' },
    otherLead: { sub: 'lead-l2', role: 'team-lead' },
    dpo: { sub: 'dpo-1', role: 'dpo' },
    xop: { sub: 'xop-1', role: 'extract-operator' },
  };
  // Expected status per principal and action on a recording of agent-a1 / lead-l1 (200 = allowed).
  const table: Array<[Action, Record<keyof typeof who, number>]> = [
    ['recordings.read', { ownAgent: 200, otherAgent: 404, ownLead: 200, otherLead: 404, dpo: 200, xop: 403 }],
    ['recordings.play', { ownAgent: 200, otherAgent: 404, ownLead: 200, otherLead: 404, dpo: 403, xop: 403 }],
    ['recordings.delete', { ownAgent: 403, otherAgent: 403, ownLead: 200, otherLead: 404, dpo: 403, xop: 403 }],
    ['deletion.request', { ownAgent: 200, otherAgent: 404, ownLead: 403, otherLead: 403, dpo: 403, xop: 403 }],
  ];
  for (const [action, expected] of table) {
    it(`${action}`, () => {
      for (const [name, p] of Object.entries(who)) {
        const d = authorize(p, action, facts);
        expect(d.allow ? 200 : d.status, `${name} ${action}`).toBe(expected[name as keyof typeof who]);
        // A missing recording answers like an invisible one, for roles that may use the route.
        const missing = authorize(p, action, null);
        expect(missing.allow).toBe(false);
        expect(missing.allow ? 0 : missing.status).toBe(expected[name as keyof typeof who] === 403 ? 403 : 404);
      }
    });
  }

  it('route-level actions: only their roles', () => {
    const only: Array<[Action, Role[]]> = [
      ['recordings.list', ['agent', 'team-lead', 'dpo']],
      ['extract.create', ['extract-operator']],
      ['extract.read', ['extract-operator']],
      ['audit.read', ['dpo']],
      ['audit.verify', ['dpo']],
      ['compliance.read', ['dpo']],
    ];
    for (const [action, roles] of only) {
      for (const role of ROLES) expect(authorize({ sub: 'x', role }, action).allow, `${role} ${action}`).toBe(roles.includes(role));
    }
  });

  it('the DPO never gets audio, on any recording', () => {
    expect(ACTION_ROLES['recordings.play']).not.toContain('dpo');
    expect(ACTION_ROLES['extract.create']).not.toContain('dpo');
  });

  it('an erased agent no longer links the recording to them', () => {
    const m = manifest();
    m.participants[0] = { participantId: 'leg-ag', role: 'agent', erased: { atMs: 1, reason: 'x' } };
    expect(authorize({ sub: 'agent-a1', role: 'agent' }, 'recordings.play', recordingFacts(m))).toMatchObject({ allow: false, status: 404 });
  });

  it('maps access audit types to the roles allowed to make them', () => {
    expect(rolesForAuditType('access.play')).toEqual(['agent', 'team-lead']);
    expect(rolesForAuditType('extract')).toEqual(['extract-operator']);
    expect(rolesForAuditType('gate.transition')).toBeUndefined();
  });
});

describe('policy: what each role sees of a recording', () => {
  it('agents and team leads see "customer", never the customer id or the consent ref', () => {
    for (const p of [{ sub: 'agent-a1', role: 'agent' }, { sub: 'lead-l1', role: 'team-lead' }] as Principal[]) {
      const view = recordingView(p, manifest(), true);
      const text = JSON.stringify(view);
      expect(text).not.toContain('cust-c1');
      expect(text).not.toContain('ivr-8812');
      expect(text).not.toContain('call-secret-1');
      expect(text).not.toContain('objectKey');
      expect(view.participants.find((x) => x.role === 'customer')).toEqual({ participantId: 'leg-cu', role: 'customer', erased: false, segments: 1, durationMs: 10_000 });
      expect(view.participants.find((x) => x.role === 'agent')?.subjectId).toBe('agent-a1');
    }
  });

  it('the DPO sees every pseudonymous id (spot checks need them)', () => {
    const text = JSON.stringify(recordingView({ sub: 'dpo-1', role: 'dpo' }, manifest(), true));
    for (const id of ['cust-c1', 'agent-a1', 'lead-l1', 'ivr-8812', 'call-secret-1']) expect(text).toContain(id);
  });
});

describe('range requests (RFC 9110 §14)', () => {
  it('parses single ranges and refuses unsatisfiable ones', () => {
    expect(parseRange(undefined, 100)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=0-9', 100)).toEqual({ kind: 'partial', start: 0, end: 9 });
    expect(parseRange('bytes=90-', 100)).toEqual({ kind: 'partial', start: 90, end: 99 });
    expect(parseRange('bytes=-10', 100)).toEqual({ kind: 'partial', start: 90, end: 99 });
    expect(parseRange('bytes=-1000', 100)).toEqual({ kind: 'partial', start: 0, end: 99 });
    expect(parseRange('bytes=50-5000', 100)).toEqual({ kind: 'partial', start: 50, end: 99 });
    expect(parseRange('bytes=100-', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-0', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=0-1,5-6', 100)).toEqual({ kind: 'full' });
    expect(parseRange('items=0-1', 100)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=9-3', 100)).toEqual({ kind: 'full' });
  });
});

describe('BoundedCache', () => {
  it('bounds bytes (LRU), expires entries, computes once per key, and forgets evicted work', async () => {
    let t = 0;
    const cache = new BoundedCache<{ bytes: Buffer }>({ maxBytes: 100, ttlMs: 1000, now: () => t });
    let calls = 0;
    const compute = async () => {
      calls += 1;
      return { bytes: Buffer.alloc(40) };
    };
    await Promise.all([cache.getOrCompute('a', compute), cache.getOrCompute('a', compute)]);
    expect(calls).toBe(1);
    await cache.getOrCompute('b', compute);
    cache.get('a'); // a is now the most recently used
    await cache.getOrCompute('c', compute); // evicts b
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBeDefined();
    expect(cache.bytes).toBeLessThanOrEqual(100);
    t = 2000;
    expect(cache.get('a')).toBeUndefined();
    // A render that finishes after its recording was deleted is not put back.
    let release!: () => void;
    const slow = cache.getOrCompute('r1:1:ogg', () => new Promise((resolve) => (release = () => resolve({ bytes: Buffer.alloc(10) }))));
    cache.evictPrefix('r1:');
    release();
    await slow;
    expect(cache.get('r1:1:ogg')).toBeUndefined();
  });
});

describe('extract manifest (R12)', () => {
  const m = manifest();
  const audit: AuditEntry[] = [
    { v: 1, stream: 's', seq: 1, at: '2025-03-10T10:00:00.000Z', type: 'access.play', actor: 'lead-l1', role: 'team-lead', purpose: 'coaching', refs: { recordingId: 'r_aaaa' }, details: {}, prevHash: '', alg: 'sha256', hash: '' },
    { v: 1, stream: 's', seq: 2, at: '2025-03-10T10:05:00.000Z', type: 'access.play', actor: 'agent-a1', role: 'agent', purpose: 'coaching', refs: { recordingId: 'r_aaaa' }, details: {}, prevHash: '', alg: 'sha256', hash: '' },
    { v: 1, stream: 's', seq: 3, at: '2025-03-10T10:06:00.000Z', type: 'access.denied', actor: 'agent-a2', role: 'agent', purpose: 'access-control', refs: { recordingId: 'r_aaaa' }, details: {}, prevHash: '', alg: 'sha256', hash: '' },
    { v: 1, stream: 's', seq: 4, at: '2025-03-10T10:07:00.000Z', type: 'extract', actor: 'xop-1', role: 'extract-operator', purpose: 'subject-access', refs: { subjectId: 'agent-a1' }, details: { recordingIds: ['r_aaaa'] }, prevHash: '', alg: 'sha256', hash: '' },
    { v: 1, stream: 's', seq: 5, at: '2025-03-10T10:08:00.000Z', type: 'access.play', actor: 'lead-l1', role: 'team-lead', purpose: 'coaching', refs: { recordingId: 'r_other' }, details: {}, prevHash: '', alg: 'sha256', hash: '' },
  ];
  const file = { name: 'r_aaaa.ogg', contentType: 'audio/ogg', bytes: 10, sha256: 'c'.repeat(64), durationMs: 10_000 };

  it("a customer's manifest names no other person, and says who accessed it by role and alias", () => {
    const x = buildExtractManifest({ extractId: 'x_1', caseRef: 'SAR-1', subjectId: 'cust-c1', createdAtMs: Date.now(), items: [{ manifest: m, participantId: 'leg-cu', file }], audit });
    const text = JSON.stringify(x);
    for (const other of ['agent-a1', 'lead-l1', 'leg-ag', 'agent-a2', 'xop-1', 'call-secret-1']) expect(text).not.toContain(other);
    const r = x.recordings[0]!;
    expect(r.yourRole).toBe('customer');
    expect(r.legalBasis.article).toContain('6(1)(a)');
    expect(r.consentEvidence).toEqual([{ method: 'dtmf', at: new Date(m.consentEvidence[0]!.at as number).toISOString(), infoVersion: 'notice-v1', ref: 'ivr-8812' }]);
    expect(r.segments).toHaveLength(1);
    expect(r.retention.expiresAt).toBe(m.expiresAt);
    // The two plays; not the denial, not the agent's own extract, not another recording.
    expect(r.accesses.map((a) => [a.type, a.role, a.by])).toEqual([
      ['access.play', 'team-lead', 'person-1'],
      ['access.play', 'agent', 'person-2'],
    ]);
  });

  it("an agent's manifest: their legal basis, no consent evidence of the customer, no customer or lead id", () => {
    const x = buildExtractManifest({ extractId: 'x_2', caseRef: 'SAR-2', subjectId: 'agent-a1', createdAtMs: Date.now(), items: [{ manifest: m, participantId: 'leg-ag', file }], audit });
    const text = JSON.stringify(x);
    for (const other of ['cust-c1', 'lead-l1', 'leg-cu', 'ivr-8812', 'xop-1']) expect(text).not.toContain(other);
    const r = x.recordings[0]!;
    expect(r.legalBasis.article).toContain('6(1)(f)');
    expect(r.consentEvidence).toBeUndefined();
    expect(r.accesses.map((a) => [a.type, a.by])).toEqual([
      ['access.play', 'person-1'],
      ['access.play', 'you'],
      ['extract', 'person-2'],
    ]);
  });
});

describe('coaching alignment', () => {
  it('keeps a track in time: a gap between runs becomes silence of the right length, the lead-in an offset', async () => {
    const source = readFileSync(fixturePath('agent-tone.opus'));
    const segs = synthSegments(source, { seconds: 4, segmentSeconds: 2 });
    expect(segs.length).toBe(2);
    const origin = 1_000_000;
    // Run 0 starts 500 ms after the origin; run 1 (the second segment) after a 1 s gate pause.
    const track = [
      { ogg: segs[0]!.ogg, meta: { participantId: 'p', segment: 0, run: 0, startWallClockMs: origin + 500, durationMs: segs[0]!.samples / 48 } },
      { ogg: segs[1]!.ogg, meta: { participantId: 'p', segment: 1, run: 1, startWallClockMs: origin + 500 + segs[0]!.samples / 48 + 1000, durationMs: segs[1]!.samples / 48 } },
    ].map((s) => ({ ...s, meta: { ...s.meta, objectKey: '', opusPayloadBytes: 0, oggBytes: 0, sealedBytes: 0, sha256: '', quality: {} } }));
    const aligned = alignTrack(track, origin)!;
    const ms = (x: number) => Math.round(x * 48);
    // The lead-in is applied by the mixer (in PCM), not as silence packets.
    expect(aligned.leadSamples).toBe(ms(500));
    const { pcm, stderr } = await decodeToPcm(aligned.ogg);
    expect(stderr.trim()).toBe('');
    const preSkip = readOggOpus(segs[0]!.ogg).head.preSkip;
    const expectedSamples = segs[0]!.samples + ms(1000) + segs[1]!.samples - preSkip;
    expect(Math.abs(pcm.length - expectedSamples)).toBeLessThan(ms(3));
    expect(aligned.samples).toBe(expectedSamples);
    expect(rmsDb(pcm, ms(100), ms(1000))).toBeGreaterThan(-30); // the tone
    const gapStart = segs[0]!.samples - preSkip;
    expect(rmsDb(pcm, gapStart + ms(50), gapStart + ms(950))).toBeLessThan(-60); // the pause: silence
    expect(rmsDb(pcm, gapStart + ms(1100), gapStart + ms(1800))).toBeGreaterThan(-30);
  });
});

describe('coaching render', () => {
  it('puts the agent LEFT and the customer RIGHT, each at its anchor (the customer 700 ms later)', async () => {
    const start = Date.parse('2025-03-10T09:00:00Z');
    const sides = { 'leg-ag': synthSegments(readFileSync(fixturePath('agent-tone.opus')), { seconds: 2, segmentSeconds: 1 }), 'leg-cu': synthSegments(readFileSync(fixturePath('customer-tone.opus')), { seconds: 2, segmentSeconds: 1 }) };
    const offsets = { 'leg-ag': 0, 'leg-cu': 700 };
    const m = manifest({
      segments: (['leg-ag', 'leg-cu'] as const).flatMap((pid) =>
        sides[pid].map((seg) => ({ participantId: pid, segment: seg.index, run: 0, objectKey: 'k', startWallClockMs: start + offsets[pid] + seg.startSample / 48, durationMs: seg.samples / 48, opusPayloadBytes: 0, oggBytes: 0, sealedBytes: 0, sha256: '0'.repeat(64), quality: {} })),
      ),
    });
    const store = {
      async *openTrack(_rid: string, pid: string) {
        const segs = sides[pid as keyof typeof sides];
        for (const seg of segs) yield { segment: seg.index, ogg: seg.ogg, meta: m.segments.find((x) => x.participantId === pid && x.segment === seg.index)! };
      },
    };
    const rendered = await renderCoaching(store, m, 'wav', 64 << 20);
    expect(rendered.contentType).toBe('audio/wav');
    expect(Math.abs(rendered.durationMs - 2700)).toBeLessThan(30);
    const pcm = rendered.bytes.subarray(44);
    const left = new Float32Array(pcm.length / 4);
    const right = new Float32Array(pcm.length / 4);
    for (let i = 0; i < left.length; i++) {
      left[i] = pcm.readInt16LE(4 * i) / 32768;
      right[i] = pcm.readInt16LE(4 * i + 2) / 32768;
    }
    expect(toneAdvantageDb(left, 523, 1230)).toBeGreaterThan(40);
    expect(toneAdvantageDb(right, 1230, 523)).toBeGreaterThan(40);
    const onset = (x: Float32Array) => x.findIndex((v) => Math.abs(v) > 0.05);
    const aloneOnset = onset((await decodeToPcm(sides['leg-cu'][0]!.ogg)).pcm);
    expect(Math.abs((onset(right) - aloneOnset) / 48 - 700)).toBeLessThan(2);
    expect(rmsDb(right, 0, 48 * 650)).toBeLessThan(-80);
  });
});

describe('docs/openapi.yaml', () => {
  it('documents every route of the API, with its method and the errors of the policy', () => {
    const text = readFileSync(new URL('../../../docs/openapi.yaml', import.meta.url), 'utf8');
    const lines = text.split('\n');
    expect(lines[0]).toBe('openapi: 3.1.0');
    for (const r of ACCESS_ROUTES) {
      const [method, path] = r.template.split(' ') as [string, string];
      const at = lines.indexOf(`  ${path}:`);
      expect(at, `${path} is documented`).toBeGreaterThan(0);
      let end = at + 1;
      while (end < lines.length && !/^ {2}\S/.test(lines[end]!) && !/^\S/.test(lines[end]!)) end++;
      const block = lines.slice(at, end).join('\n');
      expect(block, r.template).toContain(`    ${method.toLowerCase()}:`);
      for (const status of ['401', '403']) expect(block, `${r.template} ${status}`).toContain(`'${status}'`);
      for (const p of path.match(/\{(\w+)\}/g) ?? []) {
        expect(block.includes(`name: ${p.slice(1, -1)}`) || block.includes('RecordingId'), `${r.template} documents ${p}`).toBe(true);
      }
    }
  });
});
