import type { RecordingManifest } from '../storage/manifest.ts';
import type { Principal, Role } from './roles.ts';

/**
 * Who may do what (R1, R10, R12 in docs/rules.md; docs/architecture.md §6). Pure: facts in, decision out, no I/O, so the whole
 * matrix is unit-tested without a store (test/unit/access/policy.test.ts) and the HTTP layer only
 * gathers facts and applies decisions.
 *
 * - agent: the recordings where they are the recorded agent (list, metadata, coaching playback),
 *   and asking for the deletion of those.
 * - team-lead: the recordings whose agent has them as `teamLeadId` (list, metadata, playback),
 *   their team's deletion requests, and performing the deletion.
 * - dpo: metadata of every recording, the audit trail and the compliance report. Never audio.
 * - extract-operator: subject-access extracts only, each for a case reference.
 *
 * Status: 403 when the ROLE may never use the route (the answer is the same whatever the id, so
 * it reveals nothing); 404 when the role may use the route but not on this recording: the same
 * answer as for an id that does not exist, so probing ids tells an agent nothing about other
 * agents' recordings.
 */

export type Action =
  | 'recordings.list'
  | 'recordings.read'
  | 'recordings.play'
  | 'recordings.delete'
  | 'deletion.request'
  | 'deletion.list'
  | 'extract.create'
  | 'extract.read'
  | 'extract.list'
  | 'deletion.receipt'
  | 'audit.read'
  | 'audit.verify'
  | 'compliance.read'
  | 'spotcheck.read';

/** Roles that may use each action at all (before looking at any recording). */
export const ACTION_ROLES: Readonly<Record<Action, readonly Role[]>> = Object.freeze({
  'recordings.list': ['agent', 'team-lead', 'dpo'],
  'recordings.read': ['agent', 'team-lead', 'dpo'],
  // R10: audio only for the recorded agent and that agent's team lead.
  'recordings.play': ['agent', 'team-lead'],
  // R9: the team lead deletes, at the agent's request.
  'recordings.delete': ['team-lead'],
  'deletion.request': ['agent'],
  'deletion.list': ['agent', 'team-lead', 'dpo'],
  'extract.create': ['extract-operator'],
  'extract.read': ['extract-operator'],
  // Their own jobs only (the API filters by owner).
  'extract.list': ['extract-operator'],
  // The receipt of a deletion: the team lead who carried it out, and the DPO.
  'deletion.receipt': ['team-lead', 'dpo'],
  'audit.read': ['dpo'],
  'audit.verify': ['dpo'],
  'compliance.read': ['dpo'],
  // A random sample of recordings' lawfulness facts (consent, window, cap, expiry): never audio.
  'spotcheck.read': ['dpo'],
});

/** Actions on one recording, where the caller's relation to it matters. */
const RECORDING_ACTIONS = new Set<Action>(['recordings.read', 'recordings.play', 'recordings.delete', 'deletion.request']);

/** What access control needs to know about a recording: its agents and their team leads. */
export interface RecordingFacts {
  agents: Array<{ subjectId: string; teamLeadId?: string }>;
}

export type Relation = 'own' | 'team' | 'none';

export type Decision = { allow: true; relation: Relation } | { allow: false; status: 403 | 404; reason: DenyReason };

export type DenyReason =
  | 'role-not-allowed' // the role never uses this route
  | 'not-found' // no such recording (or not visible: indistinguishable on purpose)
  | 'not-own-recording' // an agent's request on a recording where they are not the agent
  | 'not-team-recording'; // a team lead's request on a recording outside their team

/** The participant fields access control reads: a manifest's participants and a catalogue row's both have them. */
export interface ParticipantFacts {
  role: 'agent' | 'customer';
  subjectId?: string;
  teamLeadId?: string;
  erased?: unknown;
}

/**
 * Reads the access facts from a manifest or a catalogue row. Erased agents no longer link to
 * anyone (R9): the manifest marks them `erased`, the catalogue drops their ids.
 */
export function recordingFacts(m: { participants: readonly ParticipantFacts[] }): RecordingFacts {
  const agents: RecordingFacts['agents'] = [];
  for (const p of m.participants) {
    if (p.role !== 'agent' || p.subjectId === undefined || p.erased !== undefined) continue;
    agents.push({ subjectId: p.subjectId, ...(p.teamLeadId !== undefined ? { teamLeadId: p.teamLeadId } : {}) });
  }
  return { agents };
}

