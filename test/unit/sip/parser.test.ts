import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { parseMessage, DEFAULT_SIP_LIMITS } from '../../../src/sip/parseMessage.ts';
import { StreamFramer } from '../../../src/sip/StreamFramer.ts';
import { serializeMessage } from '../../../src/sip/SipMessage.ts';
import { listValues, parseCSeq, parseContentType, parseNameAddr, parseUri, parseVia, splitList } from '../../../src/sip/headerValues.ts';
import { TimerQueue } from '../../../src/sip/TimerQueue.ts';
import { serverTransactionKey, topVia } from '../../../src/sip/transactions.ts';

const INVITE = [
  'INVITE sip:srs@10.0.0.1:5060 SIP/2.0',
  'v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK776asdhds;rport',
  'Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKabc, SIP/2.0/UDP proxy.example;branch=z9hG4bKdef',
  'Max-Forwards: 70',
  'f: "Alice, the agent" <sip:alice@example.com>;tag=1928301774',
  'To: <sip:srs@example.com>',
  'i: a84b4c76e66710@pc33.example.com',
  'CSeq: 314159 INVITE',
  'Subject: folded',
  '  continuation',
  'm: <sip:src@10.0.0.2;transport=tcp>;+sip.src',
  'Record-Route: <sip:rr1.example;lr>, <sip:rr2.example;lr>',
  'c: application/sdp',
  'l: 4',
  '',
  'v=0\r\nextra bytes beyond content-length',
].join('\r\n');

