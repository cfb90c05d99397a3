/**
 * Pure units of the people's side: the player's timeline (gaps, concealed stretches, the consent
 * instant), consent evidence in words, the DPO's spot-check verdicts, the compliance report per
 * rule, what a list entry shows each role, HTML escaping and data blocks, the content security
 * policy, the sign-in's return address, and pages rendered for each role.
 */
import { describe, expect, it } from 'vitest';
import { consentInWords, durationWords, expiresInWords } from '../../../src/access/consentWords.ts';
import { listEntryView } from '../../../src/access/policy.ts';
import { judgeSpotCheck } from '../../../src/access/spotCheck.ts';
import { buildTimeline, offsetWords } from '../../../src/access/timeline.ts';
import { contentSecurityPolicy } from '../../../src/api/people.ts';
import { safeReturnTo } from '../../../src/api/signInRoutes.ts';
import { reportByRule } from '../../../src/compliance/byRule.ts';
import { evaluateCompliance } from '../../../src/compliance/report.ts';
import type { RecordingManifest } from '../../../src/storage/manifest.ts';
import { html, jsonBlock } from '../../../src/web/html.ts';
import { page } from '../../../src/web/layout.ts';
import { recordingsPage } from '../../../src/web/pages/recordings.ts';

const T0 = Date.parse('2026-05-03T14:03:12Z');

function seg(participantId: string, segment: number, run: number, startMs: number, durationMs: number, quality: Record<string, number | string> = {}) {
  return { participantId, segment, run, startWallClockMs: T0 + startMs, durationMs, quality };
}

describe('timeline of the coaching player', () => {
  const participants = [
    { participantId: 'a', role: 'agent' as const },
    { participantId: 'c', role: 'customer' as const },
  ];

  it('marks a gate pause, a loss gap and a concealed stretch on their side, and the consent instant', () => {
    const t = buildTimeline({
      participants,
      segments: [
        seg('a', 0, 0, 0, 2000),
        seg('a', 1, 0, 2000, 2000),
        seg('a', 2, 0, 4500, 2000), // 500 ms lost in transit
        seg('c', 0, 0, 100, 2000),
        seg('c', 1, 1, 4100, 2000, { concealedMs: 180, silenceFilledMs: 0 }), // paused 2 s, then concealment
        seg('c', 2, 1, 6100, 2000, { concealedMs: 10 }), // ordinary jitter work: not marked
      ],
      consentEvidence: [{ at: T0 - 1200 }],
    })!;
    expect(t.durationMs).toBe(8100);
    expect(t.consentAtMs).toBe(-1200);
    const marks = t.marks.map((m) => [m.kind, m.side, m.startMs, m.endMs]);
    expect(marks).toEqual([
      ['consent', 'both', 0, 0],
      ['gap', 'customer', 2100, 4100],
      ['gap', 'agent', 4000, 4500],
      ['concealed', 'customer', 4100, 6100],
    ]);
    expect(t.marks.find((m) => m.kind === 'gap' && m.side === 'customer')!.label).toContain('paused for 2.0 s');
    expect(t.marks.find((m) => m.kind === 'concealed')!.label).toContain('0.2 s concealed');
    expect(t.marks[0]!.label).toContain('1.2 s before');
  });

  it('says so when consent came after the first sample, and leaves erased or excluded sides out', () => {
    const t = buildTimeline({ participants, segments: [seg('a', 0, 0, 0, 2000), seg('c', 0, 0, 0, 2000), seg('c', 1, 1, 5000, 1000)], consentEvidence: [{ at: T0 + 750 }], excluded: new Set(['c']) })!;
    expect(t.durationMs).toBe(2000);
    expect(t.marks).toEqual([{ kind: 'consent', side: 'both', startMs: 750, endMs: 750, label: 'consent given here: 0.8 s AFTER the first recorded sample' }]);
    expect(buildTimeline({ participants: [{ participantId: 'a', role: 'agent', erased: { atMs: 1, reason: 'x' } }], segments: [seg('a', 0, 0, 0, 1000)], consentEvidence: [] })).toBeNull();
    expect(offsetWords(65_300)).toBe('1:05.3');
  });
});

describe('consent evidence in words', () => {
  it('says who did what, when (UTC) and after which information', () => {
    expect(consentInWords({ method: 'dtmf', at: T0, infoVersion: '2026-01.v1', ref: 'ivr-secret' })).toBe(
      'The customer pressed a key on the phone keypad at 14:03:12 UTC on 3 May 2026, after hearing information version 2026-01.v1.',
    );
    expect(consentInWords({ method: 'voice', at: T0, infoVersion: 'v2' }, 'withdrawn')).toBe('The customer withdrew consent (said yes when asked) at 14:03:12 UTC on 3 May 2026, after hearing information version v2.');
    expect(consentInWords({})).toBe('The customer agreed to the recording (time not recorded), with no record of the information given.');
    expect(consentInWords({ method: 'dtmf', at: T0, infoVersion: 'v', ref: 'ivr-secret' })).not.toContain('ivr-secret');
    expect(expiresInWords(T0 + 12.5 * 86_400_000, T0)).toBe('in 12 days');
    expect(expiresInWords(T0 + 3 * 3_600_000, T0)).toBe('in 3 hours');
    expect(expiresInWords(T0 - 1, T0)).toBe('expired');
    expect(durationWords(245_000)).toBe('4 min 05 s');
    expect(durationWords(58_400)).toBe('58 s');
  });
});

