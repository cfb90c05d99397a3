/**
 * Parses one SIP message (RFC 3261 §7) from bytes. Strict and bounded: this is the first code an
 * untrusted packet reaches, so it never throws, never loops on input length more than linearly,
 * and refuses anything over the configured sizes before looking inside.
 *
 * A message that fails is reported with a short reason meant for a 400's reason phrase and a
 * metric label; when the start line was a request and the fields a response needs (§8.2.6: Via,
 * From, To, Call-ID, CSeq) could be read, `request` carries them so the caller can answer 400
 * instead of staying silent.
 */
import { SipHeaders, type SipMessage, type SipRequest } from './SipMessage.ts';

export interface SipLimits {
  /** Whole message, start line to the end of the body. */
  readonly maxMessageBytes: number;
  /** Start line plus header fields. */
  readonly maxHeaderBytes: number;
  /** Header lines (after unfolding). */
  readonly maxHeaders: number;
}

export const DEFAULT_SIP_LIMITS: SipLimits = { maxMessageBytes: 65_535, maxHeaderBytes: 32_768, maxHeaders: 128 };

export type ParseFailure =
  | 'too-large'
  | 'no-header-end'
  | 'headers-too-large'
  | 'bad-start-line'
  | 'bad-version'
  | 'bad-header'
  | 'too-many-headers'
  | 'missing-header'
  | 'bad-cseq'
  | 'bad-content-length'
  | 'body-truncated';

export type ParseResult =
  | { ok: true; message: SipMessage }
  | { ok: false; reason: ParseFailure; detail: string; request?: SipRequest; status?: number };

