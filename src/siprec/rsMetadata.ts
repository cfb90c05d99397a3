/**
 * Recording metadata (RFC 7865 §6, the XML of RFC 7865 §9) as SRCs actually send it:
 *
 * - the RFC's namespace `urn:ietf:params:xml:ns:recording:1`, the older draft's
 *   `urn:ietf:params:xml:ns:recording`, or none; prefixed or not;
 * - the RFC's association elements (`participantstreamassoc` with `send`/`recv`,
 *   `participantsessionassoc`) or the draft's `send`/`recv` inside `participant` and
 *   `id`/`session` attributes;
 * - vendor extension elements whose prefix is never declared: element and attribute names are
 *   reduced to their local part, lower-cased, so a strictly namespace-aware reading that would
 *   reject the whole document never happens;
 * - stream labels kept as strings (numbers, 20-digit integers, names);
 * - times (`associate-time`, `start-time`...) are NOT read: they often lack a time zone, and
 *   timing comes from packet arrival, never from metadata.
 *
 * Refused before any parsing: a DOCTYPE or ENTITY declaration (entity expansion and external
 * entities), oversize documents, too many elements. fast-xml-parser never fetches anything and,
 * without a DOCTYPE, expands only the five predefined entities.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';

export const RECORDING_NS = 'urn:ietf:params:xml:ns:recording:1';
export const RECORDING_NS_DRAFT = 'urn:ietf:params:xml:ns:recording';

export type MetadataNamespace = 'rfc7865' | 'draft' | 'none';

export interface RsSession {
  readonly id: string;
  readonly sipSessionIds: string[];
  /** Extension leaves inside the session, by lower-cased local name. */
  readonly ext: Map<string, string[]>;
}

export interface RsParticipant {
  readonly id: string;
  /** The AoR: personal data (a phone number, a name); use only through the mapping rule. */
  aor: string | undefined;
  /** Stream ids this participant sends (its voice). */
  sends: string[];
  recvs: string[];
  /** A `participantsessionassoc` with a `disassociate-time`: the participant left. */
  left: boolean;
  readonly order: number;
  readonly ext: Map<string, string[]>;
}

export interface RsStream {
  readonly id: string;
  label: string | undefined;
  sessionId: string | undefined;
  readonly order: number;
}

export interface RsMetadata {
  readonly namespace: MetadataNamespace;
  readonly dataMode: 'complete' | 'partial';
  readonly sessions: RsSession[];
  readonly participants: RsParticipant[];
  readonly streams: RsStream[];
  /** Every extension leaf in the document (any depth), by lower-cased local name. */
  readonly ext: Map<string, string[]>;
}

export type MetadataResult = { ok: true; metadata: RsMetadata } | { ok: false; problem: string };

export interface MetadataLimits {
  readonly maxBytes: number;
  readonly maxElements: number;
  readonly maxDepth: number;
}

export const DEFAULT_METADATA_LIMITS: MetadataLimits = { maxBytes: 32_768, maxElements: 2_000, maxDepth: 16 };

interface XNode {
  readonly name: string;
  readonly attrs: Record<string, string>;
  readonly children: XNode[];
  text: string;
}

/** Elements of the RFC 7865 / draft schema; anything else under them is extension data. */
const KNOWN = new Set([
  'recording', 'datamode', 'group', 'session', 'participant', 'stream', 'sipsessionid', 'group-ref', 'start-time', 'stop-time',
  'associate-time', 'disassociate-time', 'nameid', 'name', 'aor', 'label', 'content-type', 'mode', 'send', 'recv',
  'sessionrecordingassoc', 'participantsessionassoc', 'participantstreamassoc',
]);

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  removeNSPrefix: true,
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: true,
  htmlEntities: false,
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  commentPropName: false,
});