describe('spot check verdicts (R3, R4, R6, R8)', () => {
  const manifest = {
    participants: [
      { participantId: 'a', role: 'agent' as const, subjectId: 'agent-1' },
      { participantId: 'c', role: 'customer' as const, subjectId: 'cust-1' },
    ],
    segments: [{ ...seg('a', 0, 0, 0, 2000), objectKey: '', opusPayloadBytes: 0, oggBytes: 0, sealedBytes: 0, sha256: '' }],
    consentEvidence: [{ method: 'dtmf', at: T0 - 500, infoVersion: 'v1' }],
    policy: { agentWindows: [{ start: T0 - 60_000, end: T0 + 60_000 }], monthlyCap: 3 },
    retentionSeconds: 2_592_000,
  };
  const base = { recordingId: 'r1', startedAtMs: T0, expiresAtMs: T0 + 30 * 86_400_000, agentIds: ['agent-1'], month: '2026-05' };

  it('holds when consent precedes, segments lie in a window, the cap holds and expiry is within 30 days', () => {
    const v = judgeSpotCheck({ ...base, manifest, countThatMonth: 2 }, T0);
    expect([v.consent.verdict, v.window.verdict, v.cap.verdict, v.expiry.verdict]).toEqual(['holds', 'holds', 'holds', 'holds']);
    expect(v.consent.words[0]).toContain('pressed a key');
  });

  it('finds each violation, with evidence in words', () => {
    const late = { ...manifest, consentEvidence: [{ method: 'dtmf', at: T0 + 900, infoVersion: 'v1' }], policy: { agentWindows: [{ start: T0 + 10_000, end: T0 + 60_000 }], monthlyCap: 1 } };
    const v = judgeSpotCheck({ ...base, expiresAtMs: T0 + 31 * 86_400_000, manifest: late, countThatMonth: 2 }, T0);
    expect([v.consent.verdict, v.window.verdict, v.cap.verdict, v.expiry.verdict]).toEqual(['violated', 'violated', 'violated', 'violated']);
    expect(v.consent.detail).toContain('900 ms BEFORE the consent');
    const gone = judgeSpotCheck({ ...base, manifest: null }, T0);
    expect([gone.consent.verdict, gone.window.verdict, gone.cap.verdict]).toEqual(['unverifiable', 'unverifiable', 'unverifiable']);
  });
});

describe('compliance report per rule', () => {
  it('puts each check under the rules it speaks to; rules without a check say why', () => {
    const m: RecordingManifest = {
      format: 'optin-manifest/1',
      recordingId: 'r_bad',
      callId: 'c1',
      nodeId: 'n',
      state: 'ended',
      startedAtMs: T0,
      retentionSeconds: 2_592_000,
      retentionClass: 'training-30d',
      expiresAtMs: T0 + 86_400_000,
      expiresAt: new Date(T0 + 86_400_000).toISOString(),
      participants: [
        { participantId: 'a', role: 'agent', subjectId: 'agent-1' },
        { participantId: 'c', role: 'customer', subjectId: 'cust-1' },
      ],
      consentEvidence: [{ method: 'dtmf', at: T0 + 5000, infoVersion: 'v' }],
      policy: { agentWindows: [{ start: T0 - 1000, end: T0 + 60_000 }], monthlyCap: 10 },
      segments: [{ ...seg('c', 0, 0, 0, 2000), objectKey: 'k', opusPayloadBytes: 1, oggBytes: 1, sealedBytes: 1, sha256: 'a'.repeat(64) }],
      revision: 1,
      updatedAtMs: T0,
    };
    const report = evaluateCompliance({ nowMs: T0, manifests: [m], media: { byRecording: new Map(), keysByRecording: new Map(), orphanExpiry: new Map(), complete: true }, audit: [] }, () => undefined);
    const sections = reportByRule(report, [{ check: 'erasures-and-deletions-carried-out', rules: ['R9'], description: 'R9', violations: [] }], { ok: false, brokenAt: { stream: 'cp-1', seq: 4, reason: 'hash-mismatch' } });
    expect(sections.map((s) => s.rule)).toEqual(['R3', 'R4', 'R5', 'R6', 'R7', 'R8', 'R9', 'R10', 'R11']);
    const by = Object.fromEntries(sections.map((s) => [s.rule, s]));
    expect(by.R3!.status).toBe('violated');
    expect(by.R4!.checks[0]!.violations[0]).toMatchObject({ recordingId: 'r_bad', evidence: { consentAt: new Date(T0 + 5000).toISOString() } });
    expect(by.R5!.status).toBe('not-checked');
    expect(by.R5!.note).toContain('Not checked automatically');
    expect(by.R6!.status).toBe('holds');
    expect(by.R9!.checks.map((c) => c.check)).toEqual(['no-expired-object', 'erasures-and-deletions-carried-out']);
    expect(by.R11!.status).toBe('violated');
    expect(by.R11!.checks.find((c) => c.check === 'audit-chain-unbroken')!.violations[0]!.message).toContain('breaks at entry 4');
  });
});

