import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { DATA_KEY_BYTES } from './Keyring.ts';

/**
 * Sealing of one media segment (one standalone Ogg Opus file) with AES-256-GCM (NIST SP 800-38D).
 *
 * Sealed format (all fixed-size fields, so parsing never trusts a length from the input):
 *
 *   offset 0  'OPTN'         4 bytes magic
 *   offset 4  version        1 byte  (0x01)
 *   offset 5  nonce          12 bytes, random per segment
 *   offset 17 ciphertext     same length as the plaintext
 *   end - 16  GCM tag        16 bytes
 *
 * The additional authenticated data binds WHERE the segment belongs: bucket, object key,
 * recording, participant and segment number (docs/architecture.md §5). A segment copied to another participant,
 * renumbered, moved to another key or truncated therefore fails the tag check, even though it was
 * sealed under a valid key. The header (magic + version) is part of the AAD too, so a future format
 * cannot be confused with this one.
 *
 * Nonces: 96 random bits per segment. One data key seals one participant's track, which is at most
 * a few thousand segments, far below the 2^32 random-nonce limit of SP 800-38D §8.3.
 *
 * Pure functions: no I/O, no logging; the caller owns key lifetime.
 */

export const SEAL_MAGIC = Buffer.from('OPTN', 'ascii');
export const SEAL_VERSION = 1;
export const SEAL_NONCE_BYTES = 12;
export const SEAL_TAG_BYTES = 16;
export const SEAL_HEADER_BYTES = SEAL_MAGIC.length + 1 + SEAL_NONCE_BYTES;
/** Bytes a seal adds to its plaintext: header + tag = 33. */
export const SEAL_OVERHEAD_BYTES = SEAL_HEADER_BYTES + SEAL_TAG_BYTES;
/** GCM's per-invocation limit is ~64 GiB; we cap far lower since a segment is ~40 KB. */
export const SEAL_MAX_PLAINTEXT_BYTES = 64 * 1024 * 1024;

/** Where a sealed segment belongs. Every field is authenticated. */
export interface SegmentAad {
  bucket: string;
  objectKey: string;
  recordingId: string;
  participantId: string;
  segment: number;
}

/** Which check refused a sealed segment. */
export type SealCheck = 'too-short' | 'bad-magic' | 'unsupported-version' | 'authentication';

/** SEGMENT_AUTH_FAILED with the failing check attached, for callers and tests that branch on it. */
export class SegmentAuthError extends OptinError {
  readonly check: SealCheck;

  constructor(check: SealCheck, message: string) {
    super('SEGMENT_AUTH_FAILED', `${message} (check: ${check})`);
    this.check = check;
  }
}

/**
 * Canonical AAD bytes: a domain string, then each string field as u16 big-endian length + UTF-8,
 * then the segment as u32 big-endian. Length prefixes make the encoding injective ("a/b" + "c" can
 * never equal "a" + "b/c").
 */
export function encodeSegmentAad(aad: SegmentAad): Buffer {
  const parts: Buffer[] = [Buffer.from('optin/segment/v1\0', 'ascii'), SEAL_MAGIC, Buffer.of(SEAL_VERSION)];
  for (const name of ['bucket', 'objectKey', 'recordingId', 'participantId'] as const) {
    const value = aad[name];
    if (typeof value !== 'string' || value.length === 0) {
      throw new OptinError('SEAL_AAD_INVALID', `segment AAD field ${name} must be a non-empty string`);
    }
    const bytes = Buffer.from(value, 'utf8');
    if (bytes.length > 0xffff) throw new OptinError('SEAL_AAD_INVALID', `segment AAD field ${name} is too long`);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(bytes.length);
    parts.push(len, bytes);
  }
  if (!Number.isInteger(aad.segment) || aad.segment < 0 || aad.segment > 0xffffffff) {
    throw new OptinError('SEAL_AAD_INVALID', 'segment AAD field segment must be an integer in [0, 2^32)');
  }
  const seg = Buffer.alloc(4);
  seg.writeUInt32BE(aad.segment);
  parts.push(seg);
  return Buffer.concat(parts);
}

