/**
 * How a recording session and its participants become the control plane's call and participant
 * ids (docs/siprec.md, "Mapping"). The SRC knows the call by its own identifiers (an original
 * Call-ID copied into a header, an Avaya UCID, a session id in the metadata); the IVR that posts
 * facts to the control plane knows the same call by one of them. A rule says where to read the
 * value and how to turn it into an id ([A-Za-z0-9_-]{1,64}); rules are tried in order and the
 * first that yields a value wins.
 *
 * AoRs and phone numbers are personal data: rules that read them should hash them
 * (`hmac-sha256` with a key shared with the IVR; plain `sha256` of a phone number can be reversed
 * by trying every number), and nothing here logs a raw value.
 */
import { createHash, createHmac } from 'node:crypto';
import { z } from 'zod';
import { ID_PATTERN, isId, personalLook } from '../ids/ids.ts';
import { parseUri } from '../sip/headerValues.ts';
import type { SipRequest } from '../sip/SipMessage.ts';
import type { RsMetadata, RsParticipant, RsStream } from './rsMetadata.ts';

const transform = z.enum(['verbatim', 'sanitize', 'sha256', 'hmac-sha256']);
const prefix = z.string().regex(/^[A-Za-z0-9_-]{0,16}$/, 'must match [A-Za-z0-9_-]{0,16}');
const pattern = z
  .string()
  .max(200)
  .refine((p) => {
    try {
      new RegExp(p);
      return true;
    } catch {
      return false;
    }
  }, 'must be a valid regular expression');

/** Where a call id comes from. */
export const CallIdRuleSchema = z.object({
  from: z.enum(['header', 'sip-call-id', 'request-uri-user', 'metadata-session-id', 'metadata-sip-session-id', 'metadata-extension', 'ucid']),
  /** Header name (`header`, `ucid`) or extension element local name (`metadata-extension`, `ucid`). */
  name: z.string().max(64).optional(),
  /** Applied to the raw value; the named group `id` or else the first group is kept. */
  pattern: pattern.optional(),
  transform: transform.default('verbatim'),
  prefix: prefix.default(''),
});

/** Where a participant id comes from (SIPREC: per metadata participant; plain legs: per request). */
export const ParticipantIdRuleSchema = z.object({
  from: z.enum(['aor-user', 'metadata-participant-id', 'metadata-extension', 'stream-label', 'position', 'header', 'request-uri-user']),
  name: z.string().max(64).optional(),
  pattern: pattern.optional(),
  transform: transform.default('verbatim'),
  prefix: prefix.default(''),
});

export type CallIdRule = z.infer<typeof CallIdRuleSchema>;
export type ParticipantIdRule = z.infer<typeof ParticipantIdRuleSchema>;

export const MappingSchema = z.object({
  /** SIPREC sessions. */
  siprec: z
    .object({
      call: z.array(CallIdRuleSchema).min(1).default([
        { from: 'header', name: 'X-Optin-Call-Id', transform: 'verbatim', prefix: '' },
        { from: 'sip-call-id', transform: 'sha256', prefix: 'sip-' },
      ]),
      participant: z.array(ParticipantIdRuleSchema).min(1).default([{ from: 'aor-user', transform: 'sha256', prefix: 'p-' }]),
    })
    .prefault({}),
  /** Plain SIP recording legs (one stream; RFC 3261 INVITE to a recording URI). */
  plain: z
    .object({
      call: z.array(CallIdRuleSchema).min(1).default([
        { from: 'header', name: 'X-Optin-Call-Id', transform: 'verbatim', prefix: '' },
        { from: 'request-uri-user', pattern: '^rec\\.(?<id>[A-Za-z0-9_-]{1,64})\\.[A-Za-z0-9_-]{1,64}$', transform: 'verbatim', prefix: '' },
      ]),
      participant: z.array(ParticipantIdRuleSchema).min(1).default([
        { from: 'header', name: 'X-Optin-Participant-Id', transform: 'verbatim', prefix: '' },
        { from: 'request-uri-user', pattern: '^rec\\.[A-Za-z0-9_-]{1,64}\\.(?<id>[A-Za-z0-9_-]{1,64})$', transform: 'verbatim', prefix: '' },
      ]),
    })
    .prefault({}),
  /** Key for `hmac-sha256` rules, shared with the IVR (at least 32 characters). */
  key: z.string().min(32, 'must be at least 32 characters').optional(),
});

