import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Secret } from './auth.ts';

/**
 * Per-frame authentication of the policy stream, version 2 (docs/control-protocol.md §2.3).
 *
 * After the handshake both sides hold a session key
 *   K = HMAC-SHA256(secret, "optin-session-v2:" + workerNonce + ":" + serverNonce)
 * (the worker's nonce from the upgrade request, the server's from `hello`). Every later frame is
 * the text `<mac> <json>` with
 *   mac = base64url(HMAC-SHA256(K, dir + ":" + counter + ":" + json))
 * where `dir` is `s2w` (server to worker) or `w2s`, and `counter` is the frame's 0-based index in
 * that direction within the session (implicit: never sent). A forged, modified, replayed,
 * reordered or dropped frame fails the MAC of the frame where the receiver's counter no longer
 * matches; the receiver then treats the stream as broken (it cannot know what it missed).
 *
 * Why a MAC on top of TLS: TLS is optional on loopback, and a MAC keeps a party that can write
 * to the socket (a proxy, a compromised relay) from injecting facts even when TLS terminates
 * early. Both nonces make K unique per session, so a replayed upgrade gets nothing usable.
 */

export type Direction = 's2w' | 'w2s';

const MAC_LENGTH = 43; // 32 bytes, base64url without padding
const MAC_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function deriveSessionKey(secret: Secret, workerNonce: string, serverNonce: string): Buffer {
  return createHmac('sha256', secret).update(`optin-session-v2:${workerNonce}:${serverNonce}`, 'utf8').digest();
}

export function createServerNonce(): string {
  return randomBytes(24).toString('base64url');
}

function frameMac(key: Buffer, dir: Direction, counter: number, json: string): string {
  return createHmac('sha256', key).update(`${dir}:${counter}:${json}`, 'utf8').digest('base64url');
}

/** Seals outgoing frames of one direction, in order. */
export class FrameSealer {
  readonly #key: Buffer;
  readonly #dir: Direction;
  #counter = 0;

  constructor(key: Buffer, dir: Direction) {
    this.#key = key;
    this.#dir = dir;
  }

  /** The next frame's text. Call in send order: the counter advances with each call. */
  seal(json: string): string {
    return `${frameMac(this.#key, this.#dir, this.#counter++, json)} ${json}`;
  }

  get counter(): number {
    return this.#counter;
  }
}

export type OpenResult = { ok: true; json: string } | { ok: false; reason: 'malformed' | 'bad-mac' };

/** Checks incoming frames of one direction, in order. After a failure every later frame fails too. */
export class FrameOpener {
  readonly #key: Buffer;
  readonly #dir: Direction;
  #counter = 0;
  #broken = false;

  constructor(key: Buffer, dir: Direction) {
    this.#key = key;
    this.#dir = dir;
  }

  open(frame: string): OpenResult {
    if (this.#broken) return { ok: false, reason: 'bad-mac' };
    if (frame.length < MAC_LENGTH + 2 || frame.charCodeAt(MAC_LENGTH) !== 0x20 || !MAC_PATTERN.test(frame.slice(0, MAC_LENGTH))) {
      this.#broken = true;
      return { ok: false, reason: 'malformed' };
    }
    const json = frame.slice(MAC_LENGTH + 1);
    const expected = Buffer.from(frameMac(this.#key, this.#dir, this.#counter, json), 'utf8');
    const got = Buffer.from(frame.slice(0, MAC_LENGTH), 'utf8');
    if (!timingSafeEqual(expected, got)) {
      this.#broken = true;
      return { ok: false, reason: 'bad-mac' };
    }
    this.#counter++;
    return { ok: true, json };
  }

  get broken(): boolean {
    return this.#broken;
  }
}
