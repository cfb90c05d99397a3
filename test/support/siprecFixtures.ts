/**
 * Building blocks for SIPREC tests: SDP offers as SRCs write them, rs-metadata documents in the
 * RFC 7865 and draft shapes, multipart bodies, G.711 tone RTP senders, and a media sink that
 * collects what the media plane delivers.
 */
import dgram from 'node:dgram';
import { decodeUlaw, decodeAlaw, encodeUlaw, encodeAlaw } from '../../src/media/g711.ts';
import type { MediaSink, StreamEvent } from '../../src/siprec/MediaPlane.ts';
import { SiprecConfigSchema, type SiprecConfig } from '../../src/siprec/siprecConfig.ts';
import { goertzelPower, db } from './audio.ts';

export interface OfferLine {
  readonly port: number;
  readonly label?: string | undefined;
  readonly type?: string;
  /** Payload types in order; default PCMU (0). */
  readonly payloads?: readonly number[];
  readonly direction?: 'sendonly' | 'sendrecv' | 'inactive' | 'recvonly';
  readonly address?: string | undefined;
  readonly rtcpMux?: boolean;
  readonly protocol?: string;
  readonly extra?: readonly string[];
}

export function sdpOffer(lines: readonly OfferLine[], opts: { sessionC?: boolean; timing?: boolean; version?: number; address?: string } = {}): string {
  const addr = opts.address ?? '127.0.0.1';
  const out = ['v=0', `o=SBC 1234 ${opts.version ?? 1} IN IP4 ${addr}`, 's=SIPREC'];
  if (opts.sessionC !== false) out.push(`c=IN IP4 ${addr}`);
  if (opts.timing !== false) out.push('t=0 0');
  for (const l of lines) {
    const type = l.type ?? 'audio';
    const pts = l.payloads ?? (type === 'audio' ? [0] : [96]);
    out.push(`m=${type} ${l.port} ${l.protocol ?? 'RTP/AVP'} ${pts.join(' ')}`);
    if (l.address) out.push(`c=IN IP4 ${l.address}`);
    for (const pt of pts) {
      if (pt === 0) out.push('a=rtpmap:0 PCMU/8000');
      else if (pt === 8) out.push('a=rtpmap:8 PCMA/8000');
      else if (pt === 101) out.push('a=rtpmap:101 telephone-event/8000');
      else if (pt === 111) out.push('a=rtpmap:111 opus/48000/2');
      else if (type === 'video') out.push(`a=rtpmap:${pt} H264/90000`);
    }
    if (l.label !== undefined) out.push(`a=label:${l.label}`);
    if (l.rtcpMux) out.push('a=rtcp-mux');
    for (const e of l.extra ?? []) out.push(e);
    out.push(`a=${l.direction ?? 'sendonly'}`);
  }
  return out.join('\r\n') + '\r\n';
}

export interface MdParticipant {
  readonly id: string;
  readonly aor?: string;
  readonly name?: string;
  readonly sends?: readonly string[];
  readonly recvs?: readonly string[];
  readonly left?: boolean;
}

export interface MdStream {
  readonly id: string;
  readonly label: string;
}