export type MappingConfig = z.infer<typeof MappingSchema>;

export type Resolved = { ok: true; id: string; rule: number } | { ok: false; problem: string };

/** Turns a raw value into an id under a rule; undefined when the value does not fit. */
export function toId(raw: string, rule: { pattern?: string | undefined; transform: z.infer<typeof transform>; prefix: string }, key?: string): string | undefined {
  return mapValue(raw, rule, key).id;
}

function mapValue(raw: string, rule: { pattern?: string | undefined; transform: z.infer<typeof transform>; prefix: string }, key?: string): { id?: string; personal: boolean } {
  let value = raw.trim();
  if (rule.pattern !== undefined) {
    const m = new RegExp(rule.pattern).exec(value);
    if (!m) return { personal: false };
    value = m.groups?.id ?? m[1] ?? m[0];
  }
  if (value === '') return { personal: false };
  let id: string;
  switch (rule.transform) {
    case 'verbatim':
      id = rule.prefix + value;
      break;
    case 'sanitize':
      id = (rule.prefix + value.replace(/[^A-Za-z0-9_-]/g, '_')).slice(0, 64);
      break;
    case 'sha256':
      id = rule.prefix + createHash('sha256').update(value).digest('base64url').slice(0, 22);
      break;
    case 'hmac-sha256':
      if (key === undefined) return { personal: false };
      id = rule.prefix + createHmac('sha256', key).update(value).digest('base64url').slice(0, 22);
      break;
  }
  // A pseudonymous id only: a verbatim phone number or e-mail address (an AoR user part, a
  // numeric label) is refused here, so it never becomes an object name (docs/rules.md, "Ids").
  if (isId(id)) return { id, personal: false };
  // Say so when the value was a phone number (an AoR user part); a SIP Call-ID looks like an
  // e-mail address by its form (local@host) and is simply not an id.
  const look = personalLook(id);
  return { personal: look === 'phone-number' || (look !== undefined && ID_PATTERN.test(id)) };
}

/**
 * An Avaya Universal Call ID in its canonical 20-digit form (5-digit network node, 5-digit
 * sequence, 10-digit timestamp), from any of the encodings SRCs use: the decimal form itself;
 * 16 hex digits (the 8 binary bytes); or User-to-User data in hex where the UCID element is
 * `FA08` + 8 bytes (often after a `00` protocol discriminator, with `;encoding=hex`).
 */
export function normalizeUcid(raw: string): string | undefined {
  const v = raw.split(';')[0]!.replace(/\s+/g, '');
  if (/^\d{20}$/.test(v)) return v;
  let hex: string | undefined;
  if (/^[0-9A-Fa-f]{16}$/.test(v)) hex = v;
  else hex = /(?:^|00)FA08([0-9A-F]{16})/i.exec(v)?.[1];
  if (hex === undefined) return undefined;
  const b = Buffer.from(hex, 'hex');
  const node = b.readUInt16BE(0);
  const seq = b.readUInt16BE(2);
  const ts = b.readUInt32BE(4);
  return `${String(node).padStart(5, '0')}${String(seq).padStart(5, '0')}${String(ts).padStart(10, '0')}`;
}

const UCID_HEADERS = ['X-UCID', 'User-to-User', 'X-User-to-User'];

function firstExt(ext: Map<string, string[]>, name: string | undefined): string | undefined {
  return name === undefined ? undefined : ext.get(name.toLowerCase())?.[0];
}