/** How the caller relates to a recording: its recorded agent, that agent's team lead, or neither. */
export function relationTo(principal: Principal, facts: RecordingFacts): Relation {
  if (principal.role === 'agent' && facts.agents.some((a) => a.subjectId === principal.sub)) return 'own';
  if (principal.role === 'team-lead' && facts.agents.some((a) => a.teamLeadId === principal.sub)) return 'team';
  return 'none';
}

/** May the role use the action at all? (Route-level check, before any recording is read.) */
export function authorizeRoute(principal: Principal, action: Action): Decision {
  if (!ACTION_ROLES[action].includes(principal.role)) return { allow: false, status: 403, reason: 'role-not-allowed' };
  return { allow: true, relation: 'none' };
}

/**
 * The full decision. `facts` is null when the recording does not exist (or is expired/deleted);
 * omit it for actions that are not about one recording.
 */
export function authorize(principal: Principal, action: Action, facts?: RecordingFacts | null): Decision {
  const route = authorizeRoute(principal, action);
  if (!route.allow || !RECORDING_ACTIONS.has(action)) return route;
  if (facts === undefined || facts === null) return { allow: false, status: 404, reason: 'not-found' };
  // The DPO sees the metadata of every recording (and only metadata: play is refused above).
  if (principal.role === 'dpo') return { allow: true, relation: 'none' };
  const relation = relationTo(principal, facts);
  if (relation === 'none') {
    return { allow: false, status: 404, reason: principal.role === 'agent' ? 'not-own-recording' : 'not-team-recording' };
  }
  return { allow: true, relation };
}

/** Whether the caller sees the recording in lists (same rule as reading its metadata). */
export function mayList(principal: Principal, facts: RecordingFacts): boolean {
  return authorize(principal, 'recordings.read', facts).allow;
}

// ---- what each role sees of a recording's metadata ----

export interface ParticipantView {
  participantId: string;
  role: 'agent' | 'customer';
  /** Only for the DPO, and for an agent the caller is (or leads). Never a customer's to agents/leads. */
  subjectId?: string;
  teamLeadId?: string;
  erased: boolean;
  segments: number;
  durationMs: number;
}

export interface RecordingView {
  recordingId: string;
  state: RecordingManifest['state'];
  startedAt: string;
  endedAt?: string;
  expiresAt: string;
  retentionClass: string;
  durationMs: number;
  participants: ParticipantView[];
  /** Consent evidence: method, time, information version. The evidence `ref` is the DPO's alone. */
  consentEvidence: Array<Record<string, string | number | boolean | null>>;
  /** Detail view only: when each piece of each track was recorded. */
  segments?: Array<{ participantId: string; segment: number; run: number; start: string; durationMs: number }>;
  /** DPO only: the call id, integrity facts, and the schedule and cap it was admitted under (R6). */
  callId?: string;
  sealedBytes?: number;
  policy?: RecordingManifest['policy'];
}

/**
 * A role-appropriate view of a manifest: agents and team leads see "customer" and never the
 * customer's subject id (R12: nothing identifying the other speaker beyond what coaching needs);
 * the DPO sees every pseudonymous id (spot checks need them). No one sees object keys or digests
 * here: they serve integrity, not the people using the API.
 */
export function recordingView(principal: Principal, m: RecordingManifest, detail: boolean): RecordingView {
  const dpo = principal.role === 'dpo';
  const facts = recordingFacts(m);
  const participants = m.participants.map((p): ParticipantView => {
    const segs = m.segments.filter((s) => s.participantId === p.participantId);
    const teamLeadId = p.teamLeadId;
    // An agent's ids are shown to the DPO, to that agent, and to that agent's team lead.
    const related =
      p.role === 'agent' &&
      p.subjectId !== undefined &&
      (dpo ||
        (principal.role === 'agent' && p.subjectId === principal.sub) ||
        (principal.role === 'team-lead' && facts.agents.some((a) => a.subjectId === p.subjectId && a.teamLeadId === principal.sub)));
    const showIds = p.role === 'customer' ? dpo : related;
    return {
      participantId: p.participantId,
      role: p.role,
      ...(showIds && p.subjectId !== undefined ? { subjectId: p.subjectId } : {}),
      ...(showIds && teamLeadId !== undefined ? { teamLeadId } : {}),
      erased: p.erased !== undefined,
      segments: segs.length,
      durationMs: segs.reduce((a, s) => a + s.durationMs, 0),
    };
  });
  const first = Math.min(...m.segments.map((s) => s.startWallClockMs));
  const last = Math.max(...m.segments.map((s) => s.startWallClockMs + s.durationMs));
  const view: RecordingView = {
    recordingId: m.recordingId,
    state: m.state,
    startedAt: new Date(m.startedAtMs).toISOString(),
    ...(m.endedAtMs === undefined ? {} : { endedAt: new Date(m.endedAtMs).toISOString() }),
    expiresAt: m.expiresAt,
    retentionClass: m.retentionClass,
    durationMs: m.segments.length === 0 ? 0 : Math.max(0, Math.round(last - first)),
    participants,
    consentEvidence: m.consentEvidence.map((e) => {
      if (dpo) return { ...e };
      const { ref: _ref, ...rest } = e;
      return rest;
    }),
  };
  if (detail) {
    view.segments = m.segments.map((s) => ({
      participantId: s.participantId,
      segment: s.segment,
      run: s.run,
      start: new Date(s.startWallClockMs).toISOString(),
      durationMs: s.durationMs,
    }));
  }
  if (dpo) {
    view.callId = m.callId;
    view.sealedBytes = m.segments.reduce((a, s) => a + s.sealedBytes, 0);
    if (m.policy !== undefined) view.policy = structuredClone(m.policy);
  }
  return view;
}