describe('what a list entry shows each role', () => {
  const row = {
    recordingId: 'r1',
    callId: 'call-9',
    state: 'complete',
    startedAt: T0,
    endedAt: T0 + 1000,
    expiresAt: T0 + 2000,
    participants: [
      { participantId: 'a', role: 'agent' as const, subjectId: 'agent-1', teamLeadId: 'lead-1' },
      { participantId: 'c', role: 'customer' as const, subjectId: 'cust-1' },
      { participantId: 'c2', role: 'customer' as const },
    ],
  };
  it('never a customer id to agents or team leads; the call id to the DPO only; erased participants as such', () => {
    for (const p of [{ sub: 'agent-1', role: 'agent' as const }, { sub: 'lead-1', role: 'team-lead' as const }]) {
      const v = listEntryView(p, row);
      expect(JSON.stringify(v)).not.toContain('cust-1');
      expect(JSON.stringify(v)).not.toContain('call-9');
      expect(v.participants[0]).toEqual({ role: 'agent', subjectId: 'agent-1', teamLeadId: 'lead-1', erased: false });
    }
    const dpo = listEntryView({ sub: 'dpo', role: 'dpo' }, row);
    expect(dpo.callId).toBe('call-9');
    expect(dpo.participants[1]).toEqual({ role: 'customer', subjectId: 'cust-1', erased: false });
    expect(dpo.participants[2]).toEqual({ role: 'customer', erased: true });
  });
});

describe('HTML and headers', () => {
  it('escapes every value; data blocks cannot close their script element', () => {
    const evil = '<script>alert(1)</script>"\'&`';
    expect(html`<p title="${evil}">${evil}</p>`.value).toBe('<p title="&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&#96;">&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&#96;</p>');
    expect(html`${[html`<b>a</b>`, 'b<']}`.value).toBe('<b>a</b>b&lt;');
    const block = jsonBlock('t', { label: '</script><script>x()</script>' }).value;
    expect(block).not.toContain('</script><script>');
    expect(JSON.parse(block.slice(block.indexOf('>') + 1, block.lastIndexOf('</script>')))).toEqual({ label: '</script><script>x()</script>' });
  });

  it('the CSP allows scripts from this origin only and styles by nonce, never inline scripts', () => {
    const csp = contentSecurityPolicy({ styleNonce: 'abc', formTargets: ['https://idp.example'], tls: true });
    expect(csp).toContain("script-src 'self';");
    expect(csp).toContain("script-src-attr 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(csp).toContain("style-src 'self' 'nonce-abc'");
    expect(csp).toContain("form-action 'self' https://idp.example");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain('upgrade-insecure-requests');
  });

  it('returns after sign-in only to a path of this app', () => {
    expect(safeReturnTo('/recordings?cursor=abc')).toBe('/recordings?cursor=abc');
    for (const bad of ['https://evil.example/', '//evil.example', '/\\evil', 'recordings', '/auth/callback?x=1', '/signout', '/a b']) expect(safeReturnTo(bad), bad).toBeUndefined();
  });

  it('pages carry no inline script or style, and the navigation of the role only', () => {
    const body = recordingsPage({ principal: { sub: 'agent-1', role: 'agent' }, entries: [], csrfToken: 'tok', nowMs: T0 });
    const doc = page({ title: 'My recordings', principal: { sub: 'agent-1', role: 'agent' }, csrfToken: 'tok', path: '/recordings', scriptUrl: '/assets/app.x.js', body }).value;
    expect(doc).not.toMatch(/<script(?![^>]*(type="module" src=|type="application\/json"))/);
    expect(doc).not.toMatch(/\sstyle=/);
    expect(doc).not.toMatch(/\son[a-z]+=/);
    expect(doc).toContain('My deletion requests');
    expect(doc).not.toContain('Compliance report');
    expect(doc).toContain('name="_csrf" value="tok"');
    expect(doc).toContain('aria-current="page"');
  });
});
