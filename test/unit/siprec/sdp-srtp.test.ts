import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as sdpTransform from 'sdp-transform';
import { readOffer, renderAnswer } from '../../../src/siprec/sdpAnswer.ts';
import { SrtpReceiver, SrtpSender, deriveKey } from '../../../src/siprec/srtp.ts';
import { sdpOffer } from '../../support/siprecFixtures.ts';

const opts = { codecs: ['PCMU', 'PCMA', 'opus'] as const, sdes: true, fallbackAddress: '192.0.2.9' };

describe('SDP offers as SRCs write them, and our answers (RFC 3264 §6, RFC 7866 §8.1)', () => {
  it('answers each audio line recvonly in one codec, keeps labels, refuses video with port 0 in place', () => {
    const offer = sdpOffer([
      { port: 4000, label: '1', payloads: [8, 0, 101] },
      { port: 4002, type: 'video', payloads: [96] },
      { port: 4004, label: '2', payloads: [111, 0] },
    ]);
    const r = readOffer(offer, { ...opts, codecs: [...opts.codecs] });
    if (!r.ok) throw new Error(r.problem);
    expect(r.lines.map((l) => (l.verdict.accept ? l.verdict.codec.name : l.verdict.why))).toEqual(['PCMA', 'not-audio', 'opus']);
    const answer = renderAnswer(
      r.lines.map((line, i) => ({ line, localPort: line.verdict.accept ? 50000 + i * 2 : undefined })),
      '198.51.100.7',
      1,
      1,
    );
    const parsed = sdpTransform.parse(answer);
    expect(parsed.media.map((m) => [m.type, m.port, m.direction, m.label === undefined ? undefined : String(m.label)])).toEqual([
      ['audio', 50000, 'recvonly', '1'],
      ['video', 0, undefined, undefined],
      ['audio', 50004, 'recvonly', '2'],
    ]);
    expect(parsed.media[2]!.rtp[0]).toMatchObject({ payload: 111, codec: 'opus', rate: 48000, encoding: 2 });
    expect(parsed.connection?.ip).toBe('198.51.100.7');
  });

  it('missing c= and t= at session level, static payload types without rtpmap, c=0.0.0.0 hold, inactive, rtcp-mux', () => {
    const sdp = ['v=0', 'o=- 1 1 IN IP4 0.0.0.0', 's=-', 'm=audio 5000 RTP/AVP 0', 'c=IN IP4 203.0.113.5', 'a=rtcp-mux', 'a=sendonly', 'm=audio 5002 RTP/AVP 8', 'c=IN IP4 0.0.0.0', 'm=audio 5004 RTP/AVP 0', 'a=inactive', ''].join('\r\n');
    const r = readOffer(sdp, { ...opts, codecs: [...opts.codecs] });
    if (!r.ok) throw new Error(r.problem);
    const [a, b, c] = r.lines.map((l) => l.verdict);
    expect(a).toMatchObject({ accept: true, held: false, remote: { address: '203.0.113.5', rtpPort: 5000, rtcpPort: 5000, rtcpMux: true } });
    expect(b).toMatchObject({ accept: true, held: true, codec: { name: 'PCMA', payloadType: 8 } });
    // No c= anywhere: the address the INVITE came from.
    expect(c).toMatchObject({ accept: true, held: true, remote: { address: '192.0.2.9', rtcpPort: 5005 } });
  });

  it('refuses what cannot be recorded, naming why', () => {
    const r = readOffer(
      sdpOffer([
        { port: 4000, payloads: [18] },
        { port: 4002, protocol: 'UDP/TLS/RTP/SAVPF' },
        { port: 4004, protocol: 'RTP/SAVP' },
        { port: 0 },
      ]),
      { ...opts, codecs: [...opts.codecs] },
    );
    if (!r.ok) throw new Error(r.problem);
    expect(r.lines.map((l) => (l.verdict.accept ? 'ok' : l.verdict.why))).toEqual(['no-codec', 'protocol', 'crypto', 'port-zero']);
    expect(readOffer('hello', { ...opts, codecs: [...opts.codecs] })).toMatchObject({ ok: false });
    expect(readOffer('v=0\r\n' + 'm=audio 1 RTP/AVP 0\r\n'.repeat(20), { ...opts, codecs: [...opts.codecs] })).toMatchObject({ ok: false, problem: expect.stringMatching(/more than/) });
  });

  it('SDES: picks a usable crypto line and answers it with its tag', () => {
    const key = randomBytes(30).toString('base64');
    const offer = sdpOffer([{ port: 4000, protocol: 'RTP/SAVP', extra: ['a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:' + randomBytes(46).toString('base64'), `a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:${key}|2^31`] }]);
    const r = readOffer(offer, { ...opts, codecs: [...opts.codecs] });
    if (!r.ok) throw new Error(r.problem);
    const v = r.lines[0]!.verdict;
    expect(v.accept && v.crypto?.tag).toBe(2);
    expect(v.accept && v.crypto?.key.keySalt.toString('base64')).toBe(key);
    const answer = renderAnswer([{ line: r.lines[0]!, localPort: 6000, localCrypto: randomBytes(30).toString('base64') }], '127.0.0.1', 1, 1);
    expect(answer).toMatch(/m=audio 6000 RTP\/SAVP 0/);
    expect(answer).toMatch(/a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:/);
  });
});

