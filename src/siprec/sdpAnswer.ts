/**
 * The SRS's SDP answer (RFC 3264 §6, RFC 7866 §8.1): one line per offered m-line, same order and
 * count; audio in a codec we record is answered `recvonly` (or `inactive` when the SRC holds it);
 * everything else (video, text, an audio line in no codec we know, DTLS-SRTP, SDES when not
 * enabled) is refused with port 0, keeping its type and first format.
 *
 * Offers vary: no `c=` at session level (then each m-line's own, else the address the INVITE came
 * from), no `t=`, static payload types without rtpmap, `a=label` numeric or named or absent,
 * `c=0.0.0.0` meaning hold (RFC 2543 style), one m-line carrying both directions.
 */
import net from 'node:net';
import * as sdpTransform from 'sdp-transform';
import type { AudioCodecName, CodecChoice, RemoteMedia, SdesKey } from './MediaPlane.ts';

export const MAX_MEDIA_LINES = 16;

/** Static payload types of RFC 3551 §6 we may be offered without an rtpmap. */
const STATIC: Readonly<Record<number, { name: AudioCodecName; clockRate: number }>> = {
  0: { name: 'PCMU', clockRate: 8000 },
  8: { name: 'PCMA', clockRate: 8000 },
  9: { name: 'G722', clockRate: 8000 },
};

const SUITES = new Set(['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32']);

export interface OfferedLine {
  readonly index: number;
  readonly type: string;
  readonly protocol: string;
  readonly offeredPort: number;
  readonly firstFormat: string;
  readonly label: string | undefined;
  /** The answer for this line: `accept` with what we receive, or refused with why (metrics label). */
  readonly verdict:
    | { readonly accept: true; readonly codec: CodecChoice; readonly remote: RemoteMedia; readonly held: boolean; readonly crypto: { tag: number; key: SdesKey } | undefined }
    | { readonly accept: false; readonly why: 'not-audio' | 'port-zero' | 'no-codec' | 'protocol' | 'crypto' | 'no-address' };
}

export type OfferResult = { ok: true; lines: OfferedLine[] } | { ok: false; problem: string };

export interface OfferOptions {
  /** Codecs we record, in our order of preference when the offer lists several. */
  readonly codecs: readonly AudioCodecName[];
  readonly sdes: boolean;
  /** Where the INVITE came from: the media address when the SDP declares none. */
  readonly fallbackAddress: string;
}

export function readOffer(sdp: string, opts: OfferOptions): OfferResult {
  if (!/^v=0\r?$/m.test(sdp.split('\n')[0] ?? '')) return { ok: false, problem: 'SDP does not start with v=0' };
  let desc: sdpTransform.SessionDescription;
  try {
    desc = sdpTransform.parse(sdp);
  } catch {
    return { ok: false, problem: 'SDP could not be parsed' };
  }
  const media = desc.media ?? [];
  if (media.length === 0) return { ok: false, problem: 'SDP has no m-line' };
  if (media.length > MAX_MEDIA_LINES) return { ok: false, problem: `SDP has more than ${MAX_MEDIA_LINES} m-lines` };
  const sessionAddr = desc.connection?.ip;
  const sessionDir = desc.direction;
  const lines: OfferedLine[] = media.map((m, index) => {
    const firstFormat = String(m.payloads ?? '').trim().split(/\s+/)[0] ?? '0';
    const base = { index, type: m.type, protocol: m.protocol, offeredPort: m.port, firstFormat, label: m.label === undefined ? undefined : String(m.label).trim() };
    const refuse = (why: 'not-audio' | 'port-zero' | 'no-codec' | 'protocol' | 'crypto' | 'no-address'): OfferedLine => ({ ...base, verdict: { accept: false, why } });
    if (m.type !== 'audio') return refuse('not-audio');
    if (m.port === 0) return refuse('port-zero');
    const proto = m.protocol.toUpperCase();
    const savp = proto === 'RTP/SAVP' || proto === 'RTP/SAVPF';
    if (proto !== 'RTP/AVP' && proto !== 'RTP/AVPF' && !savp) return refuse('protocol');
    let crypto: { tag: number; key: SdesKey } | undefined;
    if (savp) {
      if (!opts.sdes) return refuse('crypto');
      crypto = pickCrypto(m.crypto ?? []);
      if (!crypto) return refuse('crypto');
    }
    const codec = pickCodec(m, opts.codecs);
    if (!codec) return refuse('no-codec');
    const rawAddr = m.connection?.ip ?? sessionAddr;
    const direction = m.direction ?? sessionDir ?? 'sendrecv';
    // c=0.0.0.0 is RFC 2543's hold (RFC 3264 §8.4 still asks us to understand it).
    const zeroAddr = rawAddr === '0.0.0.0' || rawAddr === '::';
    const address = rawAddr !== undefined && !zeroAddr && net.isIP(rawAddr) ? rawAddr : opts.fallbackAddress;
    if (!net.isIP(address)) return refuse('no-address');
    const rtcpMux = m.rtcpMux !== undefined;
    const rtcpPort = rtcpMux ? m.port : (m.rtcp?.port ?? m.port + 1);
    // We only receive: the SRC sending (sendonly/sendrecv) → recvonly; otherwise inactive.
    const held = zeroAddr || direction === 'inactive' || direction === 'recvonly';
    return { ...base, verdict: { accept: true, codec, remote: { address, rtpPort: m.port, rtcpPort, rtcpMux }, held, crypto } };
  });
  return { ok: true, lines };
}