function rawCallValue(rule: CallIdRule, req: SipRequest, md: RsMetadata | undefined): string | undefined {
  switch (rule.from) {
    case 'header':
      return rule.name === undefined ? undefined : req.headers.get(rule.name);
    case 'sip-call-id':
      return req.headers.get('call-id');
    case 'request-uri-user':
      return parseUri(req.uri)?.user;
    case 'metadata-session-id':
      return md?.sessions[0]?.id;
    case 'metadata-sip-session-id':
      return md?.sessions[0]?.sipSessionIds[0];
    case 'metadata-extension':
      return md ? firstExt(md.ext, rule.name) : undefined;
    case 'ucid': {
      const candidates: (string | undefined)[] = [];
      if (rule.name !== undefined) candidates.push(req.headers.get(rule.name), md ? firstExt(md.ext, rule.name) : undefined);
      else {
        if (md) candidates.push(firstExt(md.ext, 'ucid'));
        for (const h of UCID_HEADERS) candidates.push(req.headers.get(h));
      }
      for (const c of candidates) {
        const u = c === undefined ? undefined : normalizeUcid(c);
        if (u !== undefined) return u;
      }
      return undefined;
    }
  }
}

/** True when `raw` through `rule` gives a well-formed id that is refused only for looking like personal data. */
function personalIdRefused(raw: string, rule: { pattern?: string | undefined; transform: z.infer<typeof transform>; prefix: string }, key?: string): boolean {
  return mapValue(raw, rule, key).personal;
}

function personalProblem(what: 'call' | 'participant', rule: number): string {
  return (
    `no ${what} id: mapping rule ${rule} found a value that looks like a phone number or an e-mail address (not shown), ` +
    'which must never become an id: use transform "hmac-sha256" (or a prefix, for a numeric reference that is not a phone number) (docs/rules.md, "Ids")'
  );
}

export function resolveCallId(rules: readonly CallIdRule[], req: SipRequest, md: RsMetadata | undefined, key?: string): Resolved {
  let personal: number | undefined;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const raw = rawCallValue(rule, req, md);
    if (raw === undefined) continue;
    const id = toId(raw, rule, key);
    if (id !== undefined) return { ok: true, id, rule: i };
    if (personalIdRefused(raw, rule, key)) personal = i;
  }
  if (personal !== undefined) return { ok: false, problem: personalProblem('call', personal) };
  return { ok: false, problem: `no call id: none of the ${rules.length} mapping rule(s) (${rules.map((r) => r.from + (r.name ? `:${r.name}` : '')).join(', ')}) found a value` };
}

/** The user part of an AoR, without visual separators: `sip:+46 70-123@x` → `+4670123`. */
export function aorUser(aor: string): string | undefined {
  const uri = parseUri(aor.trim());
  const user = uri?.user ?? (/^[+\d][\d\s().-]*$/.test(aor.trim()) ? aor.trim() : undefined);
  if (user === undefined) return undefined;
  const digits = user.replace(/[\s().-]/g, '');
  return digits === '' ? undefined : digits;
}

export interface ParticipantContext {
  readonly participant: RsParticipant | undefined;
  readonly stream: RsStream | undefined;
  /** 0-based position of the stream's m-line among the audio m-lines. */
  readonly position: number;
  readonly request: SipRequest;
}

function rawParticipantValue(rule: ParticipantIdRule, ctx: ParticipantContext): string | undefined {
  switch (rule.from) {
    case 'aor-user':
      return ctx.participant?.aor === undefined ? undefined : aorUser(ctx.participant.aor);
    case 'metadata-participant-id':
      return ctx.participant?.id;
    case 'metadata-extension':
      return ctx.participant ? firstExt(ctx.participant.ext, rule.name) : undefined;
    case 'stream-label':
      return ctx.stream?.label;
    case 'position':
      return String(ctx.position + 1);
    case 'header':
      return rule.name === undefined ? undefined : ctx.request.headers.get(rule.name);
    case 'request-uri-user':
      return parseUri(ctx.request.uri)?.user;
  }
}

export function resolveParticipantId(rules: readonly ParticipantIdRule[], ctx: ParticipantContext, key?: string): Resolved {
  let personal: number | undefined;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const raw = rawParticipantValue(rule, ctx);
    if (raw === undefined) continue;
    const id = toId(raw, rule, key);
    if (id !== undefined) return { ok: true, id, rule: i };
    if (personalIdRefused(raw, rule, key)) personal = i;
  }
  if (personal !== undefined) return { ok: false, problem: personalProblem('participant', personal) };
  return { ok: false, problem: `no participant id: none of the ${rules.length} participant rule(s) (${rules.map((r) => r.from).join(', ')}) found a value` };
}