function checkKey(dataKey: Buffer): void {
  if (!Buffer.isBuffer(dataKey) || dataKey.length !== DATA_KEY_BYTES) {
    throw new OptinError('DATA_KEY_INVALID', `a data key must be a Buffer of ${DATA_KEY_BYTES} bytes`);
  }
}

/** Seals one segment. Returns a new Buffer in the format above. */
export function sealSegment(dataKey: Buffer, plaintext: Buffer, aad: SegmentAad): Buffer {
  checkKey(dataKey);
  if (!Buffer.isBuffer(plaintext)) throw new OptinError('SEAL_INPUT_INVALID', 'segment plaintext must be a Buffer');
  if (plaintext.length > SEAL_MAX_PLAINTEXT_BYTES) {
    throw new OptinError('SEAL_INPUT_INVALID', `segment of ${plaintext.length} bytes exceeds the ${SEAL_MAX_PLAINTEXT_BYTES}-byte limit`);
  }
  const aadBytes = encodeSegmentAad(aad);
  const nonce = randomBytes(SEAL_NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', dataKey, nonce, { authTagLength: SEAL_TAG_BYTES });
  cipher.setAAD(aadBytes);
  // Write straight into one output buffer: a 40 KB segment is copied once, not three times.
  const out = Buffer.allocUnsafe(SEAL_OVERHEAD_BYTES + plaintext.length);
  SEAL_MAGIC.copy(out, 0);
  out[SEAL_MAGIC.length] = SEAL_VERSION;
  nonce.copy(out, SEAL_MAGIC.length + 1);
  let off = SEAL_HEADER_BYTES;
  off += cipher.update(plaintext).copy(out, off);
  off += cipher.final().copy(out, off);
  cipher.getAuthTag().copy(out, off);
  return out;
}

/**
 * Opens one sealed segment, or throws SegmentAuthError naming the failed check. Never returns
 * unauthenticated plaintext: GCM's final() verifies the tag before we hand anything back.
 */
export function openSegment(dataKey: Buffer, sealed: Buffer, aad: SegmentAad): Buffer {
  checkKey(dataKey);
  const where = `segment ${aad.segment} of ${aad.recordingId}/${aad.participantId}`;
  if (!Buffer.isBuffer(sealed) || sealed.length < SEAL_OVERHEAD_BYTES) {
    throw new SegmentAuthError('too-short', `${where} is truncated: ${Buffer.isBuffer(sealed) ? sealed.length : 0} bytes, a sealed segment has at least ${SEAL_OVERHEAD_BYTES}`);
  }
  if (!sealed.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC)) {
    throw new SegmentAuthError('bad-magic', `${where} does not start with the OPTN magic: not a sealed optin segment, or its head is damaged`);
  }
  const version = sealed[SEAL_MAGIC.length];
  if (version !== SEAL_VERSION) {
    throw new SegmentAuthError('unsupported-version', `${where} has seal format version ${String(version)}; this build reads version ${SEAL_VERSION}`);
  }
  const aadBytes = encodeSegmentAad(aad);
  const nonce = sealed.subarray(SEAL_MAGIC.length + 1, SEAL_HEADER_BYTES);
  const tag = sealed.subarray(sealed.length - SEAL_TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', dataKey, nonce, { authTagLength: SEAL_TAG_BYTES });
  decipher.setAAD(aadBytes);
  decipher.setAuthTag(tag);
  const body = decipher.update(sealed.subarray(SEAL_HEADER_BYTES, sealed.length - SEAL_TAG_BYTES));
  try {
    const fin = decipher.final();
    return fin.length === 0 ? body : Buffer.concat([body, fin]);
  } catch {
    // Unauthenticated plaintext must not survive the failure.
    body.fill(0);
    throw new SegmentAuthError(
      'authentication',
      `${where} failed authentication: it was altered or truncated, moved from another object key, ` +
        `participant, recording or segment number, or opened with the wrong data key`,
    );
  }
}
