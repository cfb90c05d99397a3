import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Keyring, newDataKey } from '../../../src/crypto/Keyring.ts';
import { optinErrorOf } from '../../support/optinErrors.ts';

const k1 = Keyring.generateKeyBase64();
const k2 = Keyring.generateKeyBase64();

describe('Keyring configuration', () => {
  it('rejects bad base64, wrong length and a missing active id, naming the field and not the value', () => {
    const bad64 = optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: 'not base64!!' } }));
    expect(bad64.code).toBe('KEYRING_INVALID');
    expect(bad64.message).toContain('keys."k1"');
    expect(bad64.message).toContain('not valid base64');
    expect(bad64.message).not.toContain('not base64!!');

    const short = Buffer.alloc(16, 7).toString('base64');
    const len = optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: short } }));
    expect(len.code).toBe('KEYRING_INVALID');
    expect(len.message).toContain('16 bytes, expected 32');
    expect(len.message).not.toContain(short);

    const missing = optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k9', keys: { k1 } }));
    expect(missing.message).toContain('activeKeyId');
    expect(missing.message).toContain('k9');
    expect(missing.message).not.toContain(k1);

    expect(optinErrorOf(() => Keyring.fromConfig({ keys: { k1 } })).message).toContain('activeKeyId');
    expect(optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k1' })).message).toContain('keys');
    expect(optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k1', keys: { 'bad id': k1 } })).message).toContain('invalid key id');
    expect(optinErrorOf(() => Keyring.fromConfig(null)).code).toBe('KEYRING_INVALID');
  });

  it('never shows key material in JSON, inspect or string form', () => {
    const ring = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k1, k2 } });
    const shown = [JSON.stringify(ring), inspect(ring, { depth: 10, showHidden: true }), String(ring), JSON.stringify({ ring })];
    for (const s of shown) {
      expect(s).toContain('k2');
      expect(s).not.toContain(k1);
      expect(s).not.toContain(k2);
      expect(s).not.toContain(Buffer.from(k1, 'base64').toString('hex'));
    }
    expect(JSON.parse(JSON.stringify(ring))).toEqual({ activeKeyId: 'k2', keyIds: ['k1', 'k2'] });
  });
});

describe('Keyring wrap/unwrap', () => {
  it('round-trips both algorithms and binds the context', () => {
    const ring = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
    const dk = newDataKey();
    for (const alg of ['A256GCM', 'A256KW'] as const) {
      const w = ring.wrap(dk, { alg, context: 'rec/a' });
      expect(w.kekId).toBe('k1');
      expect(w.alg).toBe(alg);
      expect(Buffer.from(w.wrapped, 'base64').includes(dk)).toBe(false);
      expect(ring.unwrap(w, { context: 'rec/a' }).equals(dk)).toBe(true);
    }
    const w = ring.wrap(dk, { context: 'rec/a' });
    expect(optinErrorOf(() => ring.unwrap(w, { context: 'rec/b' })).code).toBe('KEY_UNWRAP_FAILED');
    expect(optinErrorOf(() => ring.wrap(Buffer.alloc(16))).code).toBe('DATA_KEY_INVALID');
  });

  it('rotation: the new active KEK wraps new keys, old KEKs still unwrap old ones', () => {
    const before = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
    const after = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k1, k2 } });
    const oldKey = newDataKey();
    const newKey = newDataKey();
    const oldWrapped = before.wrap(oldKey, { context: 'c' });
    const newWrapped = after.wrap(newKey, { context: 'c' });
    expect(newWrapped.kekId).toBe('k2');
    expect(after.unwrap(oldWrapped, { context: 'c' }).equals(oldKey)).toBe(true);
    expect(after.unwrap(newWrapped, { context: 'c' }).equals(newKey)).toBe(true);
    // Dropping k1 too early is a clear, specific error.
    const dropped = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k2 } });
    const e = optinErrorOf(() => dropped.unwrap(oldWrapped, { context: 'c' }));
    expect(e.code).toBe('KEK_UNKNOWN');
    expect(e.message).toContain('"k1"');
  });

  it('wrong KEK material under the same id fails cleanly', () => {
    const a = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
    const b = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: k2 } });
    const dk = newDataKey();
    for (const alg of ['A256GCM', 'A256KW'] as const) {
      const e = optinErrorOf(() => b.unwrap(a.wrap(dk, { alg }), {}));
      expect(e.code).toBe('KEY_UNWRAP_FAILED');
      expect(e.message).not.toContain(k1);
    }
    // A blob relabelled as another KEK id fails too (the id is authenticated).
    const both = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1, k2: k1 } });
    const w = both.wrap(dk);
    expect(optinErrorOf(() => both.unwrap({ ...w, kekId: 'k2' })).code).toBe('KEY_UNWRAP_FAILED');
    expect(optinErrorOf(() => both.unwrap({ ...w, wrapped: '***' })).code).toBe('KEY_UNWRAP_FAILED');
  });
});

describe('Keyring seal/open (metadata sealed by the keyring: manifests)', () => {
  const k1 = Keyring.generateKeyBase64();
  const k2 = Keyring.generateKeyBase64();

  it('round-trips under the active KEK, opens under a retired one, and binds purpose, AAD and KEK id', () => {
    const a = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
    const blob = a.seal('manifest', Buffer.from('{"subjectId":"cust-9"}'), 'optin/manifest/v1\nr_1');
    expect(blob).toMatchObject({ kekId: 'k1', alg: 'A256GCM' });
    expect(JSON.stringify(blob)).not.toContain('cust-9');
    expect(a.open('manifest', blob, 'optin/manifest/v1\nr_1').toString()).toBe('{"subjectId":"cust-9"}');
    const rotated = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k1, k2 } });
    expect(rotated.open('manifest', blob, 'optin/manifest/v1\nr_1').toString()).toContain('cust-9');
    expect(optinErrorOf(() => a.open('manifest', blob, 'optin/manifest/v1\nr_2')).code).toBe('SEALED_AUTH_FAILED');
    expect(optinErrorOf(() => a.open('other', blob, 'optin/manifest/v1\nr_1')).code).toBe('SEALED_AUTH_FAILED');
    const twin = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1, k2: k1 } });
    expect(optinErrorOf(() => twin.open('manifest', { ...blob, kekId: 'k2' }, 'optin/manifest/v1\nr_1')).code).toBe('SEALED_AUTH_FAILED');
    expect(optinErrorOf(() => a.open('manifest', { ...blob, nonce: 'AAAA' }, 'optin/manifest/v1\nr_1')).code).toBe('SEALED_AUTH_FAILED');
    expect(optinErrorOf(() => Keyring.fromConfig({ activeKeyId: 'k2', keys: { k2 } }).open('manifest', blob, 'x')).code).toBe('KEK_UNKNOWN');
  });
});
