import { describe, expect, it } from 'vitest';
import { resolveCallId, resolveParticipantId, toId } from '../../../src/siprec/mapping.ts';
import { SipHeaders, type SipRequest } from '../../../src/sip/SipMessage.ts';

function req(headers: [string, string][] = [], uri = 'sip:srs@10.0.0.1'): SipRequest {
  return { kind: 'request', method: 'INVITE', uri, headers: SipHeaders.from([['Call-ID', 'abc@sbc.example'], ...headers]), body: Buffer.alloc(0) };
}

describe('SIPREC mapping output is pseudonymous (docs/rules.md, "Ids")', () => {
  it('a verbatim AoR user part (a phone number) never becomes a participant id; hashing it does', () => {
    const ctx = { participant: { id: 'p1', aor: 'sip:+46701234567@sbc', ext: new Map() }, stream: undefined, position: 0, request: req() } as unknown as Parameters<typeof resolveParticipantId>[1];
    const verbatim = resolveParticipantId([{ from: 'aor-user', transform: 'verbatim', prefix: '' }], ctx);
    expect(verbatim).toMatchObject({ ok: false, problem: expect.stringMatching(/looks like a phone number or an e-mail address \(not shown\).*hmac-sha256/) });
    expect(JSON.stringify(verbatim)).not.toContain('46701234567');
    expect(resolveParticipantId([{ from: 'aor-user', transform: 'sha256', prefix: 'p-' }], ctx)).toMatchObject({ ok: true, id: expect.stringMatching(/^p-[A-Za-z0-9_-]{22}$/) });
  });

  it('a numeric call reference needs a prefix; with one it is an id', () => {
    const r = req([['X-Optin-Call-Id', '0701234567']]);
    expect(resolveCallId([{ from: 'header', name: 'X-Optin-Call-Id', transform: 'verbatim', prefix: '' }], r, undefined)).toMatchObject({ ok: false, problem: expect.stringMatching(/phone number/) });
    expect(resolveCallId([{ from: 'header', name: 'X-Optin-Call-Id', transform: 'verbatim', prefix: 'pbx-' }], r, undefined)).toMatchObject({ ok: true, id: 'pbx-0701234567' });
    expect(toId('46 70 123 45 67', { transform: 'sanitize', prefix: '' })).toBeUndefined();
  });
});