function pickCodec(m: sdpTransform.MediaDescription, prefs: readonly AudioCodecName[]): CodecChoice | undefined {
  const pts = String(m.payloads ?? '')
    .trim()
    .split(/\s+/)
    .filter((p) => /^\d{1,3}$/.test(p))
    .map(Number);
  const offered: CodecChoice[] = [];
  for (const pt of pts) {
    const map = m.rtp.find((r) => r.payload === pt);
    if (map) {
      const name = canonicalCodec(map.codec);
      if (name) offered.push({ name, payloadType: pt, clockRate: map.rate ?? STATIC[pt]?.clockRate ?? 8000, channels: map.encoding ?? 1 });
    } else if (STATIC[pt]) offered.push({ name: STATIC[pt].name, payloadType: pt, clockRate: STATIC[pt].clockRate, channels: 1 });
  }
  // The first offered codec that we record, in the SRC's order (RFC 3264 §6.1).
  return offered.find((c) => prefs.includes(c.name) && (c.name !== 'opus' || c.clockRate === 48000));
}

function canonicalCodec(name: string): AudioCodecName | undefined {
  switch (name.toUpperCase()) {
    case 'PCMU':
      return 'PCMU';
    case 'PCMA':
      return 'PCMA';
    case 'OPUS':
      return 'opus';
    case 'G722':
      return 'G722';
    default:
      return undefined;
  }
}

/** RFC 4568 §9.1: `inline:<base64 key||salt>[|lifetime][|MKI:len]`; the first usable line wins. */
function pickCrypto(lines: NonNullable<sdpTransform.MediaDescription['crypto']>): { tag: number; key: SdesKey } | undefined {
  for (const c of lines) {
    if (!SUITES.has(c.suite)) continue;
    const inline = /^inline:([A-Za-z0-9+/=]+)(\|[^|]*)?(\|(\d+):(\d+))?$/.exec(c.config.trim());
    if (!inline) continue;
    // An MKI would have to be stripped from every packet; SRCs using SDES do not send one.
    if (inline[3] !== undefined) continue;
    const keySalt = Buffer.from(inline[1]!, 'base64');
    if (keySalt.length !== 30) continue;
    return { tag: c.id, key: { suite: c.suite as SdesKey['suite'], keySalt } };
  }
  return undefined;
}

export interface AnswerLine {
  readonly line: OfferedLine;
  /** Our receive port for accepted lines. */
  readonly localPort?: number | undefined;
  /** Our SDES key (we receive only, but RFC 4568 §6.1 wants a key in the answer). */
  readonly localCrypto?: string | undefined;
}

/** Renders the answer. `sessionVersion` must grow with every new answer in the dialog (RFC 3264 §8). */
export function renderAnswer(lines: readonly AnswerLine[], localAddress: string, sessionId: number, sessionVersion: number): string {
  const ipVer = net.isIPv6(localAddress) ? 6 : 4;
  const desc: sdpTransform.SessionDescription = {
    version: 0,
    origin: { username: 'optin', sessionId, sessionVersion, netType: 'IN', ipVer, address: localAddress },
    name: 'optin SRS',
    connection: { version: ipVer, ip: localAddress },
    timing: { start: 0, stop: 0 },
    media: lines.map(({ line, localPort, localCrypto }) => {
      const v = line.verdict;
      if (!v.accept || localPort === undefined) {
        // RFC 3264 §6: a refused stream keeps its m-line with port 0 and at least one format.
        return { type: line.type, port: 0, protocol: line.protocol, payloads: line.firstFormat, rtp: [], fmtp: [] };
      }
      const c = v.codec;
      const m: sdpTransform.MediaDescription = {
        type: 'audio',
        port: localPort,
        protocol: line.protocol,
        payloads: String(c.payloadType),
        rtp: [{ payload: c.payloadType, codec: c.name, rate: c.clockRate, ...(c.channels > 1 ? { encoding: c.channels } : {}) }],
        fmtp: [],
        direction: v.held ? 'inactive' : 'recvonly',
      };
      if (v.remote.rtcpMux) m.rtcpMux = 'rtcp-mux';
      if (line.label !== undefined) m.label = line.label;
      if (v.crypto && localCrypto) m.crypto = [{ id: v.crypto.tag, suite: v.crypto.key.suite, config: `inline:${localCrypto}` }];
      return m;
    }),
  };
  return sdpTransform.write(desc);
}
