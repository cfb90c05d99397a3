/**
 * Building responses per RFC 3261 §8.2.6: Via (all values, in order), From, To (with our tag on
 * anything but 100, §8.2.6.2), Call-ID and CSeq copied from the request; the status's reason
 * phrase by default.
 */
import { randomBytes } from 'node:crypto';
import { parseNameAddr } from './headerValues.ts';
import { REASON, SipHeaders, makeResponseMessage, type SipRequest, type SipResponse } from './SipMessage.ts';

export interface ResponseOptions {
  readonly reason?: string | undefined;
  readonly toTag?: string | undefined;
  readonly headers?: readonly (readonly [string, string])[] | undefined;
  readonly body?: Buffer | undefined;
  readonly contentType?: string | undefined;
}

export function newTag(): string {
  return randomBytes(8).toString('hex');
}

/** The tag of a From or To value, if any. */
export function tagOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const tag = parseNameAddr(value)?.params.get('tag');
  return tag === undefined || tag === '' ? undefined : tag;
}

/** Reason phrases must stay on one line and within the printable range (§25.1 Reason-Phrase). */
export function safeReason(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ' ').slice(0, 200);
}

export function buildResponse(req: SipRequest, status: number, opts: ResponseOptions = {}): SipResponse {
  const h = new SipHeaders();
  for (const via of req.headers.getAll('via')) h.append('Via', via);
  h.append('From', req.headers.get('from') ?? '');
  let to = req.headers.get('to') ?? '';
  if (status > 100 && tagOf(to) === undefined && opts.toTag) to = `${to};tag=${opts.toTag}`;
  h.append('To', to);
  h.append('Call-ID', req.headers.get('call-id') ?? '');
  h.append('CSeq', req.headers.get('cseq') ?? '');
  for (const [name, value] of opts.headers ?? []) h.append(name, value);
  if (opts.body && opts.body.length > 0 && opts.contentType) h.append('Content-Type', opts.contentType);
  return makeResponseMessage(status, safeReason(opts.reason ?? REASON[status] ?? 'Unknown'), h, opts.body ?? Buffer.alloc(0));
}
