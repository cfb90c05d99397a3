/**
 * multipart/mixed bodies (RFC 2046 §5.1), as SIPREC INVITEs carry them: an SDP part and an
 * rs-metadata part (RFC 7866 §7.1), in any order, sometimes with extra parts and per-part
 * Content-Length headers. Bounded (parts, boundary length) and strict about what makes the body
 * unreadable (no boundary, no closing delimiter), tolerant about the rest (preamble, epilogue, LF
 * line ends, transport padding after a delimiter).
 */
import { parseContentType } from '../sip/headerValues.ts';
import { SipHeaders } from '../sip/SipMessage.ts';

export interface BodyPart {
  /** Lower-cased type/subtype ('' when the part had no Content-Type: text/plain by RFC 2046, we keep it unknown). */
  readonly mediaType: string;
  readonly headers: SipHeaders;
  readonly body: Buffer;
}

export type MultipartResult = { ok: true; parts: BodyPart[] } | { ok: false; problem: string };

export const MAX_PARTS = 8;

/** RFC 2046 §5.1.1 bchars, 1..70 characters. */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;

export function parseMultipart(body: Buffer, boundary: string | undefined, maxParts = MAX_PARTS): MultipartResult {
  if (boundary === undefined || boundary === '') return { ok: false, problem: 'multipart body without a boundary parameter' };
  if (!BOUNDARY.test(boundary)) return { ok: false, problem: 'multipart boundary is not 1-70 allowed characters (RFC 2046 §5.1.1)' };
  const delim = Buffer.from(`--${boundary}`, 'latin1');
  // Delimiters: at the very start, or after a line break.
  const positions: number[] = [];
  let from = 0;
  for (;;) {
    const at = body.indexOf(delim, from);
    if (at < 0) break;
    if (at === 0 || body[at - 1] === 0x0a) positions.push(at);
    from = at + delim.length;
    if (positions.length > maxParts + 1) return { ok: false, problem: `more than ${maxParts} body parts` };
  }
  if (positions.length === 0) return { ok: false, problem: 'multipart boundary not found in the body' };
  const parts: BodyPart[] = [];
  let closed = false;
  for (let i = 0; i < positions.length; i++) {
    const start = positions[i]! + delim.length;
    if (body[start] === 0x2d && body[start + 1] === 0x2d) {
      closed = true;
      break;
    }
    const next = positions[i + 1];
    if (next === undefined) break;
    // Skip transport padding and the line break after the delimiter.
    let p = start;
    while (p < next && (body[p] === 0x20 || body[p] === 0x09)) p++;
    if (body[p] === 0x0d) p++;
    if (body[p] !== 0x0a) return { ok: false, problem: 'multipart delimiter not followed by a line break' };
    p++;
    // The line break before the next delimiter belongs to the delimiter (§5.1.1).
    let end = next;
    if (body[end - 1] === 0x0a) end--;
    if (body[end - 1] === 0x0d) end--;
    const part = parsePart(body.subarray(p, Math.max(p, end)));
    if (!part.ok) return part;
    parts.push(part.part);
  }
  if (!closed) return { ok: false, problem: 'multipart body has no closing boundary' };
  if (parts.length === 0) return { ok: false, problem: 'multipart body has no parts' };
  return { ok: true, parts };
}

function parsePart(raw: Buffer): { ok: true; part: BodyPart } | { ok: false; problem: string } {
  const headers = new SipHeaders();
  let bodyStart = 0;
  // A part may start directly with a blank line (no headers).
  if (raw[0] === 0x0a || (raw[0] === 0x0d && raw[1] === 0x0a)) {
    bodyStart = raw[0] === 0x0a ? 1 : 2;
  } else {
    const crlf = raw.indexOf('\r\n\r\n', 0, 'latin1');
    const lf = raw.indexOf('\n\n', 0, 'latin1');
    let headEnd: number;
    if (crlf >= 0 && (lf < 0 || crlf <= lf)) {
      headEnd = crlf;
      bodyStart = crlf + 4;
    } else if (lf >= 0) {
      headEnd = lf;
      bodyStart = lf + 2;
    } else {
      // Headers only, no body.
      headEnd = raw.length;
      bodyStart = raw.length;
    }
    if (headEnd > 8192) return { ok: false, problem: 'body part headers exceed 8192 bytes' };
    for (const line of raw.toString('utf8', 0, headEnd).split(/\r?\n/)) {
      if (line.startsWith(' ') || line.startsWith('\t')) continue;
      const colon = line.indexOf(':');
      if (colon <= 0) return { ok: false, problem: 'a body part header line has no name' };
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
  }
  let body = raw.subarray(bodyStart);
  // Per-part Content-Length (some SRCs send it): trust it only to cut, never to extend.
  const cl = headers.get('content-length');
  if (cl !== undefined && /^\d{1,7}$/.test(cl) && Number(cl) < body.length) body = body.subarray(0, Number(cl));
  const ct = headers.get('content-type');
  const mediaType = ct === undefined ? '' : (parseContentType(ct)?.mediaType ?? '');
  return { ok: true, part: { mediaType, headers, body } };
}
