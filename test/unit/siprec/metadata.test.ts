import { describe, expect, it } from 'vitest';
import { mergeMetadata, parseRsMetadata } from '../../../src/siprec/rsMetadata.ts';
import { parseMultipart } from '../../../src/siprec/multipart.ts';
import { rsMetadata } from '../../support/siprecFixtures.ts';

const PARTICIPANTS = [
  { id: 'p1', aor: 'sip:+15551234@sbc', name: 'Caller', sends: ['s1'], recvs: ['s2'] },
  { id: 'p2', aor: 'sip:4001@pbx', sends: ['s2'], recvs: ['s1'] },
];
const STREAMS = [
  { id: 's1', label: '98765432109876543210' },
  { id: 's2', label: 'agent-leg' },
];

describe('rs-metadata (RFC 7865) as SRCs send it', () => {
  it.each([
    ['RFC namespace, default', { namespace: 'urn:ietf:params:xml:ns:recording:1' }, 'rfc7865'],
    ['draft namespace', { namespace: 'urn:ietf:params:xml:ns:recording' }, 'draft'],
    ['prefixed', { prefix: 'rs' }, 'rfc7865'],
    ['no namespace', { namespace: null }, 'none'],
    ['draft shape (id/session attributes, send inside participant)', { draft: true, namespace: 'urn:ietf:params:xml:ns:recording' }, 'draft'],
  ] as const)('%s', (_name, opts, ns) => {
    const r = parseRsMetadata(rsMetadata({ participants: PARTICIPANTS, streams: STREAMS, ...opts }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.metadata.namespace).toBe(ns);
    expect(r.metadata.participants.map((p) => [p.id, p.aor, p.sends])).toEqual([
      ['p1', 'sip:+15551234@sbc', ['s1']],
      ['p2', 'sip:4001@pbx', ['s2']],
    ]);
    // Labels stay strings, large integers included.
    expect(r.metadata.streams.map((s) => s.label)).toEqual(['98765432109876543210', 'agent-leg']);
  });

  it('tolerates vendor extensions with undeclared prefixes and collects their values', () => {
    const ext = '<apkt:ucid>00FA080018803B69810C67;encoding=hex</apkt:ucid><ExtensionData xmlns="http://cisco.com/siprec"><ccc:GCID>d84f1e80-abcd</ccc:GCID></ExtensionData>';
    const xml = rsMetadata({ participants: PARTICIPANTS, streams: STREAMS, extension: ext }).replace('</recording>', '<acme:callerOrig>true</acme:callerOrig></recording>');
    const r = parseRsMetadata(xml);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.metadata.ext.get('ucid')).toEqual(['00FA080018803B69810C67;encoding=hex']);
    expect(r.metadata.ext.get('gcid')).toEqual(['d84f1e80-abcd']);
    expect(r.metadata.ext.get('callerorig')).toEqual(['true']);
    expect(r.metadata.sessions[0]!.ext.get('ucid')).toEqual(['00FA080018803B69810C67;encoding=hex']);
  });

  it('refuses DOCTYPE and ENTITY before parsing, and bounds size and depth', () => {
    const billion = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><recording>&lol2;</recording>';
    expect(parseRsMetadata(billion)).toMatchObject({ ok: false, problem: expect.stringMatching(/DOCTYPE/) });
    expect(parseRsMetadata('<recording><!ENTITY x SYSTEM "file:///etc/passwd"></recording>')).toMatchObject({ ok: false, problem: expect.stringMatching(/ENTITY/) });
    expect(parseRsMetadata('<recording><!ELEMENT x ANY></recording>')).toMatchObject({ ok: false, problem: expect.stringMatching(/markup declaration/) });
    expect(parseRsMetadata('x'.repeat(40_000))).toMatchObject({ ok: false, problem: expect.stringMatching(/exceeds/) });
    expect(parseRsMetadata('<recording>' + '<a>'.repeat(30) + '</a>'.repeat(30) + '</recording>')).toMatchObject({ ok: false, problem: expect.stringMatching(/deeper/) });
    expect(parseRsMetadata('<recording>' + '<a/>'.repeat(5000) + '</recording>')).toMatchObject({ ok: false, problem: expect.stringMatching(/elements/) });
  });

  it('names the problem in bad documents', () => {
    expect(parseRsMetadata('<recording><participant>')).toMatchObject({ ok: false, problem: expect.stringMatching(/not well-formed/) });
    expect(parseRsMetadata('<other/>')).toMatchObject({ ok: false, problem: expect.stringMatching(/root element/) });
    expect(parseRsMetadata('<recording xmlns="urn:x"/>')).toMatchObject({ ok: false, problem: expect.stringMatching(/namespace/) });
    expect(parseRsMetadata('<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant/></recording>')).toMatchObject({ ok: false, problem: expect.stringMatching(/participant_id/) });
  });

  it('a participant leaving and another joining by a partial update (RFC 7866 §7.3)', () => {
    const first = parseRsMetadata(rsMetadata({ participants: PARTICIPANTS, streams: STREAMS }));
    const update = parseRsMetadata(
      rsMetadata({ dataMode: 'partial', participants: [{ id: 'p2', left: true }, { id: 'p3', aor: 'sip:4002@pbx', sends: ['s3'] }], streams: [{ id: 's3', label: '3' }] }),
    );
    if (!first.ok || !update.ok) throw new Error('parse');
    const merged = mergeMetadata(first.metadata, update.metadata);
    expect(merged.participants.map((p) => [p.id, p.left, p.sends])).toEqual([
      ['p1', false, ['s1']],
      ['p2', true, ['s2']],
      ['p3', false, ['s3']],
    ]);
    expect(merged.streams.map((s) => s.id)).toEqual(['s1', 's2', 's3']);
    // A complete document replaces.
    expect(mergeMetadata(first.metadata, first.metadata).participants).toHaveLength(2);
  });
});

describe('multipart/mixed (RFC 2046 §5.1)', () => {
  const body = (s: string) => Buffer.from(s);
  it('reads parts in any order with preamble, padding, LF line ends and per-part Content-Length', () => {
    const r = parseMultipart(
      body('preamble\r\n--b  \r\nContent-Type: application/rs-metadata\r\nContent-Length: 4\r\n\r\n<x/>trailing\r\n--b\nContent-Type: application/sdp\n\nv=0\n--b--\r\nepilogue'),
      'b',
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.parts.map((p) => [p.mediaType, p.body.toString()])).toEqual([
      ['application/rs-metadata', '<x/>'],
      ['application/sdp', 'v=0'],
    ]);
  });

  it('names what makes a body unreadable', () => {
    expect(parseMultipart(body('x'), undefined)).toMatchObject({ ok: false, problem: expect.stringMatching(/boundary parameter/) });
    expect(parseMultipart(body('x'), 'b'.repeat(71))).toMatchObject({ ok: false, problem: expect.stringMatching(/1-70/) });
    expect(parseMultipart(body('no delimiters'), 'b')).toMatchObject({ ok: false, problem: expect.stringMatching(/not found/) });
    expect(parseMultipart(body('--b\r\nContent-Type: a/b\r\n\r\nx\r\n'), 'b')).toMatchObject({ ok: false, problem: expect.stringMatching(/closing/) });
    expect(parseMultipart(body('--b\r\n\r\nx\r\n'.repeat(20) + '--b--'), 'b')).toMatchObject({ ok: false, problem: expect.stringMatching(/more than/) });
    expect(parseMultipart(body('--b\r\nbad header line\r\n\r\nx\r\n--b--'), 'b')).toMatchObject({ ok: false, problem: expect.stringMatching(/no name/) });
  });
});