/** RFC 7865 §A-style metadata (or the older draft's shape with `draft: true`). */
export function rsMetadata(opts: {
  participants: readonly MdParticipant[];
  streams: readonly MdStream[];
  sessionId?: string;
  namespace?: string | null;
  prefix?: string;
  draft?: boolean;
  dataMode?: 'complete' | 'partial';
  extension?: string;
}): string {
  const p = opts.prefix ? `${opts.prefix}:` : '';
  const nsAttr = opts.namespace === null ? '' : ` xmlns${opts.prefix ? `:${opts.prefix}` : ''}="${opts.namespace ?? 'urn:ietf:params:xml:ns:recording:1'}"`;
  const sid = opts.sessionId ?? 'c2Vzc2lvbjE=';
  const x: string[] = ['<?xml version="1.0" encoding="UTF-8"?>', `<${p}recording${nsAttr}>`, `<${p}datamode>${opts.dataMode ?? 'complete'}</${p}datamode>`];
  if (opts.draft) {
    x.push(`<${p}session id="${sid}"><${p}start-time>2026-12-05T10:00:00</${p}start-time>${opts.extension ?? ''}</${p}session>`);
    for (const part of opts.participants) {
      x.push(`<${p}participant id="${part.id}" session="${sid}">`);
      if (part.aor) x.push(`<${p}nameID aor="${part.aor}">${part.name ? `<${p}name>${part.name}</${p}name>` : ''}</${p}nameID>`);
      for (const s of part.sends ?? []) x.push(`<${p}send>${s}</${p}send>`);
      for (const s of part.recvs ?? []) x.push(`<${p}recv>${s}</${p}recv>`);
      x.push(`</${p}participant>`);
    }
    for (const s of opts.streams) x.push(`<${p}stream id="${s.id}" session="${sid}"><${p}label>${s.label}</${p}label></${p}stream>`);
  } else {
    x.push(`<${p}session session_id="${sid}"><${p}sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=00000000000000000000000000000000</${p}sipSessionID>${opts.extension ?? ''}</${p}session>`);
    for (const part of opts.participants) {
      x.push(`<${p}participant participant_id="${part.id}">`);
      if (part.aor) x.push(`<${p}nameID aor="${part.aor}">${part.name ? `<${p}name xml:lang="en">${part.name}</${p}name>` : ''}</${p}nameID>`);
      x.push(`</${p}participant>`);
    }
    for (const s of opts.streams) x.push(`<${p}stream stream_id="${s.id}" session_id="${sid}"><${p}label>${s.label}</${p}label></${p}stream>`);
    x.push(`<${p}sessionrecordingassoc session_id="${sid}"><${p}associate-time>2026-12-05T10:00:00</${p}associate-time></${p}sessionrecordingassoc>`);
    for (const part of opts.participants) {
      x.push(`<${p}participantsessionassoc participant_id="${part.id}" session_id="${sid}"><${p}associate-time>2026-12-05T10:00:00</${p}associate-time>${part.left ? `<${p}disassociate-time>2026-12-05T10:05:00</${p}disassociate-time>` : ''}</${p}participantsessionassoc>`);
      if ((part.sends?.length ?? 0) + (part.recvs?.length ?? 0) > 0) {
        x.push(`<${p}participantstreamassoc participant_id="${part.id}">`);
        for (const s of part.sends ?? []) x.push(`<${p}send>${s}</${p}send>`);
        for (const s of part.recvs ?? []) x.push(`<${p}recv>${s}</${p}recv>`);
        x.push(`</${p}participantstreamassoc>`);
      }
    }
  }
  x.push(`</${p}recording>`);
  return x.join('\r\n');
}

export const BOUNDARY = 'OPTIN_boundary_1';

export function multipart(parts: readonly { type: string; body: string; headers?: readonly string[] }[], boundary = BOUNDARY): { body: string; contentType: string } {
  let body = '';
  for (const part of parts) {
    body += `--${boundary}\r\nContent-Type: ${part.type}\r\n`;
    for (const h of part.headers ?? []) body += `${h}\r\n`;
    body += `\r\n${part.body}\r\n`;
  }
  body += `--${boundary}--\r\n`;
  return { body, contentType: `multipart/mixed;boundary=${boundary}` };
}

/** A SIPREC INVITE body: SDP + metadata (metadata first when `metadataFirst`). */
export function siprecBody(sdp: string, metadata: string, opts: { metadataFirst?: boolean; metadataType?: string } = {}): { body: string; contentType: string } {
  const sdpPart = { type: 'application/sdp', body: sdp };
  const mdPart = { type: opts.metadataType ?? 'application/rs-metadata+xml', body: metadata, headers: ['Content-Disposition: recording-session'] };
  return multipart(opts.metadataFirst ? [mdPart, sdpPart] : [sdpPart, mdPart]);
}

/** The metadata of a two-stream session: the customer sends label 1 (c3RyZWFtMQ==), the agent label 2 (c3RyZWFtMg==). */
export function twoPartyMetadata(customer: MdParticipant, agent: MdParticipant): string {
  return rsMetadata({
    participants: [
      { ...customer, sends: ['c3RyZWFtMQ=='], recvs: ['c3RyZWFtMg=='] },
      { ...agent, sends: ['c3RyZWFtMg=='], recvs: ['c3RyZWFtMQ=='] },
    ],
    streams: [
      { id: 'c3RyZWFtMQ==', label: '1' },
      { id: 'c3RyZWFtMg==', label: '2' },
    ],
  });
}

/**
 * The metadata re-INVITE of a transfer as SRCs send it, after a two-stream session (customer on
 * label 1 / stream c3RyZWFtMQ==, agent `from` on label 2): `from` leaves (`disassociate-time`, its
 * m-line port 0), `to` joins on a third stream (label 3 / c3RyZWFtMw==), receiving the customer's.
 */
