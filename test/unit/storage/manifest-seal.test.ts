/**
 * Sealed manifests (issue 19, docs/storage.md): the stored form names no subject, opens only with
 * the keyring and under its own recording id, and the plain form older versions wrote still reads.
 */
import { describe, expect, it } from 'vitest';
import { Keyring } from '../../../src/crypto/Keyring.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';
import {
  MANIFEST_FORMAT,
  SEALED_MANIFEST_FORMAT,
  openManifest,
  plainManifestBytes,
  sealManifest,
  unsealManifestJson,
  type RecordingManifest,
} from '../../../src/storage/manifest.ts';

const k1 = Keyring.generateKeyBase64();
const k2 = Keyring.generateKeyBase64();
const ring1 = Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1 } });
const ring12 = Keyring.fromConfig({ activeKeyId: 'k2', keys: { k1, k2 } });

function manifest(recordingId = 'r_00000000000000aa'): RecordingManifest {
  return {
    format: MANIFEST_FORMAT,
    recordingId,
    callId: 'call-1',
    nodeId: 'node-1',
    state: 'ended',
    startedAtMs: 1_700_000_000_000,
    endedAtMs: 1_700_000_060_000,
    retentionSeconds: 86_400,
    retentionClass: 'training-1d',
    expiresAtMs: 1_700_086_400_000,
    expiresAt: '2023-11-15T22:13:20Z',
    participants: [
      { participantId: 'leg-a', role: 'agent', subjectId: 'agent-SUBJECT-7', teamLeadId: 'lead-SUBJECT-9' },
      { participantId: 'leg-c', role: 'customer', subjectId: 'cust-SUBJECT-3' },
    ],
    consentEvidence: [{ method: 'dtmf', at: 1_700_000_001_000, infoVersion: 'v1', subjectId: 'cust-SUBJECT-3' }],
    segments: [],
    revision: 3,
    updatedAtMs: 1_700_000_060_000,
  };
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (isOptinError(err)) return err.code;
    throw err;
  }
  return 'none';
}

describe('sealed manifests', () => {
  it('the stored form shows only format, recording id, KEK id and ciphertext, and opens to the same manifest', () => {
    const m = manifest();
    const stored = sealManifest(m, ring1);
    const text = stored.toString();
    expect(text).not.toMatch(/SUBJECT/);
    const env = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(env).sort()).toEqual(['alg', 'ciphertext', 'format', 'kekId', 'nonce', 'recordingId']);
    expect(env).toMatchObject({ format: SEALED_MANIFEST_FORMAT, recordingId: m.recordingId, kekId: 'k1', alg: 'A256GCM' });
    expect(openManifest(stored, m.recordingId, ring1)).toEqual(m);
    // Two seals of the same manifest differ (random nonce): nothing to compare across versions.
    expect(sealManifest(m, ring1).toString()).not.toBe(text);
  });

  it('opens under a retired KEK after rotation; KEK_UNKNOWN without it; MANIFEST_TAMPERED under other material', () => {
    const stored = sealManifest(manifest(), ring1);
    expect(openManifest(stored, 'r', ring12).participants[1]!.subjectId).toBe('cust-SUBJECT-3');
    expect(codeOf(() => openManifest(stored, 'r', Keyring.fromConfig({ activeKeyId: 'k2', keys: { k2 } })))).toBe('KEK_UNKNOWN');
    expect(codeOf(() => openManifest(stored, 'r', Keyring.fromConfig({ activeKeyId: 'k1', keys: { k1: k2 } })))).toBe('MANIFEST_TAMPERED');
  });

  it('an envelope relabelled for another recording, or a manifest sealed for one and stored as another, is refused', () => {
    const a = manifest('r_00000000000000aa');
    const env = JSON.parse(sealManifest(a, ring1).toString()) as Record<string, unknown>;
    expect(codeOf(() => openManifest(JSON.stringify({ ...env, recordingId: 'r_00000000000000bb' }), 'r', ring1))).toBe('MANIFEST_TAMPERED');
    expect(codeOf(() => openManifest(JSON.stringify({ ...env, kekId: 'k2' }), 'r', ring12))).toBe('MANIFEST_TAMPERED');
  });

  it('reads the plain MAC-signed form older versions wrote; refuses it unsigned or altered', () => {
    const m = manifest();
    const plain = plainManifestBytes(m, ring1);
    expect(plain.toString()).toContain('cust-SUBJECT-3');
    expect(openManifest(plain, m.recordingId, ring1)).toEqual(m);
    const altered = JSON.parse(plain.toString()) as RecordingManifest;
    altered.participants[0]!.teamLeadId = 'lead-other';
    expect(codeOf(() => openManifest(JSON.stringify(altered), 'r', ring1))).toBe('MANIFEST_TAMPERED');
    expect(codeOf(() => openManifest(JSON.stringify(m), 'r', ring1))).toBe('MANIFEST_TAMPERED');
    // What a tamper test edits: the signed JSON inside either form.
    expect(unsealManifestJson(sealManifest(m, ring1), 'r', ring1).toString()).toBe(plain.toString());
    expect(unsealManifestJson(plain, 'r', ring1).toString()).toBe(plain.toString());
  });
});
