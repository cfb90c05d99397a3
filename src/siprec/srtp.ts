/**
 * SRTP/SRTCP receive side for SDES-keyed SIPREC streams (RFC 3711), suites
 * AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2): key derivation (§4.3,
 * key derivation rate 0), AES-CM decryption (§4.1.1), HMAC-SHA1 authentication (§4.2), rollover
 * counter estimation (§3.3.1, Appendix A). Replay protection beyond authentication is left to the
 * jitter buffer, which drops duplicate sequence numbers anyway.
 *
 * Pure: no I/O, one object per stream direction. `protect` exists for tests and load generators.
 */
import { createCipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import type { SdesKey } from './MediaPlane.ts';

const LABEL = { rtpKey: 0, rtpAuth: 1, rtpSalt: 2, rtcpKey: 3, rtcpAuth: 4, rtcpSalt: 5 } as const;

/** §4.3.1 with kdr = 0: AES-CM keystream of the master key at IV = (salt XOR label<<48) * 2^16. */
export function deriveKey(masterKey: Buffer, masterSalt: Buffer, label: number, length: number): Buffer {
  const iv = Buffer.alloc(16);
  masterSalt.copy(iv, 0, 0, 14);
  iv[7] = iv[7]! ^ label;
  const cipher = createCipheriv('aes-128-ctr', masterKey, iv);
  return cipher.update(Buffer.alloc(length));
}

interface SessionKeys {
  key: Buffer;
  auth: Buffer;
  salt: Buffer;
}

function sessionKeys(k: SdesKey, rtcp: boolean): SessionKeys {
  if (k.keySalt.length !== 30) throw new OptinError('SRTP_INVALID_KEY', 'SDES key||salt must be 30 bytes (16-byte key, 14-byte salt)');
  const mk = k.keySalt.subarray(0, 16);
  const ms = k.keySalt.subarray(16, 30);
  return {
    key: deriveKey(mk, ms, rtcp ? LABEL.rtcpKey : LABEL.rtpKey, 16),
    auth: deriveKey(mk, ms, rtcp ? LABEL.rtcpAuth : LABEL.rtpAuth, 20),
    salt: deriveKey(mk, ms, rtcp ? LABEL.rtcpSalt : LABEL.rtpSalt, 14),
  };
}

/** §4.1.1: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16). */
function counterIv(salt: Buffer, ssrc: number, index: bigint): Buffer {
  const iv = Buffer.alloc(16);
  salt.copy(iv, 0, 0, 14);
  iv.writeUInt32BE((iv.readUInt32BE(4) ^ ssrc) >>> 0, 4);
  const hi = Number((index >> 32n) & 0xffffn);
  const lo = Number(index & 0xffffffffn);
  iv.writeUInt16BE(iv.readUInt16BE(8) ^ hi, 8);
  iv.writeUInt32BE((iv.readUInt32BE(10) ^ lo) >>> 0, 10);
  return iv;
}

function rtpHeaderLength(p: Buffer): number {
  if (p.length < 12) return -1;
  let n = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) {
    if (p.length < n + 4) return -1;
    n += 4 + 4 * p.readUInt16BE(n + 2);
  }
  return n <= p.length ? n : -1;
}

export class SrtpReceiver {
  readonly #rtp: SessionKeys;
  readonly #rtcp: SessionKeys;
  readonly #tagLen: number;
  /** Per-SSRC rollover state (§3.3.1). */
  readonly #roc = new Map<number, { roc: number; sl: number }>();

  constructor(key: SdesKey) {
    this.#rtp = sessionKeys(key, false);
    this.#rtcp = sessionKeys(key, true);
    this.#tagLen = key.suite === 'AES_CM_128_HMAC_SHA1_32' ? 4 : 10;
  }

