import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  timingSafeEqual,
  createSecretKey,
  randomBytes,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';
import { inspect } from 'node:util';
import { OptinError } from '../errors/OptinError.ts';
import { ID_PATTERN } from '../ids/ids.ts';

/**
 * Key-encryption keys (KEKs) from configuration, and the wrapping of per-track data keys
 * (docs/architecture.md §5: a keyring with key ids, so keys rotate).
 *
 * Rotation model: the active KEK wraps every NEW data key; retired KEKs stay in the ring only to
 * unwrap data keys they wrapped earlier. Media is never re-encrypted on rotation, and a KEK can be
 * dropped from the ring once nothing wrapped by it is left (all of it is at most 30 days old, R8).
 *
 * Key material lives in `KeyObject`s (which Node never prints) and in private fields; `toJSON`
 * and `util.inspect` show only ids, so a keyring that ends up in a log line or error leaks nothing.
 */

/** Configuration shape: `{ activeKeyId, keys: { [id]: base64 of 32 bytes } }`. */
export interface KeyringConfig {
  activeKeyId: string;
  keys: Record<string, string>;
}

/**
 * A256GCM: AES-256-GCM with a random 96-bit nonce; authenticates a context string (AAD) so a
 * wrapped key copied to another track does not unwrap. The default.
 * A256KW: AES Key Wrap (RFC 3394 §2.2.1, default IV); deterministic, no context binding. Supported
 * for interoperability with KMS/HSM exports that produce RFC 3394 blobs.
 */
export type WrapAlg = 'A256GCM' | 'A256KW';

export interface WrappedKey {
  kekId: string;
  alg: WrapAlg;
  /** base64; never the plaintext key. */
  wrapped: string;
}

export const DATA_KEY_BYTES = 32;
const KEK_BYTES = 32;
const GCM_NONCE_BYTES = 12;
const GCM_TAG_BYTES = 16;
/** RFC 3394 §2.2.3.1 default initial value. */
const KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
/** Strict base64 (RFC 4648 §4, padded); Buffer.from(..., 'base64') silently skips junk. */
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function configError(field: string, problem: string): OptinError {
  return new OptinError(
    'KEYRING_INVALID',
    `keyring configuration: ${field} ${problem}. Each key is 32 random bytes in base64 ` +
      `(generate one with: openssl rand -base64 32).`,
  );
}

/** Base64 to bytes, rejecting anything that is not canonical base64. */
function strictBase64(value: string): Buffer | null {
  if (value.length === 0 || !BASE64_RE.test(value)) return null;
  return Buffer.from(value, 'base64');
}

export class Keyring {
  readonly #activeKeyId: string;
  readonly #keys: ReadonlyMap<string, KeyObject>;
  /** Derived MAC and sealing keys, by use, purpose and KEK id (HKDF once per triple). */
  readonly #derivedKeys = new Map<string, KeyObject>();

  private constructor(activeKeyId: string, keys: Map<string, KeyObject>) {
    this.#activeKeyId = activeKeyId;
    this.#keys = keys;
  }