/** §25.1 token characters (method names, header names). */
const TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]+$/;
const REQUEST_LINE = /^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) (SIP\/\d+\.\d+)$/;
const STATUS_LINE = /^(SIP\/\d+\.\d+) ([1-6]\d\d) ?(.*)$/;
const CSEQ = /^(\d{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)$/;
const DIGITS = /^\d{1,10}$/;

/** Fields that may appear once only (§20: not list-valued); a second copy makes the message ambiguous. */
const SINGLE = ['from', 'to', 'call-id', 'cseq', 'max-forwards', 'content-type'] as const;

/** The fields every request must carry (§8.1.1); Max-Forwards is tolerated when missing. */
const REQUIRED = ['via', 'from', 'to', 'call-id', 'cseq'] as const;

function fail(reason: ParseFailure, detail: string, extra: { request?: SipRequest; status?: number } = {}): ParseResult {
  return { ok: false, reason, detail, ...extra };
}

/** Finds the blank line ending the header section: CRLFCRLF, or LFLF from lenient senders. */
export function findHeaderEnd(buf: Buffer, from = 0, limit = buf.length): { end: number; bodyStart: number } | undefined {
  const crlf = buf.indexOf('\r\n\r\n', from, 'latin1');
  const lf = buf.indexOf('\n\n', from, 'latin1');
  const candidates: { end: number; bodyStart: number }[] = [];
  if (crlf >= 0 && crlf < limit) candidates.push({ end: crlf, bodyStart: crlf + 4 });
  if (lf >= 0 && lf < limit) candidates.push({ end: lf, bodyStart: lf + 2 });
  if (candidates.length === 0) return undefined;
  return candidates.reduce((a, b) => (a.end <= b.end ? a : b));
}

/**
 * Parses a whole message. `stream` says the bytes came framed from TCP/TLS (then Content-Length
 * was already used to cut the body, §18.3); for UDP a Content-Length shorter than the datagram
 * trims the body and a longer one is an error.
 */
export function parseMessage(buf: Buffer, limits: SipLimits = DEFAULT_SIP_LIMITS): ParseResult {
  // Over the message bound: the headers are still read (they are bounded on their own) so the
  // sender can be told 513 (§21.5.14); the body is never looked at.
  const tooLarge = buf.length > limits.maxMessageBytes;
  // Leading CRLFs before a start line are ignored (§7.5).
  let start = 0;
  while (start < buf.length && (buf[start] === 0x0d || buf[start] === 0x0a)) start++;
  const headerEnd = findHeaderEnd(buf, start, Math.min(buf.length, start + limits.maxHeaderBytes + 4));
  if (!headerEnd) {
    if (buf.length - start > limits.maxHeaderBytes) return fail('headers-too-large', `header section exceeds ${limits.maxHeaderBytes} bytes`, { status: 513 });
    return fail('no-header-end', 'no blank line after the header fields');
  }
  if (headerEnd.end - start > limits.maxHeaderBytes) return fail('headers-too-large', `header section exceeds ${limits.maxHeaderBytes} bytes`, { status: 513 });

  const text = buf.toString('utf8', start, headerEnd.end);
  const rawLines = text.split(/\r?\n/);
  const startLine = rawLines[0] ?? '';

  // Unfold continuation lines (§7.3.1: a line starting with SP or HT continues the previous one).
  // Past maxHeaders the rest is ignored; the message fails, answered 400 if it can be.
  const lines: string[] = [];
  let tooMany = false;
  for (let i = 1; i < rawLines.length; i++) {
    const line = rawLines[i]!;
    if ((line.startsWith(' ') || line.startsWith('\t')) && lines.length > 0) lines[lines.length - 1] += ' ' + line.trim();
    else if (lines.length >= limits.maxHeaders) {
      tooMany = true;
      break;
    } else lines.push(line);
  }

  const headers = new SipHeaders();
  let badHeader: string | undefined;
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon).trimEnd() : '';
    if (colon <= 0 || !TOKEN.test(name)) {
      badHeader ??= 'a header line has no valid name';
      continue;
    }
    headers.append(name, line.slice(colon + 1).trim());
  }

  const req = REQUEST_LINE.exec(startLine);
  const res = req ? null : STATUS_LINE.exec(startLine);
  if (!req && !res) return fail('bad-start-line', 'the start line is neither a request line nor a status line');

  const body = buf.subarray(headerEnd.bodyStart);
  const bodyCheck = checkContentLength(headers, body);

  if (req) {
    const [, method, uri, version] = req as unknown as [string, string, string, string];
    const request: SipRequest = { kind: 'request', method, uri, headers, body: bodyCheck.ok ? bodyCheck.body : Buffer.alloc(0) };
    const respondable = REQUIRED.every((h) => headers.has(h)) ? request : undefined;
    const extra = respondable ? { request: respondable } : {};
    if (tooLarge) return fail('too-large', `message of ${buf.length} bytes exceeds ${limits.maxMessageBytes}`, { ...extra, status: 513 });
    if (tooMany) return fail('too-many-headers', `more than ${limits.maxHeaders} header fields`, extra);
    if (version.toUpperCase() !== 'SIP/2.0') return fail('bad-version', `version ${version} is not SIP/2.0`, { ...extra, status: 505 });
    if (badHeader) return fail('bad-header', badHeader, extra);
    for (const h of REQUIRED) if (!headers.has(h)) return fail('missing-header', `the ${h} header is missing`, extra);
    for (const h of SINGLE) if (headers.getAll(h).length > 1) return fail('bad-header', `the ${h} header appears more than once`, extra);
    const cseq = CSEQ.exec(headers.get('cseq') ?? '');
    if (!cseq) return fail('bad-cseq', 'CSeq must be a number and a method', extra);
    // §8.1.1.5: the CSeq method matches the request's (ACK and CANCEL carry their own, §17.1.1.3, §9.1).
    if (cseq[2] !== method) return fail('bad-cseq', 'the CSeq method differs from the request method', extra);
    if (!bodyCheck.ok) return fail(bodyCheck.reason, bodyCheck.detail, extra);
    return { ok: true, message: request };
  }

  const [, version, code, reason] = res as unknown as [string, string, string, string];
  if (tooLarge) return fail('too-large', `message of ${buf.length} bytes exceeds ${limits.maxMessageBytes}`);
  if (tooMany) return fail('too-many-headers', `more than ${limits.maxHeaders} header fields`);
  if (version.toUpperCase() !== 'SIP/2.0') return fail('bad-version', `version ${version} is not SIP/2.0`);
  if (badHeader) return fail('bad-header', badHeader);
  if (!bodyCheck.ok) return fail(bodyCheck.reason, bodyCheck.detail);
  if (!CSEQ.test(headers.get('cseq') ?? '') || !headers.has('via') || !headers.has('call-id')) return fail('missing-header', 'a response needs Via, Call-ID and CSeq');
  return { ok: true, message: { kind: 'response', status: Number(code), reason, headers, body: bodyCheck.body } };
}

type BodyCheck = { ok: true; body: Buffer } | { ok: false; reason: 'bad-content-length' | 'body-truncated'; detail: string };

/** §18.3 / §20.14: Content-Length cuts a datagram's body; more bytes declared than present is an error. */
function checkContentLength(headers: SipHeaders, body: Buffer): BodyCheck {
  const all = headers.getAll('content-length');
  if (all.length === 0) return { ok: true, body };
  if (all.length > 1 && new Set(all).size > 1) return { ok: false, reason: 'bad-content-length', detail: 'Content-Length given twice with different values' };
  const v = all[0]!;
  if (!DIGITS.test(v)) return { ok: false, reason: 'bad-content-length', detail: 'Content-Length is not a number' };
  const n = Number(v);
  if (n > body.length) return { ok: false, reason: 'body-truncated', detail: `Content-Length ${n} but ${body.length} body bytes` };
  return { ok: true, body: body.subarray(0, n) };
}
