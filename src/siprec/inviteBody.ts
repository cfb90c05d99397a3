/**
 * What an INVITE, re-INVITE or UPDATE carries: an SDP offer, rs-metadata, both (multipart/mixed,
 * RFC 7866 §7.1, parts in any order, extra parts ignored), or nothing; and whether it is a SIPREC
 * session at all (RFC 7866 §6.1.1: `Require: siprec` and the `+sip.src` Contact feature tag; we
 * require neither, since SRCs differ: metadata in the body is enough).
 */
import { listValues, optionTags, parseContentType, parseNameAddr } from '../sip/headerValues.ts';
import type { SipRequest } from '../sip/SipMessage.ts';
import { parseMultipart } from './multipart.ts';

export const SDP_TYPE = 'application/sdp';
export const METADATA_TYPES = new Set(['application/rs-metadata+xml', 'application/rs-metadata']);

export interface InviteBody {
  readonly sdp: string | undefined;
  readonly metadata: Buffer | undefined;
  readonly siprec: boolean;
}

export type InviteBodyResult = { ok: true; body: InviteBody } | { ok: false; status: number; problem: string };

/** Contact feature tags: `+sip.src` as RFC 7866 spells it, and the variants seen in the field. */
function hasSrcFeature(req: SipRequest): boolean {
  for (const c of listValues(req.headers.getAll('contact'))) {
    const na = parseNameAddr(c);
    if (!na) continue;
    for (const k of na.params.keys()) if (k === '+sip.src' || k === 'sip.src' || k === '+sip-src' || k === 'src') return true;
  }
  return false;
}

export function readInviteBody(req: SipRequest): InviteBodyResult {
  const tags = optionTags([...req.headers.getAll('require'), ...req.headers.getAll('supported')]);
  let siprec = tags.includes('siprec') || hasSrcFeature(req);
  if (req.body.length === 0) return { ok: true, body: { sdp: undefined, metadata: undefined, siprec } };
  const ctHeader = req.headers.get('content-type');
  const ct = ctHeader === undefined ? undefined : parseContentType(ctHeader);
  if (!ct) return { ok: false, status: 400, problem: 'body without a readable Content-Type' };
  if (ct.mediaType === SDP_TYPE) return { ok: true, body: { sdp: req.body.toString('utf8'), metadata: undefined, siprec } };
  if (METADATA_TYPES.has(ct.mediaType)) return { ok: true, body: { sdp: undefined, metadata: req.body, siprec: true } };
  if (ct.mediaType !== 'multipart/mixed') return { ok: false, status: 415, problem: `body type ${ct.mediaType} is not SDP, rs-metadata or multipart/mixed` };
  const mp = parseMultipart(req.body, ct.params.get('boundary'));
  if (!mp.ok) return { ok: false, status: 400, problem: mp.problem };
  const sdpParts = mp.parts.filter((p) => p.mediaType === SDP_TYPE);
  const mdParts = mp.parts.filter((p) => METADATA_TYPES.has(p.mediaType));
  if (sdpParts.length > 1) return { ok: false, status: 400, problem: 'multipart body has more than one SDP part' };
  if (mdParts.length > 1) return { ok: false, status: 400, problem: 'multipart body has more than one rs-metadata part' };
  if (mdParts.length === 1) siprec = true;
  return { ok: true, body: { sdp: sdpParts[0]?.body.toString('utf8'), metadata: mdParts[0]?.body, siprec } };
}
