import { randomBytes } from 'node:crypto';

/**
 * The audit trail's HMAC key for one test file (every writer and verifier of a deployment shares
 * one key; so does everything a test file starts). Random per file: a test that verifies a trail
 * written under another key sees every entry as edited.
 */
export const TEST_AUDIT_KEY: Buffer = randomBytes(32);
export const TEST_AUDIT_KEY_HEX: string = TEST_AUDIT_KEY.toString('hex');

/** Object-lock retention for test audit buckets: GOVERNANCE (removable with the bypass at the end), one day. */
export const TEST_RETENTION = { mode: 'GOVERNANCE', days: 1 } as const;
