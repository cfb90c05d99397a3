import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MappingSchema, aorUser, normalizeUcid, resolveCallId, resolveParticipantId, toId } from '../../../src/siprec/mapping.ts';
import { parseRsMetadata, type RsMetadata } from '../../../src/siprec/rsMetadata.ts';
import { assignLine } from '../../../src/siprec/streamAssignment.ts';
import { SipHeaders, type SipRequest } from '../../../src/sip/SipMessage.ts';
import { rsMetadata } from '../../support/siprecFixtures.ts';

function req(headers: [string, string][] = [], uri = 'sip:srs@10.0.0.1'): SipRequest {
  return { kind: 'request', method: 'INVITE', uri, headers: SipHeaders.from([['Call-ID', 'abc@sbc.example'], ...headers]), body: Buffer.alloc(0) };
}

function md(xml: string): RsMetadata {
  const r = parseRsMetadata(xml);
  if (!r.ok) throw new Error(r.problem);
  return r.metadata;
}

describe('Avaya UCID encodings', () => {
  it('decimal, 16 hex digits, and User-to-User hex with the FA08 element all give one canonical form', () => {
    // node 0x0018 = 24, sequence 0x803B = 32827, timestamp 0x69810C67 = 1770064999
    const canonical = '00024328271770064999';
    expect(normalizeUcid(canonical)).toBe(canonical);
    expect(normalizeUcid('0018803B69810C67')).toBe(canonical);
    expect(normalizeUcid('00FA080018803B69810C67;encoding=hex')).toBe(canonical);
    expect(normalizeUcid('FA080018803b69810c67')).toBe(canonical);
    expect(normalizeUcid('04C1234500FA080018803B69810C67C8020102;encoding=hex')).toBe(canonical);
    expect(normalizeUcid('hello')).toBeUndefined();
  });

  it('is found in a header or in the metadata extension, whichever the SBC uses', () => {
    const rules = [{ from: 'ucid' as const, transform: 'verbatim' as const, prefix: 'ucid-' }];
    expect(resolveCallId(rules, req([['User-to-User', '00FA080018803B69810C67;encoding=hex;purpose=isdn-uui']]), undefined)).toMatchObject({ ok: true, id: 'ucid-00024328271770064999' });
    const withExt = md(rsMetadata({ participants: [], streams: [], extension: '<apkt:ucid>00FA080018803B69810C67;encoding=hex</apkt:ucid>' }));
    expect(resolveCallId(rules, req(), withExt)).toMatchObject({ ok: true, id: 'ucid-00024328271770064999' });
  });
});

describe('call id rules', () => {
  const config = MappingSchema.parse({});

  it('defaults: X-Optin-Call-Id verbatim, else a hash of the SIPREC Call-ID', () => {
    expect(resolveCallId(config.siprec.call, req([['X-Optin-Call-Id', 'call-42']]), undefined)).toMatchObject({ ok: true, id: 'call-42', rule: 0 });
    const fallback = resolveCallId(config.siprec.call, req(), undefined);
    expect(fallback).toMatchObject({ ok: true, rule: 1 });
    expect(fallback.ok && fallback.id).toMatch(/^sip-[A-Za-z0-9_-]{22}$/);
  });

  it('an original Call-ID header (any characters) through sanitize or a keyed hash', () => {
    const header = 'X-Original-Call-ID';
    const value = '4a5b6c@10.1.2.3';
    expect(resolveCallId([{ from: 'header', name: header, transform: 'sanitize', prefix: '' }], req([[header, value]]), undefined)).toMatchObject({ ok: true, id: '4a5b6c_10_1_2_3' });
    const key = randomBytes(32).toString('hex');
    const a = resolveCallId([{ from: 'header', name: header, transform: 'hmac-sha256', prefix: 'c-' }], req([[header, value]]), undefined, key);
    const b = resolveCallId([{ from: 'header', name: header, transform: 'hmac-sha256', prefix: 'c-' }], req([[header, value]]), undefined, key);
    expect(a).toEqual(b);
    // Verbatim refuses what is not an id.
    expect(resolveCallId([{ from: 'header', name: header, transform: 'verbatim', prefix: '' }], req([[header, value]]), undefined)).toMatchObject({ ok: false, problem: expect.stringMatching(/none of the 1/) });
  });

  it('plain legs: Request-URI rec.<call>.<participant>', () => {
    const r = req([], 'sip:rec.call-7.agent_3@srs.example');
    expect(resolveCallId(config.plain.call, r, undefined)).toMatchObject({ ok: true, id: 'call-7' });
    expect(resolveParticipantId(config.plain.participant, { participant: undefined, stream: undefined, position: 0, request: r })).toMatchObject({ ok: true, id: 'agent_3' });
  });

  it('metadata session id and a pattern that picks a group', () => {
    const m = md(rsMetadata({ participants: [], streams: [], sessionId: 'SESSION=abc-123' }));
    expect(resolveCallId([{ from: 'metadata-session-id', pattern: '^SESSION=(.+)$', transform: 'verbatim', prefix: '' }], req(), m)).toMatchObject({ ok: true, id: 'abc-123' });
  });

  it('AoR user parts drop separators; ids are never longer than 64', () => {
    expect(aorUser('sip:+46 (70) 123-45.67@sbc;user=phone')).toBe('+46701234567');
    expect(aorUser('tel:+1-201-555-0123')).toBe('+12015550123');
    expect(toId('x'.repeat(100), { transform: 'sanitize', prefix: 'p-' })).toHaveLength(64);
    expect(toId('x'.repeat(100), { transform: 'verbatim', prefix: '' })).toBeUndefined();
  });
});

