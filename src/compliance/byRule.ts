import type { ComplianceReport, Unverifiable, Violation } from './report.ts';

/**
 * The compliance report arranged the way a DPO reads it: one section per rule of DESIGN §2 from
 * R3 to R11, each saying whether it holds, with every violation and its evidence, what could
 * not be checked, and, for rules no automatic check covers, why not. Pure.
 */

export const RULE_IDS = ['R3', 'R4', 'R5', 'R6', 'R7', 'R8', 'R9', 'R10', 'R11'] as const;
export type RuleId = (typeof RULE_IDS)[number];

export const RULE_TITLES: Readonly<Record<RuleId, string>> = Object.freeze({
  R3: 'Customer consent is an explicit opt-in, with evidence',
  R4: 'Nothing is recorded before consent',
  R5: 'Declining changes nothing for the call; withdrawal stops recording at once',
  R6: 'Agents are recorded only inside scheduled windows and within a monthly cap',
  R7: 'The agent can always tell whether the call is being recorded',
  R8: 'Recordings are kept at most 30 days',
  R9: 'Deletion and erasure cover every copy',
  R10: 'Only the recorded agent and their team lead list or play a recording',
  R11: 'Every access is in a tamper-evident audit trail',
});

/** Rules no automatic check covers here, and why. */
const NOT_CHECKED: Partial<Record<RuleId, string>> = {
  R5: 'Not checked automatically: the call itself (its media path) is outside the recording store; the gate tests show a declined or withdrawn consent writes nothing.',
  R7: 'Not checked here: each recorder reports its live recording state per call to the control plane (call_recording_states); the agent desktop shows it.',
};

/** A check beyond the store/trail report (the control plane's ledger, the catalogue). */
export interface ExtraCheck {
  check: string;
  rules: readonly RuleId[];
  description: string;
  violations: Violation[] | Array<{ recordingId?: string; message: string; evidence: Violation['evidence'] }>;
  unverifiable?: Array<{ recordingId?: string; reason: string }>;
}

/** Which rules each check of the report speaks to. */
const CHECK_RULES: Readonly<Record<string, readonly RuleId[]>> = Object.freeze({
  'consent-before-first-packet': ['R3', 'R4'],
  'inside-agent-window': ['R6'],
  'monthly-cap': ['R6'],
  'retention-at-most-30-days': ['R8'],
  'no-expired-object': ['R8', 'R9'],
  'access-by-allowed-role': ['R10', 'R11'],
});

export type SectionStatus = 'holds' | 'violated' | 'unverifiable' | 'not-checked';

export interface RuleCheck {
  check: string;
  description: string;
  status: SectionStatus;
  violations: Array<{ recordingId?: string; message: string; evidence: Violation['evidence'] }>;
  unverifiable: Array<{ recordingId?: string; reason: string }>;
}

export interface RuleSection {
  rule: RuleId;
  title: string;
  status: SectionStatus;
  checks: RuleCheck[];
  note?: string;
}

function statusOf(v: number, u: number): SectionStatus {
  return v > 0 ? 'violated' : u > 0 ? 'unverifiable' : 'holds';
}

export function reportByRule(report: ComplianceReport, extra: readonly ExtraCheck[] = [], audit?: { ok: boolean; brokenAt?: { stream: string; seq: number; reason: string } }): RuleSection[] {
  const checks: Array<RuleCheck & { rules: readonly RuleId[] }> = report.rules.map((r) => {
    const violations = report.violations.filter((v: Violation) => v.rule === r.rule).map(({ recordingId, message, evidence }) => ({ ...(recordingId === undefined ? {} : { recordingId }), message, evidence }));
    const unverifiable = report.unverifiable.filter((u: Unverifiable) => u.rule === r.rule).map(({ recordingId, reason }) => ({ ...(recordingId === undefined ? {} : { recordingId }), reason }));
    return { check: r.rule, description: r.description, rules: CHECK_RULES[r.rule] ?? [], status: statusOf(violations.length, unverifiable.length), violations, unverifiable };
  });
  for (const x of extra) {
    const unverifiable = x.unverifiable ?? [];
    checks.push({ check: x.check, description: x.description, rules: x.rules, status: statusOf(x.violations.length, unverifiable.length), violations: [...x.violations], unverifiable: [...unverifiable] });
  }
  if (audit !== undefined) {
    checks.push({
      check: 'audit-chain-unbroken',
      description: 'R11: every stream of the audit trail verifies from its first entry to its head',
      rules: ['R11'],
      status: audit.ok ? 'holds' : 'violated',
      violations: audit.ok || audit.brokenAt === undefined ? [] : [{ message: `the chain of ${audit.brokenAt.stream} breaks at entry ${audit.brokenAt.seq} (${audit.brokenAt.reason})`, evidence: { ...audit.brokenAt } }],
      unverifiable: [],
    });
  }
  return RULE_IDS.map((rule): RuleSection => {
    const mine = checks.filter((c) => c.rules.includes(rule)).map(({ rules: _r, ...c }) => c);
    if (mine.length === 0) return { rule, title: RULE_TITLES[rule], status: 'not-checked', checks: [], note: NOT_CHECKED[rule] ?? 'No automatic check covers this rule yet.' };
    const v = mine.reduce((n, c) => n + c.violations.length, 0);
    const u = mine.reduce((n, c) => n + c.unverifiable.length, 0);
    return { rule, title: RULE_TITLES[rule], status: statusOf(v, u), checks: mine };
  });
}