describe('SRTP (RFC 3711)', () => {
  it('key derivation matches RFC 3711 Appendix B.3', () => {
    const mk = Buffer.from('E1F97A0D3E018BE0D64FA32C06DE4139', 'hex');
    const ms = Buffer.from('0EC675AD498AFEEBB6960B3AABE6', 'hex');
    expect(deriveKey(mk, ms, 0, 16).toString('hex').toUpperCase()).toBe('C61E7A93744F39EE10734AFE3FF7A087');
    expect(deriveKey(mk, ms, 2, 14).toString('hex').toUpperCase()).toBe('30CBBC08863D8C85D49DB34A9AE1');
    expect(deriveKey(mk, ms, 1, 20).toString('hex').toUpperCase()).toBe('CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4');
  });

  it('AES-CM keystream matches RFC 3711 Appendix B.2', () => {
    const key = Buffer.from('2B7E151628AED2A6ABF7158809CF4F3C', 'hex');
    const iv = Buffer.from('F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000', 'hex');
    const ks = createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(32));
    expect(ks.toString('hex').toUpperCase()).toBe('E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB');
  });

  it.each(['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'] as const)('%s: round trip across a sequence rollover; tampering fails', (suite) => {
    const k = { suite, keySalt: randomBytes(30) };
    const tx = new SrtpSender(k);
    const rx = new SrtpReceiver(k);
    for (let i = 0; i < 10; i++) {
      const seq = (65530 + i) & 0xffff;
      const p = Buffer.alloc(12 + 160, i);
      p[0] = 0x80;
      p.writeUInt16BE(seq, 2);
      p.writeUInt32BE(i * 160, 4);
      p.writeUInt32BE(0xdeadbeef, 8);
      const enc = tx.protectRtp(p);
      expect(enc.length).toBe(p.length + (suite.endsWith('80') ? 10 : 4));
      expect(rx.unprotectRtp(enc)).toEqual(p);
      const bad = Buffer.from(enc);
      bad[20] = bad[20]! ^ 1;
      expect(rx.unprotectRtp(bad)).toBeUndefined();
    }
    expect(new SrtpReceiver({ suite, keySalt: randomBytes(30) }).unprotectRtp(tx.protectRtp(Buffer.concat([Buffer.from([0x80, 0, 0, 1]), Buffer.alloc(8), Buffer.alloc(20)])))).toBeUndefined();
  });
});