  /** Authenticates and decrypts one SRTP packet; undefined when it fails (drop it). */
  unprotectRtp(packet: Buffer): Buffer | undefined {
    const hlen = rtpHeaderLength(packet);
    if (hlen < 0 || packet.length < hlen + this.#tagLen) return undefined;
    const seq = packet.readUInt16BE(2);
    const ssrc = packet.readUInt32BE(8);
    const state = this.#roc.get(ssrc);
    // Appendix A: guess the ROC from the highest sequence number seen.
    let v: number;
    if (!state) v = 0;
    else if (state.sl < 32768) v = seq - state.sl > 32768 ? (state.roc - 1) >>> 0 : state.roc;
    else v = state.sl - 32768 > seq ? (state.roc + 1) >>> 0 : state.roc;
    const authEnd = packet.length - this.#tagLen;
    const rocBuf = Buffer.alloc(4);
    rocBuf.writeUInt32BE(v);
    const mac = createHmac('sha1', this.#rtp.auth).update(packet.subarray(0, authEnd)).update(rocBuf).digest().subarray(0, this.#tagLen);
    if (!timingSafeEqual(mac, packet.subarray(authEnd))) return undefined;
    const index = (BigInt(v) << 16n) | BigInt(seq);
    const decipher = createCipheriv('aes-128-ctr', this.#rtp.key, counterIv(this.#rtp.salt, ssrc, index));
    const out = Buffer.allocUnsafe(authEnd);
    packet.copy(out, 0, 0, hlen);
    decipher.update(packet.subarray(hlen, authEnd)).copy(out, hlen);
    // Update the highest index only after authentication (§3.3.1).
    if (!state) this.#roc.set(ssrc, { roc: v, sl: seq });
    else if (v > state.roc || (v === state.roc && seq > state.sl)) {
      state.roc = v;
      state.sl = seq;
    }
    return out;
  }

  /** SRTCP (§3.4): E flag + 31-bit index after the packet, then the tag. */
  unprotectRtcp(packet: Buffer): Buffer | undefined {
    if (packet.length < 8 + 4 + this.#tagLen) return undefined;
    const authEnd = packet.length - this.#tagLen;
    const mac = createHmac('sha1', this.#rtcp.auth).update(packet.subarray(0, authEnd)).digest().subarray(0, this.#tagLen);
    if (!timingSafeEqual(mac, packet.subarray(authEnd))) return undefined;
    const word = packet.readUInt32BE(authEnd - 4);
    const encrypted = (word & 0x80000000) !== 0;
    const index = BigInt(word & 0x7fffffff);
    const body = packet.subarray(0, authEnd - 4);
    if (!encrypted) return Buffer.from(body);
    const ssrc = packet.readUInt32BE(4);
    const decipher = createCipheriv('aes-128-ctr', this.#rtcp.key, counterIv(this.#rtcp.salt, ssrc, index));
    const out = Buffer.allocUnsafe(body.length);
    body.copy(out, 0, 0, 8);
    decipher.update(body.subarray(8)).copy(out, 8);
    return out;
  }
}

/** The sending side, for tests and load generators (not used by the recorder). */
export class SrtpSender {
  readonly #rtp: SessionKeys;
  readonly #tagLen: number;
  #roc = 0;
  #lastSeq = -1;

  constructor(key: SdesKey) {
    this.#rtp = sessionKeys(key, false);
    this.#tagLen = key.suite === 'AES_CM_128_HMAC_SHA1_32' ? 4 : 10;
  }

  protectRtp(packet: Buffer): Buffer {
    const hlen = rtpHeaderLength(packet);
    if (hlen < 0) throw new OptinError('SRTP_INVALID_KEY', 'not an RTP packet');
    const seq = packet.readUInt16BE(2);
    if (this.#lastSeq >= 0 && seq < this.#lastSeq && this.#lastSeq - seq > 32768) this.#roc = (this.#roc + 1) >>> 0;
    this.#lastSeq = seq;
    const ssrc = packet.readUInt32BE(8);
    const index = (BigInt(this.#roc) << 16n) | BigInt(seq);
    const cipher = createCipheriv('aes-128-ctr', this.#rtp.key, counterIv(this.#rtp.salt, ssrc, index));
    const enc = Buffer.concat([packet.subarray(0, hlen), cipher.update(packet.subarray(hlen))]);
    const rocBuf = Buffer.alloc(4);
    rocBuf.writeUInt32BE(this.#roc);
    const tag = createHmac('sha1', this.#rtp.auth).update(enc).update(rocBuf).digest().subarray(0, this.#tagLen);
    return Buffer.concat([enc, tag]);
  }
}
