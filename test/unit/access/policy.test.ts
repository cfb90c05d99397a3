/**
 * Pure units of the access layer: token verification, the authorization matrix, role views of a
 * manifest, byte ranges, the render cache, the extract manifest's "nothing about anyone else"
 * rule, and the coaching alignment of a track on the common time axis.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { SignJWT, UnsecuredJWT, createLocalJWKSet, exportJWK, generateKeyPair } from 'jose';
import { ROLES, type Principal, type Role } from '../../../src/access/roles.ts';
import { principalFromClaims, rolesFromClaim } from '../../../src/identity/claims.ts';
import { ServiceTokenVerifier } from '../../../src/identity/serviceTokens.ts';
import { ACTION_ROLES, authorize, recordingFacts, recordingView, rolesForAuditType, type Action } from '../../../src/access/policy.ts';
import { parseRange } from '../../../src/access/range.ts';
import { openApiDocument } from '../../../src/controlplane/openapi.ts';
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

describe('service tokens: JWT access tokens verified against the provider\'s JWKS', () => {
  const ISSUER = 'https://idp.example';
  const AUD = 'optin-api';
  const mapping = { roleClaim: 'optin_roles', subjectClaim: 'sub', roleMap: {} };

  async function setup(now?: () => number) {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
    const verifier = new ServiceTokenVerifier({ issuer: ISSUER, audience: AUD, jwks: createLocalJWKSet({ keys: [jwk] }), maxTokenAgeSeconds: 600, claims: mapping, ...(now ? { now } : {}) });
    const sign = (claims: Record<string, unknown>, o: { typ?: string; iat?: number; exp?: string | number; aud?: string; iss?: string; sub?: string } = {}) => {
      const j = new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: o.typ ?? 'at+jwt' }).setIssuer(o.iss ?? ISSUER).setAudience(o.aud ?? AUD).setSubject(o.sub ?? 'extract-service');
      j.setIssuedAt(o.iat ?? Math.floor(Date.now() / 1000));
      j.setExpirationTime(o.exp ?? '5m');
      return j.sign(privateKey);
    };
    return { verifier, sign };
  }

  it('accepts an asymmetric at+jwt with one optin role', async () => {
    const { verifier, sign } = await setup();
    await expect(verifier.verify(await sign({ optin_roles: ['extract-operator'] }))).resolves.toEqual({ sub: 'extract-service', role: 'extract-operator' });
  });

  it('refuses HS256 (a shared secret could mint tokens), alg none, and foreign keys', async () => {
    const { verifier } = await setup();
    const hs = await new SignJWT({ optin_roles: ['dpo'] }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setIssuer(ISSUER).setAudience(AUD).setSubject('s').setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode('x'.repeat(40)));
    await expect(verifier.verify(hs)).rejects.toMatchObject({ reason: 'invalid-signature' });
    const none = new UnsecuredJWT({ optin_roles: ['dpo'] }).setIssuer(ISSUER).setAudience(AUD).setSubject('s').setIssuedAt().setExpirationTime('5m').encode();
    await expect(verifier.verify(none)).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    const other = await setup();
    await expect(verifier.verify(await other.sign({ optin_roles: ['dpo'] }))).rejects.toMatchObject({ reason: 'invalid-signature' });
    await expect(verifier.verify('not a token')).rejects.toMatchObject({ reason: 'malformed-token' });
  });

  it('refuses expired tokens, tokens older than the maximum age whatever their exp, other audiences and issuers, and ID tokens', async () => {
    const { verifier, sign } = await setup();
    const past = Math.floor(Date.now() / 1000) - 3600;
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { iat: past - 60, exp: past }))).rejects.toMatchObject({ reason: 'expired-token' });
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { iat: past, exp: '2h' }))).rejects.toMatchObject({ reason: 'too-old' });
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { aud: 'billing' }))).rejects.toMatchObject({ reason: 'invalid-claims' });
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { iss: 'https://evil.example' }))).rejects.toMatchObject({ reason: 'invalid-claims' });
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { typ: 'JWT' }))).rejects.toMatchObject({ reason: 'invalid-claims' });
  });

  it('needs a pseudonymous sub and exactly one known role', async () => {
    const { verifier, sign } = await setup();
    await expect(verifier.verify(await sign({ optin_roles: ['dpo'] }, { sub: 'has space' }))).rejects.toMatchObject({ reason: 'invalid-claims' });
    await expect(verifier.verify(await sign({ optin_roles: ['admin'] }))).rejects.toMatchObject({ reason: 'invalid-claims' });
    await expect(verifier.verify(await sign({ optin_roles: ['dpo', 'agent'] }))).rejects.toMatchObject({ reason: 'invalid-claims' });
    await expect(verifier.verify(await sign({}))).rejects.toMatchObject({ reason: 'invalid-claims' });
  });
});

describe('claims: roles from a configurable claim', () => {
  it('reads a dotted claim path, a string or an array, and maps the provider\'s names', () => {
    expect(principalFromClaims({ sub: 'lead-1', realm_access: { roles: ['cc-lead', 'offline_access'] } }, { roleClaim: 'realm_access.roles', subjectClaim: 'sub', roleMap: { 'cc-lead': 'team-lead' } })).toEqual({ ok: true, principal: { sub: 'lead-1', role: 'team-lead' } });
    expect(principalFromClaims({ sub: 'a', optin_roles: 'agent' })).toEqual({ ok: true, principal: { sub: 'a', role: 'agent' } });
    expect(principalFromClaims({ sub: 'a', optin_roles: 'agent dpo' })).toMatchObject({ ok: false, reason: 'several-roles' });
    expect(principalFromClaims({ sub: 'a' })).toMatchObject({ ok: false, reason: 'no-role' });
    expect(principalFromClaims({ optin_roles: ['dpo'] })).toMatchObject({ ok: false, reason: 'no-subject' });
    expect(principalFromClaims({ sub: 'a@b', optin_roles: ['dpo'] })).toMatchObject({ ok: false, reason: 'bad-subject' });
    expect(principalFromClaims({ employee: 'e-1', optin_roles: ['dpo'] }, { roleClaim: 'optin_roles', subjectClaim: 'employee', roleMap: {} })).toEqual({ ok: true, principal: { sub: 'e-1', role: 'dpo' } });
    expect(rolesFromClaim(['agent', 'agent', 'nonsense'], {})).toEqual(['agent']);
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
      ['spotcheck.read', ['dpo']],
      ['extract.list', ['extract-operator']],
      ['deletion.receipt', ['team-lead', 'dpo']],
      ['deletion.list', ['agent', 'team-lead', 'dpo']],
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

describe('the generated OpenAPI document (GET /v1/openapi.json)', () => {
  it('documents every route of the access API with its method, parameters and the errors of the policy', async () => {
    const doc = (await openApiDocument()) as { paths: Record<string, Record<string, { responses?: Record<string, unknown>; parameters?: Array<{ name: string; in: string }>; security?: unknown[] }>> };
    const routes: Array<[string, string]> = [
      ['get', '/api/recordings'],
      ['get', '/api/recordings/{recordingId}'],
      ['delete', '/api/recordings/{recordingId}'],
      ['get', '/api/recordings/{recordingId}/play'],
      ['post', '/api/recordings/{recordingId}/deletion-requests'],
      ['get', '/api/deletion-requests'],
      ['get', '/api/deletions/{deletionId}'],
      ['post', '/api/extracts'],
      ['get', '/api/extracts'],
      ['get', '/api/extracts/{extractId}'],
      ['get', '/api/extracts/{extractId}/files/{name}'],
      ['get', '/api/audit'],
      ['get', '/api/audit/verify'],
      ['get', '/api/recordings/{recordingId}/access-log'],
      ['get', '/api/compliance'],
      ['get', '/api/spot-check'],
    ];
    for (const [method, path] of routes) {
      const op = doc.paths[path]?.[method];
      expect(op, `${method} ${path}`).toBeDefined();
      for (const status of ['401', '403']) expect(Object.keys(op!.responses ?? {}), `${method} ${path} ${status}`).toContain(status);
      expect(op!.security, `${method} ${path} security`).toEqual([{ session: [] }, { oauth2: [] }]);
      for (const p of path.match(/\{(\w+)\}/g) ?? []) expect(op!.parameters?.some((x) => x.in === 'path' && x.name === p.slice(1, -1)), `${method} ${path} ${p}`).toBe(true);
    }
    expect(doc.paths['/api/recordings/{recordingId}/play']!.get!.parameters!.map((p) => p.name)).toEqual(expect.arrayContaining(['purpose', 'format']));
    // Pages are views, not API: they stay out of the document.
    expect(Object.keys(doc.paths).filter((p) => !p.startsWith('/api/') && !p.startsWith('/v1/') && !['/healthz', '/readyz'].includes(p))).toEqual([]);
  });
});