/** Parses an rs-metadata document; a problem is a short sentence for a 4xx reason phrase. */
export function parseRsMetadata(raw: Buffer | string, limits: MetadataLimits = DEFAULT_METADATA_LIMITS): MetadataResult {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (size > limits.maxBytes) return { ok: false, problem: `metadata of ${size} bytes exceeds ${limits.maxBytes}` };
  const text = typeof raw === 'string' ? raw : raw.toString('utf8');
  // Before anything reads the document: no DTD, no entity declarations, no other markup declarations.
  if (/<!DOCTYPE/i.test(text)) return { ok: false, problem: 'metadata has a DOCTYPE declaration (refused)' };
  if (/<!ENTITY/i.test(text)) return { ok: false, problem: 'metadata has an ENTITY declaration (refused)' };
  if (/<!(?!--|\[CDATA\[)/.test(text)) return { ok: false, problem: 'metadata has a markup declaration (refused)' };
  // Element count bound before the parser builds a tree.
  let elements = 0;
  for (let i = text.indexOf('<'); i >= 0; i = text.indexOf('<', i + 1)) if (++elements > limits.maxElements * 2) break;
  if (elements > limits.maxElements * 2) return { ok: false, problem: `metadata has more than ${limits.maxElements} elements` };

  const valid = XMLValidator.validate(text);
  if (valid !== true) return { ok: false, problem: `metadata is not well-formed XML: ${valid.err.msg.slice(0, 120)} (line ${valid.err.line})` };
  let tree: unknown;
  try {
    tree = parser.parse(text);
  } catch (err) {
    return { ok: false, problem: `metadata is not well-formed XML: ${(err as Error).message.slice(0, 120)}` };
  }
  const roots = toNodes(tree, 0, limits.maxDepth);
  if (roots === 'too-deep') return { ok: false, problem: `metadata nests deeper than ${limits.maxDepth} levels` };
  const root = roots.find((n) => n.name !== '#comment');
  if (!root || root.name !== 'recording') return { ok: false, problem: 'metadata root element is not <recording>' };

  const namespace = rootNamespace(text);
  if (namespace === 'unknown') return { ok: false, problem: `metadata namespace is neither ${RECORDING_NS} nor ${RECORDING_NS_DRAFT}` };

  const model: RsMetadata = { namespace, dataMode: 'complete', sessions: [], participants: [], streams: [], ext: new Map() };
  let dataMode: 'complete' | 'partial' = 'complete';
  const participantsById = new Map<string, RsParticipant>();
  const streamsById = new Map<string, RsStream>();
  const participantOf = (id: string): RsParticipant => {
    let p = participantsById.get(id);
    if (!p) {
      p = { id, aor: undefined, sends: [], recvs: [], left: false, order: participantsById.size, ext: new Map() };
      participantsById.set(id, p);
    }
    return p;
  };

  for (const el of root.children) {
    switch (el.name) {
      case 'datamode':
        if (el.text.toLowerCase() === 'partial') dataMode = 'partial';
        break;
      case 'session': {
        const id = attr(el, 'session_id', 'id');
        if (id === undefined) return { ok: false, problem: 'a <session> has no session_id' };
        const ext = new Map<string, string[]>();
        collectExtensions(el, ext, model.ext);
        model.sessions.push({ id, sipSessionIds: el.children.filter((c) => c.name === 'sipsessionid').map((c) => c.text), ext });
        break;
      }
      case 'participant': {
        const id = attr(el, 'participant_id', 'id');
        if (id === undefined) return { ok: false, problem: 'a <participant> has no participant_id' };
        const p = participantOf(id);
        const nameId = el.children.find((c) => c.name === 'nameid');
        const aor = nameId?.attrs.aor ?? el.children.find((c) => c.name === 'aor')?.text ?? nameId?.children.find((c) => c.name === 'aor')?.text;
        if (aor) p.aor = aor;
        // Draft form: <send>/<recv> directly inside <participant>.
        for (const c of el.children) {
          if (c.name === 'send' && c.text) p.sends.push(c.text);
          if (c.name === 'recv' && c.text) p.recvs.push(c.text);
        }
        collectExtensions(el, p.ext, model.ext);
        break;
      }
      case 'stream': {
        const label = el.children.find((c) => c.name === 'label')?.text || undefined;
        const id = attr(el, 'stream_id', 'id') ?? label;
        if (id === undefined) return { ok: false, problem: 'a <stream> has neither stream_id nor label' };
        const existing = streamsById.get(id);
        if (existing) {
          existing.label = label ?? existing.label;
        } else {
          const s: RsStream = { id, label, sessionId: attr(el, 'session_id', 'session'), order: streamsById.size };
          streamsById.set(id, s);
          model.streams.push(s);
        }
        break;
      }
      case 'participantstreamassoc': {
        const id = attr(el, 'participant_id', 'id');
        if (id === undefined) return { ok: false, problem: 'a <participantstreamassoc> has no participant_id' };
        const p = participantOf(id);
        for (const c of el.children) {
          if (c.name === 'send' && c.text) p.sends.push(c.text);
          if (c.name === 'recv' && c.text) p.recvs.push(c.text);
        }
        break;
      }
      case 'participantsessionassoc': {
        const id = attr(el, 'participant_id', 'id');
        if (id === undefined) return { ok: false, problem: 'a <participantsessionassoc> has no participant_id' };
        const p = participantOf(id);
        if (el.children.some((c) => c.name === 'disassociate-time')) p.left = true;
        break;
      }
      case 'group':
      case 'sessionrecordingassoc':
        collectExtensions(el, new Map(), model.ext);
        break;
      default:
        // Top-level vendor elements (e.g. Oracle's <apkt:ucid>, Cisco's <ExtensionData>).
        collectLeaves(el, model.ext);
    }
  }
  model.participants.push(...participantsById.values());
  for (const p of model.participants) {
    p.sends = [...new Set(p.sends)];
    p.recvs = [...new Set(p.recvs)];
  }
  return { ok: true, metadata: { ...model, dataMode } };
}

function attr(el: XNode, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = el.attrs[n];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

function collectExtensions(el: XNode, scoped: Map<string, string[]>, global: Map<string, string[]>): void {
  for (const c of el.children) {
    if (KNOWN.has(c.name)) continue;
    collectLeaves(c, scoped);
    collectLeaves(c, global);
  }
}

/** Every leaf element's text (and every attribute) under `el`, by lower-cased local name. */
function collectLeaves(el: XNode, into: Map<string, string[]>): void {
  const add = (k: string, v: string) => {
    const list = into.get(k) ?? [];
    if (list.length < 16) list.push(v);
    into.set(k, list);
  };
  for (const [k, v] of Object.entries(el.attrs)) if (k !== 'xmlns' && v) add(k, v);
  if (el.children.length === 0) {
    if (el.text) add(el.name, el.text);
    return;
  }
  for (const c of el.children) collectLeaves(c, into);
}

function rootNamespace(text: string): MetadataNamespace | 'unknown' {
  const start = /<(?:([A-Za-z_][\w.-]*):)?recording\b([^>]*)>/.exec(text);
  if (!start) return 'none';
  const prefix = start[1];
  const attrs = start[2] ?? '';
  const re = prefix ? new RegExp(`xmlns:${prefix}\\s*=\\s*["']([^"']*)["']`) : /xmlns\s*=\s*["']([^"']*)["']/;
  const ns = re.exec(attrs)?.[1];
  if (ns === undefined) return 'none';
  if (ns === RECORDING_NS) return 'rfc7865';
  if (ns === RECORDING_NS_DRAFT) return 'draft';
  return 'unknown';
}

/** fast-xml-parser's ordered output to a small tree with lower-cased local names. */
function toNodes(value: unknown, depth: number, maxDepth: number): XNode[] | 'too-deep' {
  if (depth > maxDepth) return 'too-deep';
  if (!Array.isArray(value)) return [];
  const out: XNode[] = [];
  for (const item of value as Record<string, unknown>[]) {
    if (typeof item !== 'object' || item === null) continue;
    for (const [key, child] of Object.entries(item)) {
      if (key === ':@') continue;
      if (key === '#text') continue;
      const children = toNodes(child, depth + 1, maxDepth);
      if (children === 'too-deep') return 'too-deep';
      const rawAttrs = (item[':@'] ?? {}) as Record<string, unknown>;
      const attrs: Record<string, string> = {};
      for (const [k, v] of Object.entries(rawAttrs)) attrs[k.toLowerCase()] = String(v);
      const node: XNode = { name: key.toLowerCase(), attrs, children: children.filter((c) => c.name !== '#text'), text: '' };
      node.text = textOf(child);
      out.push(node);
    }
  }
  return out;
}

function textOf(value: unknown): string {
  if (!Array.isArray(value)) return '';
  let t = '';
  for (const item of value as Record<string, unknown>[]) if (item && typeof item === 'object' && '#text' in item) t += String(item['#text']);
  return t.trim();
}

/**
 * Applies an update (re-INVITE or UPDATE, RFC 7866 §7.3) to what we knew: a `partial` document
 * changes only what it names; a `complete` one replaces everything.
 */
export function mergeMetadata(prev: RsMetadata | undefined, next: RsMetadata): RsMetadata {
  if (!prev || next.dataMode === 'complete') return next;
  const participants = new Map(prev.participants.map((p) => [p.id, { ...p, sends: [...p.sends], recvs: [...p.recvs] }]));
  for (const p of next.participants) {
    const old = participants.get(p.id);
    if (!old) {
      participants.set(p.id, { ...p, order: participants.size });
      continue;
    }
    if (p.aor) old.aor = p.aor;
    if (p.sends.length > 0 || p.recvs.length > 0) {
      old.sends = p.sends;
      old.recvs = p.recvs;
    }
    if (p.left) old.left = true;
    for (const [k, v] of p.ext) old.ext.set(k, v);
  }
  const streams = new Map(prev.streams.map((s) => [s.id, { ...s }]));
  for (const s of next.streams) {
    const old = streams.get(s.id);
    if (old) {
      old.label = s.label ?? old.label;
      old.sessionId = s.sessionId ?? old.sessionId;
    } else streams.set(s.id, { ...s, order: streams.size });
  }
  const sessions = new Map(prev.sessions.map((s) => [s.id, s]));
  for (const s of next.sessions) sessions.set(s.id, s);
  const ext = new Map(prev.ext);
  for (const [k, v] of next.ext) ext.set(k, v);
  return { namespace: next.namespace, dataMode: 'complete', sessions: [...sessions.values()], participants: [...participants.values()], streams: [...streams.values()], ext };
}
