import { describe, expect, it } from 'vitest';
import { IdSchema, assertId, idProblem, isId, personalLook } from '../../../src/ids/ids.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

describe('pseudonymous ids (docs/rules.md, "Ids")', () => {
  it('refuses what looks like a phone number: 7+ digits with an optional + and typed separators', () => {
    for (const v of ['46701234567', '+46701234567', '0701234567', '070-123-4567', '070_123_4567', '1234567', '+46 70 123 45 67', '(070) 123.45/67']) {
      expect(personalLook(v), v).toBe('phone-number');
      expect(isId(v), v).toBe(false);
    }
  });

  it('refuses what looks like an e-mail address', () => {
    for (const v of ['anna@example.com', 'a@b']) expect(personalLook(v), v).toBe('e-mail-address');
  });

  it('accepts pseudonymous ids, prefixed numbers and short numbers', () => {
    for (const v of ['cust-b33f', 'call-20240605123456', 'r_0123456789abcdef', 'p-1', '123456', 'agent_7', 'ucid-00024328271770064999', 'k1']) {
      expect(isId(v), v).toBe(true);
      expect(IdSchema.safeParse(v).success, v).toBe(true);
    }
  });

  it('says why with a clear error, without echoing the personal datum', () => {
    let message = '';
    try {
      assertId('subjectId', '46701234567');
    } catch (err) {
      expect(isOptinError(err, 'INVALID_ID')).toBe(true);
      message = (err as Error).message;
    }
    expect(message).toMatch(/subjectId looks like a phone number .*pseudonymous id/);
    expect(message).not.toContain('46701234567');
    expect(idProblem('x@y.z')).toMatch(/e-mail address/);
    expect(IdSchema.safeParse('46701234567').error?.issues[0]?.message).toMatch(/not a phone number or an e-mail address/);
  });
});
