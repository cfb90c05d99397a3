/**
 * SIP messages (RFC 3261 §7): a request or a response, its header fields in the order received,
 * and its body as bytes. Header names are kept as sent for serialisation but looked up by their
 * canonical lower-case long form, so the compact forms of §7.3.3 (`v`, `i`, `l`...) and any
 * capitalisation find the same field.
 */

/** §7.3.3 compact forms (plus the later ones of RFC 3265, 3515, 3892, 3841, 4028). */
const COMPACT: Readonly<Record<string, string>> = {
  a: 'accept-contact',
  b: 'referred-by',
  c: 'content-type',
  e: 'content-encoding',
  f: 'from',
  i: 'call-id',
  j: 'reject-contact',
  k: 'supported',
  l: 'content-length',
  m: 'contact',
  o: 'event',
  r: 'refer-to',
  s: 'subject',
  t: 'to',
  u: 'allow-events',
  v: 'via',
  x: 'session-expires',
};

export function canonicalHeaderName(name: string): string {
  const lower = name.toLowerCase();
  return COMPACT[lower] ?? lower;
}

export interface HeaderField {
  /** As written on the wire (or by us). */
  readonly name: string;
  /** Canonical lower-case long form, the lookup key. */
  readonly key: string;
  readonly value: string;
}

/** Ordered header fields with case- and compact-form-insensitive lookup. */
export class SipHeaders {
  readonly #fields: HeaderField[] = [];

  static from(pairs: readonly (readonly [string, string])[]): SipHeaders {
    const h = new SipHeaders();
    for (const [name, value] of pairs) h.append(name, value);
    return h;
  }

  append(name: string, value: string): this {
    this.#fields.push({ name, key: canonicalHeaderName(name), value });
    return this;
  }

  /** Replaces every field of that name by one (appended at the end when absent). */
  set(name: string, value: string): this {
    const key = canonicalHeaderName(name);
    const at = this.#fields.findIndex((f) => f.key === key);
    this.remove(name);
    const field = { name, key, value };
    if (at < 0) this.#fields.push(field);
    else this.#fields.splice(at, 0, field);
    return this;
  }

  remove(name: string): this {
    const key = canonicalHeaderName(name);
    for (let i = this.#fields.length - 1; i >= 0; i--) if (this.#fields[i]!.key === key) this.#fields.splice(i, 1);
    return this;
  }

  has(name: string): boolean {
    const key = canonicalHeaderName(name);
    return this.#fields.some((f) => f.key === key);
  }

  /** The first field of that name. */
  get(name: string): string | undefined {
    const key = canonicalHeaderName(name);
    return this.#fields.find((f) => f.key === key)?.value;
  }

  /** Every field value of that name, in order (one entry per header line, not split at commas). */
  getAll(name: string): string[] {
    const key = canonicalHeaderName(name);
    return this.#fields.filter((f) => f.key === key).map((f) => f.value);
  }

  get fields(): readonly HeaderField[] {
    return this.#fields;
  }

  get size(): number {
    return this.#fields.length;
  }
}

export interface SipRequest {
  readonly kind: 'request';
  readonly method: string;
  readonly uri: string;
  readonly headers: SipHeaders;
  readonly body: Buffer;
}

export interface SipResponse {
  readonly kind: 'response';
  readonly status: number;
  readonly reason: string;
  readonly headers: SipHeaders;
  readonly body: Buffer;
}

export type SipMessage = SipRequest | SipResponse;

const CRLF = '\r\n';

/**
 * Serialises a message. Content-Length is always written from the body (§18.3: mandatory on
 * stream transports, harmless on UDP), replacing whatever the headers said.
 */
export function serializeMessage(msg: SipMessage): Buffer {
  let head = msg.kind === 'request' ? `${msg.method} ${msg.uri} SIP/2.0${CRLF}` : `SIP/2.0 ${msg.status} ${msg.reason}${CRLF}`;
  for (const f of msg.headers.fields) {
    if (f.key === 'content-length') continue;
    head += `${f.name}: ${f.value}${CRLF}`;
  }
  head += `Content-Length: ${msg.body.length}${CRLF}${CRLF}`;
  return msg.body.length === 0 ? Buffer.from(head, 'utf8') : Buffer.concat([Buffer.from(head, 'utf8'), msg.body]);
}

export function makeRequest(method: string, uri: string, headers: SipHeaders, body: Buffer = Buffer.alloc(0)): SipRequest {
  return { kind: 'request', method, uri, headers, body };
}

export function makeResponseMessage(status: number, reason: string, headers: SipHeaders, body: Buffer = Buffer.alloc(0)): SipResponse {
  return { kind: 'response', status, reason, headers, body };
}

/** Default reason phrases for the statuses we send (§21). */
export const REASON: Readonly<Record<number, string>> = {
  100: 'Trying',
  200: 'OK',
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Timeout',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  416: 'Unsupported URI Scheme',
  420: 'Bad Extension',
  481: 'Call/Transaction Does Not Exist',
  482: 'Loop Detected',
  483: 'Too Many Hops',
  487: 'Request Terminated',
  488: 'Not Acceptable Here',
  491: 'Request Pending',
  500: 'Server Internal Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
  505: 'Version Not Supported',
  513: 'Message Too Large',
};