export function transferBody(from: MdParticipant, to: MdParticipant, version = 2): { body: string; contentType: string } {
  const md = rsMetadata({
    dataMode: 'partial',
    participants: [
      { ...from, sends: [], recvs: [], left: true },
      { ...to, sends: ['c3RyZWFtMw=='], recvs: ['c3RyZWFtMQ=='] },
    ],
    streams: [{ id: 'c3RyZWFtMw==', label: '3' }],
  });
  const sdp = sdpOffer([{ port: 40002, label: '1' }, { port: 0, label: '2' }, { port: 40006, label: '3' }], { version });
  return siprecBody(sdp, md);
}

export const SIPREC_HEADERS: readonly (readonly [string, string])[] = [
  ['Require', 'siprec'],
  ['Accept', 'application/sdp, application/rs-metadata+xml'],
];

/** A test configuration: loopback, ephemeral SIP ports, short timers. */
export function testSiprecConfig(overrides: Partial<Record<string, unknown>> = {}): SiprecConfig {
  return SiprecConfigSchema.parse({
    enabled: true,
    bindAddress: '127.0.0.1',
    udpPort: 0,
    tcpPort: 0,
    timers: { t1: 50, t2: 400, t4: 500 },
    retryAfterSeconds: 7,
    media: { portMin: 36000 + Math.floor(Math.random() * 200) * 20, portMax: 39999 },
    ...overrides,
  });
}

export interface CollectedStream {
  packets: Buffer[];
  arrivals: number[];
}

/** A MediaSink that keeps every packet and event, keyed `callId/participantId`. */
export class CollectingSink implements MediaSink {
  readonly streams = new Map<string, CollectedStream>();
  readonly events: StreamEvent[] = [];
  rtcpCount = 0;

  packet(callId: string, participantId: string, packet: Buffer, arrivalMs: number): void {
    const key = `${callId}/${participantId}`;
    let s = this.streams.get(key);
    if (!s) {
      s = { packets: [], arrivals: [] };
      this.streams.set(key, s);
    }
    s.packets.push(packet);
    s.arrivals.push(arrivalMs);
  }

  rtcp(): void {
    this.rtcpCount++;
  }

  event(e: StreamEvent): void {
    this.events.push(e);
  }

  count(callId: string, participantId: string): number {
    return this.streams.get(`${callId}/${participantId}`)?.packets.length ?? 0;
  }

  async waitFor(pred: () => boolean, timeoutMs = 3000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Sends `packets` 20 ms G.711 RTP packets of a sine at `freq` Hz to `port` (fast, not paced). */
export async function sendTone(opts: { port: number; freq: number; packets: number; pt?: number; ssrc?: number; socket?: dgram.Socket; paceMs?: number; seqStart?: number; tsStart?: number }): Promise<void> {
  const sock = opts.socket ?? dgram.createSocket('udp4');
  const pt = opts.pt ?? 0;
  const encode = pt === 8 ? encodeAlaw : encodeUlaw;
  const ssrc = opts.ssrc ?? 0x1234abcd;
  for (let i = 0; i < opts.packets; i++) {
    const pcm = new Int16Array(160);
    for (let n = 0; n < 160; n++) pcm[n] = Math.round(12000 * Math.sin((2 * Math.PI * opts.freq * (i * 160 + n)) / 8000));
    const header = Buffer.alloc(12);
    header[0] = 0x80;
    header[1] = pt;
    header.writeUInt16BE(((opts.seqStart ?? 1000) + i) & 0xffff, 2);
    header.writeUInt32BE(((opts.tsStart ?? 0) + i * 160) >>> 0, 4);
    header.writeUInt32BE(ssrc, 8);
    await new Promise<void>((r) => sock.send(Buffer.concat([header, encode(pcm)]), opts.port, '127.0.0.1', () => r()));
    if (opts.paceMs) await new Promise((r) => setTimeout(r, opts.paceMs));
  }
  if (!opts.socket) sock.close();
}

/** Decodes G.711 RTP payloads (12-byte headers, no CSRC/extension) to float PCM at 8 kHz. */
export function decodeG711Packets(packets: readonly Buffer[], pt = 0): Float32Array {
  const chunks = packets.map((p) => (pt === 8 ? decodeAlaw(p.subarray(12)) : decodeUlaw(p.subarray(12))));
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Float32Array(total);
  let at = 0;
  for (const c of chunks) for (let i = 0; i < c.length; i++) out[at++] = c[i]! / 32768;
  return out;
}

/** How many dB `freq` stands above `other` in 8 kHz PCM. */
export function toneAdvantage8k(pcm: Float32Array, freq: number, other: number): number {
  return db(goertzelPower(pcm, freq, 8000) / Math.max(goertzelPower(pcm, other, 8000), 1e-30));
}