describe('stream speakers (labels, associations, fallbacks)', () => {
  const rules = [{ from: 'metadata-participant-id' as const, transform: 'sanitize' as const, prefix: '' }];
  const r = req();

  it('label → stream → participant that sends it', () => {
    const m = md(rsMetadata({ participants: [{ id: 'cust', sends: ['s1'] }, { id: 'agent', sends: ['s2'] }], streams: [{ id: 's1', label: '10' }, { id: 's2', label: '11' }] }));
    expect(assignLine(m, '11', 0, rules, r)).toMatchObject({ ok: true, assignment: { participantId: 'agent', via: 'send' } });
  });

  it('only recv listed: the other of two participants speaks', () => {
    const m = md(rsMetadata({ participants: [{ id: 'cust', recvs: ['s2'] }, { id: 'agent', recvs: ['s1'] }], streams: [{ id: 's1', label: '1' }, { id: 's2', label: '2' }] }));
    expect(assignLine(m, '1', 0, rules, r)).toMatchObject({ ok: true, assignment: { participantId: 'cust', via: 'recv-inference' } });
  });

  it('no associations, no labels: the participant at the line position', () => {
    const m = md(rsMetadata({ participants: [{ id: 'cust' }, { id: 'agent' }], streams: [{ id: 's1', label: '1' }, { id: 's2', label: '2' }] }));
    expect(assignLine(m, undefined, 1, rules, r)).toMatchObject({ ok: true, assignment: { participantId: 'agent', via: 'position' } });
  });

  it('one m-line carrying both directions: both are speakers', () => {
    const m = md(rsMetadata({ participants: [{ id: 'cust', sends: ['mix'] }, { id: 'agent', sends: ['mix'] }], streams: [{ id: 'mix', label: '1' }] }));
    expect(assignLine(m, '1', 0, rules, r)).toMatchObject({ ok: true, assignment: { participantId: 'cust', speakers: ['cust', 'agent'] } });
  });

  it('the sender left: the line has nobody to record', () => {
    const m = md(rsMetadata({ participants: [{ id: 'agent', sends: ['s2'], left: true }, { id: 'cust', sends: ['s1'] }], streams: [{ id: 's1', label: '1' }, { id: 's2', label: '2' }] }));
    expect(assignLine(m, '2', 1, rules, r)).toMatchObject({ ok: false, left: true });
  });

  it('no metadata at all: rules that need none (position)', () => {
    expect(assignLine(undefined, undefined, 1, [{ from: 'position', transform: 'verbatim', prefix: 'leg' }], r)).toMatchObject({ ok: true, assignment: { participantId: 'leg2', via: 'rules-only' } });
    expect(assignLine(undefined, undefined, 1, rules, r)).toMatchObject({ ok: false });
  });
});