describe('SIP message parser (RFC 3261 §7)', () => {
  it('reads requests with compact forms, folding, multi-value lines and Content-Length trimming', () => {
    const r = parseMessage(Buffer.from(INVITE));
    expect(r.ok).toBe(true);
    if (!r.ok || r.message.kind !== 'request') return;
    const m = r.message;
    expect(m.method).toBe('INVITE');
    expect(m.uri).toBe('sip:srs@10.0.0.1:5060');
    expect(m.headers.get('call-id')).toBe('a84b4c76e66710@pc33.example.com');
    expect(m.headers.get('Subject')).toBe('folded continuation');
    expect(listValues(m.headers.getAll('via'))).toHaveLength(3);
    expect(m.body.toString()).toBe('v=0\r');
    const from = parseNameAddr(m.headers.get('from')!);
    expect(from?.displayName).toBe('Alice, the agent');
    expect(from?.params.get('tag')).toBe('1928301774');
    expect(parseNameAddr(m.headers.get('contact')!)?.params.has('+sip.src')).toBe(true);
    expect(splitList(m.headers.get('record-route')!)).toEqual(['<sip:rr1.example;lr>', '<sip:rr2.example;lr>']);
  });

  it('round-trips through the serializer with a recomputed Content-Length', () => {
    const r = parseMessage(Buffer.from(INVITE));
    if (!r.ok) throw new Error('parse');
    const again = parseMessage(serializeMessage(r.message));
    expect(again.ok && again.message.body.toString()).toBe('v=0\r');
  });

  it('refuses what it cannot trust, answerable when the identifying headers were read', () => {
    const bad = (text: string) => parseMessage(Buffer.from(text));
    const ok = INVITE.split('\r\n');
    expect(bad(ok.map((l, i) => (i === 0 ? 'INVITE sip:x SIP/3.0' : l)).join('\r\n'))).toMatchObject({ ok: false, reason: 'bad-version', status: 505 });
    expect(bad(ok.map((l) => (l.startsWith('l:') ? 'l: 99' : l)).join('\r\n'))).toMatchObject({ ok: false, reason: 'body-truncated' });
    expect(bad(ok.map((l) => (l.startsWith('CSeq') ? 'CSeq: 1 BYE' : l)).join('\r\n'))).toMatchObject({ ok: false, reason: 'bad-cseq' });
    expect(bad(ok.filter((l) => !l.startsWith('i:')).join('\r\n'))).toMatchObject({ ok: false, reason: 'missing-header' });
    const noEnd = bad('OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1');
    expect(noEnd).toMatchObject({ ok: false, reason: 'no-header-end' });
    expect(bad('garbage\r\n\r\n')).toMatchObject({ ok: false, reason: 'bad-start-line' });
    const r = bad(ok.map((l) => (l.startsWith('l:') ? 'l: abc' : l)).join('\r\n'));
    expect(r.ok === false && r.request?.method).toBe('INVITE');
  });

  it('enforces size bounds before looking inside', () => {
    const limits = { ...DEFAULT_SIP_LIMITS, maxMessageBytes: 200 };
    expect(parseMessage(Buffer.from(INVITE + 'x'.repeat(500)), limits)).toMatchObject({ ok: false, reason: 'too-large', status: 513 });
    expect(parseMessage(Buffer.from('OPTIONS sip:x SIP/2.0\r\n' + 'X: y\r\n'.repeat(20000) + '\r\n'))).toMatchObject({ ok: false, reason: 'headers-too-large' });
    expect(parseMessage(Buffer.from(INVITE), { ...DEFAULT_SIP_LIMITS, maxHeaders: 5 })).toMatchObject({ ok: false, reason: 'too-many-headers' });
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        parseMessage(Buffer.from(bytes));
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (s) => {
        parseMessage(Buffer.from(`INVITE sip:x SIP/2.0\r\n${s}\r\n\r\n`));
        parseVia(s);
        parseNameAddr(s);
        parseUri(s);
        splitList(s);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('header readers', () => {
  it('Via with IPv6, rport and received; CSeq bounds; Content-Type params; URIs', () => {
    expect(parseVia('SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKabc;rport')).toMatchObject({ transport: 'TCP', host: '[2001:db8::1]', port: 5070 });
    expect(parseVia('SIP/2.0/UDP host')).toMatchObject({ port: undefined });
    expect(parseVia('SIP/2.0/UDP host:99999')).toBeUndefined();
    expect(parseCSeq('4294967296 INVITE')).toBeUndefined();
    expect(parseCSeq('7 BYE')).toEqual({ seq: 7, method: 'BYE' });
    expect(parseContentType('multipart/mixed;boundary="unique boundary 1"')?.params.get('boundary')).toBe('unique boundary 1');
    expect(parseUri('sip:+46%2070@sbc.example:5061;transport=tls')).toMatchObject({ scheme: 'sip', user: '+46 70', host: 'sbc.example', port: 5061 });
    expect(parseUri('tel:+1-201-555-0123;phone-context=x')).toMatchObject({ scheme: 'tel', user: '+1-201-555-0123' });
  });

  it('server transaction keys follow §17.2.3 (ACK matches its INVITE; RFC 2543 fallback)', () => {
    const r = parseMessage(Buffer.from(INVITE));
    if (!r.ok || r.message.kind !== 'request') throw new Error('parse');
    const via = topVia(r.message)!;
    const key = serverTransactionKey(r.message, via);
    expect(serverTransactionKey({ ...r.message, method: 'ACK' }, via)).toBe(key);
    expect(serverTransactionKey({ ...r.message, method: 'CANCEL' }, via)).not.toBe(key);
    const old = serverTransactionKey(r.message, { ...via, params: new Map([['branch', 'old']]) });
    expect(old.startsWith('2543|')).toBe(true);
  });
});

describe('stream framer (§18.3)', () => {
  const msg = (body: string) => `OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

  it('cuts messages at any chunking, answers double-CRLF pings', () => {
    const stream = Buffer.from('\r\n\r\n' + msg('hello') + msg('') + '\r\n' + msg('world!'));
    for (let chunk = 1; chunk <= stream.length; chunk += 7) {
      const f = new StreamFramer(DEFAULT_SIP_LIMITS);
      const out = [];
      for (let i = 0; i < stream.length; i += chunk) out.push(...f.push(stream.subarray(i, i + chunk)));
      expect(out.filter((o) => o.type === 'message')).toHaveLength(3);
      expect(f.buffered).toBe(0);
    }
    const f = new StreamFramer(DEFAULT_SIP_LIMITS);
    expect(f.push(Buffer.from('\r\n\r\n'))).toEqual([{ type: 'ping' }]);
  });

  it('fails on a missing or oversize Content-Length and on an endless header section', () => {
    const small = { ...DEFAULT_SIP_LIMITS, maxMessageBytes: 100, maxHeaderBytes: 80 };
    expect(new StreamFramer(small).push(Buffer.from('OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n'))[0]).toMatchObject({ type: 'error' });
    expect(new StreamFramer(small).push(Buffer.from('OPTIONS sip:x SIP/2.0\r\nl: 500\r\n\r\n'))[0]).toMatchObject({ type: 'error' });
    expect(new StreamFramer(small).push(Buffer.from('A'.repeat(200)))[0]).toMatchObject({ type: 'error' });
  });
});

describe('timer queue', () => {
  it('runs callbacks in deadline order on one timer, skips cancelled ones', async () => {
    // Every deadline from one instant: on a loaded host the real clock can move more than 10 ms
    // between two calls below, and then "20 ms after" comes after "30 ms after" (a full run saw
    // [1, 3, 2]). The queue then runs on the real clock.
    let frozen: number | undefined = performance.now();
    const q = new TimerQueue(() => frozen ?? performance.now());
    const seen: number[] = [];
    q.after(30, () => seen.push(3));
    q.after(10, () => seen.push(1));
    const h = q.after(20, () => seen.push(99));
    q.after(20, () => seen.push(2));
    frozen = undefined;
    h.cancel();
    await vi.waitFor(() => expect(seen.length).toBeGreaterThanOrEqual(3), { timeout: 5000, interval: 10 });
    await new Promise((r) => setTimeout(r, 30)); // nothing more (the cancelled one) comes
    expect(seen).toEqual([1, 2, 3]);
    q.close();
  });
});