  /**
   * Validates and loads a keyring configuration. Errors name the offending field (never its value).
   */
  static fromConfig(config: unknown): Keyring {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw configError('(root)', 'must be an object { activeKeyId, keys }');
    }
    const { activeKeyId, keys } = config as Record<string, unknown>;
    if (typeof activeKeyId !== 'string' || !ID_PATTERN.test(activeKeyId)) {
      throw configError('activeKeyId', 'must be a key id matching [A-Za-z0-9_-]{1,64}');
    }
    if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) {
      throw configError('keys', 'must be an object mapping key id to base64 key');
    }
    const loaded = new Map<string, KeyObject>();
    for (const [id, value] of Object.entries(keys as Record<string, unknown>)) {
      const field = `keys.${JSON.stringify(id)}`;
      if (!ID_PATTERN.test(id)) throw configError(field, 'has an invalid key id (use [A-Za-z0-9_-]{1,64})');
      if (typeof value !== 'string') throw configError(field, 'must be a base64 string');
      const bytes = strictBase64(value.trim());
      if (bytes === null) throw configError(field, 'is not valid base64');
      try {
        if (bytes.length !== KEK_BYTES) {
          throw configError(field, `decodes to ${bytes.length} bytes, expected ${KEK_BYTES}`);
        }
        loaded.set(id, createSecretKey(bytes));
      } finally {
        bytes.fill(0);
      }
    }
    if (!loaded.has(activeKeyId)) {
      throw configError('activeKeyId', `names key ${JSON.stringify(activeKeyId)}, which is not in keys`);
    }
    return new Keyring(activeKeyId, loaded);
  }

  /** A fresh random KEK in the configuration format (for setup scripts and tests). */
  static generateKeyBase64(): string {
    const bytes = randomBytes(KEK_BYTES);
    const b64 = bytes.toString('base64');
    bytes.fill(0);
    return b64;
  }

  get activeKeyId(): string {
    return this.#activeKeyId;
  }

  keyIds(): string[] {
    return [...this.#keys.keys()];
  }

  has(kekId: string): boolean {
    return this.#keys.has(kekId);
  }

  /**
   * Wraps a 32-byte data key under the active KEK. `context` (A256GCM only) is authenticated, not
   * stored: the same context must be given to `unwrap` (we use the track's ids, so a wrapped key
   * moved to another recording or participant fails to unwrap).
   */
  wrap(dataKey: Buffer, options: { alg?: WrapAlg; context?: string } = {}): WrappedKey {
    if (!Buffer.isBuffer(dataKey) || dataKey.length !== DATA_KEY_BYTES) {
      throw new OptinError('DATA_KEY_INVALID', `a data key must be a Buffer of ${DATA_KEY_BYTES} bytes`);
    }
    const alg = options.alg ?? 'A256GCM';
    const kekId = this.#activeKeyId;
    const kek = this.#kek(kekId);
    if (alg === 'A256KW') {
      const cipher = createCipheriv('id-aes256-wrap', kek, KW_IV);
      const out = Buffer.concat([cipher.update(dataKey), cipher.final()]);
      return { kekId, alg, wrapped: out.toString('base64') };
    }
    if (alg !== 'A256GCM') throw new OptinError('WRAP_ALG_UNSUPPORTED', `unsupported wrap alg ${String(alg)}; use A256GCM or A256KW`);
    const nonce = randomBytes(GCM_NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', kek, nonce);
    cipher.setAAD(wrapAad(kekId, options.context));
    const ct = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return { kekId, alg, wrapped: Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString('base64') };
  }

  /**
   * Unwraps a data key. The caller owns the returned Buffer and should `fill(0)` it when done.
   * Fails with KEK_UNKNOWN (the KEK was removed from the ring) or KEY_UNWRAP_FAILED (wrong KEK
   * material under that id, altered blob, or a context that does not match).
   */
  unwrap(wrapped: WrappedKey, options: { context?: string } = {}): Buffer {
    const { kekId, alg } = wrapped ?? ({} as WrappedKey);
    if (typeof kekId !== 'string' || !this.#keys.has(kekId)) {
      throw new OptinError(
        'KEK_UNKNOWN',
        `data key is wrapped by key-encryption key ${JSON.stringify(String(kekId))}, which is not in the ` +
          `keyring (ids: ${this.keyIds().join(', ')}); keep retired KEKs configured until their recordings expire`,
      );
    }
    const blob = typeof wrapped.wrapped === 'string' ? strictBase64(wrapped.wrapped) : null;
    if (blob === null) throw unwrapFailed(kekId, 'the wrapped key is not valid base64');
    const kek = this.#kek(kekId);
    const out = Buffer.alloc(DATA_KEY_BYTES);
    try {
      let plain: Buffer;
      if (alg === 'A256KW') {
        if (blob.length !== DATA_KEY_BYTES + 8) throw unwrapFailed(kekId, 'wrong wrapped length');
        const d = createDecipheriv('id-aes256-wrap', kek, KW_IV);
        plain = Buffer.concat([d.update(blob), d.final()]);
      } else if (alg === 'A256GCM') {
        if (blob.length !== GCM_NONCE_BYTES + DATA_KEY_BYTES + GCM_TAG_BYTES) {
          throw unwrapFailed(kekId, 'wrong wrapped length');
        }
        const d = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, GCM_NONCE_BYTES));
        d.setAAD(wrapAad(kekId, options.context));
        d.setAuthTag(blob.subarray(blob.length - GCM_TAG_BYTES));
        plain = Buffer.concat([d.update(blob.subarray(GCM_NONCE_BYTES, blob.length - GCM_TAG_BYTES)), d.final()]);
      } else {
        throw new OptinError('WRAP_ALG_UNSUPPORTED', `unsupported wrap alg ${JSON.stringify(String(alg))}`);
      }
      plain.copy(out);
      plain.fill(0);
      return out;
    } catch (err) {
      out.fill(0);
      if (err instanceof OptinError) throw err;
      // OpenSSL's message ("unsupported state or unable to authenticate data") says nothing useful
      // and could in theory echo input; replace it.
      throw unwrapFailed(kekId, 'authentication failed (wrong KEK material for this id, altered blob, or wrong context)');
    }
  }

  /**
   * HMAC-SHA256 of `data` under a key derived from a KEK (HKDF-SHA256, RFC 5869, with `purpose`
   * and the KEK id as info), so metadata kept beside the keys (manifests) is authenticated by
   * whoever holds the keyring (recorders, the control plane) and by nobody else. The active KEK
   * signs; any KEK still in the ring verifies, so rotation needs no rewrite.
   */
  mac(purpose: string, data: string | Buffer, kekId: string = this.#activeKeyId): { kekId: string; mac: string } {
    return { kekId, mac: createHmac('sha256', this.#macKey(purpose, kekId)).update(data).digest('hex') };
  }

  /** True when `mac` is `data`'s MAC under the KEK `kekId` for `purpose`; KEK_UNKNOWN when that KEK left the ring. */
  verifyMac(purpose: string, data: string | Buffer, kekId: string, mac: string): boolean {
    if (!this.#keys.has(kekId)) {
      throw new OptinError('KEK_UNKNOWN', `MAC made under key-encryption key ${JSON.stringify(String(kekId))}, which is not in the keyring (ids: ${this.keyIds().join(', ')})`);
    }
    const want = Buffer.from(this.mac(purpose, data, kekId).mac, 'hex');
    const got = Buffer.from(typeof mac === 'string' && /^[0-9a-f]{64}$/.test(mac) ? mac : '', 'hex');
    return got.length === want.length && timingSafeEqual(got, want);
  }

  /**
   * AES-256-GCM (random 96-bit nonce) under a key derived from the active KEK for `purpose`
   * (HKDF-SHA256, RFC 5869, info `optin/seal/v1`, purpose and KEK id: never the MAC key, never a
   * data key). For metadata that only keyring holders may read (manifests: they name subject ids).
   * `aad` is authenticated, not stored: `open` needs the same (we bind the object's identity, so a
   * sealed blob copied under another name fails to open).
   */
  seal(purpose: string, plaintext: Buffer, aad: string): SealedBlob {
    const kekId = this.#activeKeyId;
    const nonce = randomBytes(GCM_NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#derivedKey('seal', purpose, kekId), nonce);
    cipher.setAAD(sealAad(kekId, aad));
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
    return { kekId, alg: 'A256GCM', nonce: nonce.toString('base64'), ciphertext: ct.toString('base64') };
  }

  /**
   * Opens what `seal` made (under any KEK still in the ring). KEK_UNKNOWN when that KEK left the
   * ring; SEALED_AUTH_FAILED when the blob, its KEK id or the `aad` do not match.
   */
  open(purpose: string, blob: SealedBlob, aad: string): Buffer {
    const { kekId } = blob ?? ({} as SealedBlob);
    if (typeof kekId !== 'string' || !this.#keys.has(kekId)) {
      throw new OptinError('KEK_UNKNOWN', `sealed under key-encryption key ${JSON.stringify(String(kekId))}, which is not in the keyring (ids: ${this.keyIds().join(', ')}); keep retired KEKs configured until their recordings expire`);
    }
    const nonce = typeof blob.nonce === 'string' ? strictBase64(blob.nonce) : null;
    const ct = typeof blob.ciphertext === 'string' ? strictBase64(blob.ciphertext) : null;
    if (blob.alg !== 'A256GCM' || nonce === null || nonce.length !== GCM_NONCE_BYTES || ct === null || ct.length < GCM_TAG_BYTES) {
      throw new OptinError('SEALED_AUTH_FAILED', 'sealed data is malformed (expected A256GCM with a 12-byte nonce and a 16-byte tag)');
    }
    try {
      const d = createDecipheriv('aes-256-gcm', this.#derivedKey('seal', purpose, kekId), nonce);
      d.setAAD(sealAad(kekId, aad));
      d.setAuthTag(ct.subarray(ct.length - GCM_TAG_BYTES));
      return Buffer.concat([d.update(ct.subarray(0, ct.length - GCM_TAG_BYTES)), d.final()]);
    } catch {
      // OpenSSL's message says nothing useful; name the likely causes instead.
      throw new OptinError('SEALED_AUTH_FAILED', `sealed data does not open under KEK ${JSON.stringify(kekId)}: altered, moved to another object, or other key material under that id`);
    }
  }

  #macKey(purpose: string, kekId: string): KeyObject {
    return this.#derivedKey('mac', purpose, kekId);
  }

  #derivedKey(use: 'mac' | 'seal', purpose: string, kekId: string): KeyObject {
    if (!/^[a-z][a-z0-9-]{0,31}$/.test(purpose)) throw new OptinError('CONFIG_INVALID', `Keyring.${use}: purpose must be a short lowercase label`);
    const id = `${purpose}\n${kekId}`;
    const cacheKey = `${use}\n${id}`;
    let key = this.#derivedKeys.get(cacheKey);
    if (key === undefined) {
      const bytes = Buffer.from(hkdfSync('sha256', this.#kek(kekId), Buffer.alloc(0), `optin/${use}/v1\n${id}`, 32));
      key = createSecretKey(bytes);
      bytes.fill(0);
      this.#derivedKeys.set(cacheKey, key);
    }
    return key;
  }

  #kek(kekId: string): KeyObject {
    const kek = this.#keys.get(kekId);
    if (kek === undefined) throw new OptinError('KEK_UNKNOWN', `key-encryption key ${JSON.stringify(kekId)} is not in the keyring`);
    return kek;
  }

  toJSON(): { activeKeyId: string; keyIds: string[] } {
    return { activeKeyId: this.#activeKeyId, keyIds: this.keyIds() };
  }

  [inspect.custom](): string {
    return `Keyring { activeKeyId: ${JSON.stringify(this.#activeKeyId)}, keyIds: [${this.keyIds().map((k) => JSON.stringify(k)).join(', ')}] }`;
  }

  toString(): string {
    return this[inspect.custom]();
  }
}

/** What `Keyring.seal` returns: JSON-safe, never the key. */
export interface SealedBlob {
  kekId: string;
  alg: 'A256GCM';
  /** base64 of the 12-byte nonce. */
  nonce: string;
  /** base64 of ciphertext followed by the 16-byte GCM tag. */
  ciphertext: string;
}

function sealAad(kekId: string, aad: string): Buffer {
  return Buffer.from(`optin/seal/v1\n${kekId}\n${aad}`, 'utf8');
}

/** The KEK id is authenticated too, so a blob relabelled with another KEK id fails cleanly. */
function wrapAad(kekId: string, context: string | undefined): Buffer {
  return Buffer.from(`optin/wrap/v1\n${kekId}\n${context ?? ''}`, 'utf8');
}

function unwrapFailed(kekId: string, why: string): OptinError {
  return new OptinError('KEY_UNWRAP_FAILED', `cannot unwrap data key with KEK ${JSON.stringify(kekId)}: ${why}`);
}

/** A fresh random data key in a Buffer that is not a slice of Node's shared allocation pool. */
export function newDataKey(): Buffer {
  const key = Buffer.alloc(DATA_KEY_BYTES);
  randomFillSync(key);
  return key;
}
