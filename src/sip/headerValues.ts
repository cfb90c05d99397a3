/**
 * Readers for the structured header values the user-agent server needs (RFC 3261 §20, grammar
 * in §25.1): Via, name-addr fields (From, To, Contact, Record-Route, Route), CSeq, Content-Type,
 * option tags, and SIP URIs. Each returns `undefined` for a value it cannot read, never throws:
 * the caller decides between 400 and tolerance.
 */

/** Splits a header value at top-level commas (not inside quotes or <...>), §7.3.1. */
export function splitList(value: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (quoted) {
      cur += ch;
      if (ch === '\\' && i + 1 < value.length) cur += value[++i]!;
      else if (ch === '"') quoted = false;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === '<') depth++;
    else if (ch === '>') depth = Math.max(0, depth - 1);
    else if (ch === ',' && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/** Every value of a list header across all its lines (e.g. Via, Record-Route, Require). */
export function listValues(lines: readonly string[]): string[] {
  return lines.flatMap(splitList);
}

/** `;a=b;c` → Map (names lower-cased; a flag parameter maps to ''). Quoted values unquoted. */
export function parseParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of splitOutsideQuotes(text, ';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) params.set(p.toLowerCase(), '');
    else params.set(p.slice(0, eq).trim().toLowerCase(), unquote(p.slice(eq + 1).trim()));
  }
  return params;
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let quoted = false;
  let cur = '';
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (ch === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

export function unquote(v: string): string {
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) return v.slice(1, -1).replace(/\\(.)/g, '$1');
  return v;
}

export interface Via {
  readonly transport: string;
  readonly host: string;
  readonly port: number | undefined;
  readonly params: Map<string, string>;
}

const VIA = /^SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;]+)(?:\s*:\s*(\d{1,5}))?\s*(;.*)?$/;

export function parseVia(value: string): Via | undefined {
  const m = VIA.exec(value.trim());
  if (!m) return undefined;
  const port = m[3] === undefined ? undefined : Number(m[3]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { transport: m[1]!.toUpperCase(), host: m[2]!, port, params: parseParams(m[4] ?? '') };
}

export interface NameAddr {
  /** The URI inside <...>, or the bare addr-spec. */
  readonly uri: string;
  /** The display name; personal data: never log it. */
  readonly displayName: string | undefined;
  /** Header parameters (after the URI), e.g. `tag`, `+sip.src`, `expires`. */
  readonly params: Map<string, string>;
}

/** name-addr / addr-spec with header parameters (§20.10, §20.20, §20.39). */
export function parseNameAddr(value: string): NameAddr | undefined {
  const v = value.trim();
  const lt = findUnquoted(v, '<');
  if (lt >= 0) {
    const gt = v.indexOf('>', lt);
    if (gt < 0) return undefined;
    const uri = v.slice(lt + 1, gt).trim();
    if (!uri) return undefined;
    const display = v.slice(0, lt).trim();
    return { uri, displayName: display ? unquote(display) : undefined, params: parseParams(v.slice(gt + 1).replace(/^\s*;/, '')) };
  }
  // addr-spec without brackets: parameters after the first ';' are header parameters (§20.10).
  const semi = v.indexOf(';');
  const uri = (semi < 0 ? v : v.slice(0, semi)).trim();
  if (!uri || /\s/.test(uri)) return undefined;
  return { uri, displayName: undefined, params: parseParams(semi < 0 ? '' : v.slice(semi + 1)) };
}

function findUnquoted(v: string, ch: string): number {
  let quoted = false;
  for (let i = 0; i < v.length; i++) {
    if (v[i] === '"' && v[i - 1] !== '\\') quoted = !quoted;
    else if (!quoted && v[i] === ch) return i;
  }
  return -1;
}

export interface CSeq {
  readonly seq: number;
  readonly method: string;
}

export function parseCSeq(value: string): CSeq | undefined {
  const m = /^(\d{1,10})\s+(\S+)$/.exec(value.trim());
  if (!m) return undefined;
  const seq = Number(m[1]);
  // §8.1.1.5: the number MUST be expressible as a 32-bit unsigned integer.
  if (seq > 0xffffffff) return undefined;
  return { seq, method: m[2]! };
}

export interface ContentType {
  /** Lower-cased `type/subtype`. */
  readonly mediaType: string;
  readonly params: Map<string, string>;
}

export function parseContentType(value: string): ContentType | undefined {
  const semi = value.indexOf(';');
  const mediaType = (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(mediaType)) return undefined;
  return { mediaType, params: parseParams(semi < 0 ? '' : value.slice(semi + 1)) };
}

/** Option tags of Require / Supported / Proxy-Require, lower-cased. */
export function optionTags(lines: readonly string[]): string[] {
  return listValues(lines).map((t) => t.toLowerCase());
}

export interface SipUri {
  readonly scheme: 'sip' | 'sips' | 'tel';
  /** The user part, unescaped; personal data (numbers, names): never log it. */
  readonly user: string | undefined;
  readonly host: string;
  readonly port: number | undefined;
  readonly params: Map<string, string>;
}

const SIP_URI = /^(sips?):(?:([^@;?]+)@)?(\[[0-9A-Fa-f:.]+\]|[^:;?]+)(?::(\d{1,5}))?(;[^?]*)?(\?.*)?$/i;

export function parseUri(uri: string): SipUri | undefined {
  const t = uri.trim();
  if (/^tel:/i.test(t)) {
    const rest = t.slice(4);
    const semi = rest.indexOf(';');
    return { scheme: 'tel', user: decodeSafe(semi < 0 ? rest : rest.slice(0, semi)), host: '', port: undefined, params: parseParams(semi < 0 ? '' : rest.slice(semi + 1)) };
  }
  const m = SIP_URI.exec(t);
  if (!m) return undefined;
  const port = m[4] === undefined ? undefined : Number(m[4]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  // A password in the userinfo (user:password@) is deprecated (§19.1.1) and dropped here.
  const user = m[2] === undefined ? undefined : decodeSafe(m[2].split(':')[0]!);
  return { scheme: m[1]!.toLowerCase() as 'sip' | 'sips', user, host: m[3]!, port, params: parseParams(m[5] ?? '') };
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Host without IPv6 brackets, for socket calls. */
export function bareHost(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}