/** caseRef of an extract request (R12 accountability: every extract names its case). */
export const CASE_REF_RE = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Audit entry types written for each allowed access, and the action they record. The compliance
 * report checks every such entry against ACTION_ROLES (R11: every access by an allowed role), so
 * the rules live in one place.
 */
export const ACCESS_AUDIT_TYPES: Readonly<Record<string, Action>> = Object.freeze({
  'access.list': 'recordings.list',
  'access.metadata': 'recordings.read',
  'access.play': 'recordings.play',
  'access.delete': 'recordings.delete',
  'deletion.requested': 'deletion.request',
  'access.deletion-requests': 'deletion.list',
  extract: 'extract.create',
  'extract.download': 'extract.read',
  'access.audit': 'audit.read',
  'access.audit-verify': 'audit.verify',
  'access.compliance': 'compliance.read',
  'access.spot-check': 'spotcheck.read',
  'access.extract-jobs': 'extract.list',
  'access.deletion-receipt': 'deletion.receipt',
});

/** Roles allowed to have produced an access entry of `type` (undefined: not an access type). */
export function rolesForAuditType(type: string): readonly Role[] | undefined {
  const action = ACCESS_AUDIT_TYPES[type];
  return action === undefined ? undefined : ACTION_ROLES[action];
}

// ---- what each role sees of a catalogue row (lists) ----

export interface ListEntryParticipant {
  role: 'agent' | 'customer';
  /** Same rule as ParticipantView: an agent's id for the DPO, that agent and their lead; a customer's for the DPO only. */
  subjectId?: string;
  teamLeadId?: string;
  erased: boolean;
}

export interface ListEntryView {
  recordingId: string;
  state: string;
  startedAt: number;
  endedAt: number | null;
  expiresAt: number;
  participants: ListEntryParticipant[];
  /** DPO only. */
  callId?: string;
}

/** The fields of a catalogue row a list shows, as the caller may see them. */
export function listEntryView(
  principal: Principal,
  row: {
    recordingId: string;
    callId: string;
    state: string;
    startedAt: number;
    endedAt: number | null;
    expiresAt: number;
    participants: ReadonlyArray<{ participantId: string; role: 'agent' | 'customer'; subjectId?: string; teamLeadId?: string }>;
  },
): ListEntryView {
  const dpo = principal.role === 'dpo';
  const participants = row.participants.map((p): ListEntryParticipant => {
    const related =
      p.role === 'agent' &&
      p.subjectId !== undefined &&
      (dpo || (principal.role === 'agent' && p.subjectId === principal.sub) || (principal.role === 'team-lead' && p.teamLeadId === principal.sub));
    const show = p.role === 'customer' ? dpo : related;
    return {
      role: p.role,
      ...(show && p.subjectId !== undefined ? { subjectId: p.subjectId } : {}),
      ...(show && p.teamLeadId !== undefined ? { teamLeadId: p.teamLeadId } : {}),
      // The catalogue drops an erased participant's ids (R9).
      erased: p.subjectId === undefined,
    };
  });
  return {
    recordingId: row.recordingId,
    state: row.state,
    startedAt: row.startedAt,
    endedAt: row.endedAt,
    expiresAt: row.expiresAt,
    participants,
    ...(dpo ? { callId: row.callId } : {}),
  };
}
