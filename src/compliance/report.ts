import { randomInt } from 'node:crypto';
import type { Client } from 'minio';
import { mapLimit } from '../async/promises.ts';
import type { AuditEntry } from '../audit/AuditTrail.ts';
import { isOptinError } from '../errors/OptinError.ts';
import { monthKey } from '../gate/month.ts';
import { MANIFESTS_PREFIX, MAX_RETENTION_SECONDS, MEDIA_PREFIX, TAG_EXPIRES_AT, dataKeyPrefix, mediaPrefix, parseManifestObjectKey, parseMediaObjectKey, type BucketNames } from '../storage/layout.ts';
import type { RecordingManifest } from '../storage/manifest.ts';
import type { RecordingSummary } from '../storage/types.ts';

/**
 * The DPO's compliance report (docs/architecture.md §1 "spot checks", R3-R11): over every recording (or a
 * random sample), were the rules of docs/rules.md kept? Each violation comes with its evidence:
 * pseudonymous ids, instants, object keys, audit entry positions. An empty `violations` list
 * means every checked rule held; rules that cannot be checked for a recording (no policy facts
 * in its manifest) are listed as `unverifiable`, never silently passed.
 *
 * Split in two: `collectComplianceFacts` reads the store, the buckets and the audit trail;
 * `evaluateCompliance` is pure and holds the rules (unit-tested on hand-made facts).
 */

export type ComplianceRule =
  | 'consent-before-first-packet'
  | 'inside-agent-window'
  | 'monthly-cap'
  | 'retention-at-most-30-days'
  | 'no-expired-object'
  | 'access-by-allowed-role'
  | 'manifest-authentic';

export const RULES: Readonly<Record<ComplianceRule, string>> = Object.freeze({
  'consent-before-first-packet': 'R3/R4: the customer consent evidence precedes the first recorded packet of the call',
  'inside-agent-window': "R6: every recorded interval lies inside one of the agent's scheduled recording windows",
  'monthly-cap': "R6: no agent has more recordings in a calendar month (UTC) than the monthly cap in force",
  'retention-at-most-30-days': 'R8: every recording expires at most 30 days after it started',
  'no-expired-object': 'R8/R9: nothing of an expired recording remains (media, data keys, manifest)',
  'access-by-allowed-role': 'R10/R11: every access in the audit trail was made by a role allowed to make it (and playback by the agent or their team lead)',
  'manifest-authentic': "R10/R11: every recording's manifest carries a valid MAC (one changed outside optin, e.g. its team lead or times, is refused and reported)",
});

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

export interface Violation {
  rule: ComplianceRule;
  recordingId?: string;
  message: string;
  evidence: { [k: string]: Json };
}

export interface Unverifiable {
  rule: ComplianceRule;
  recordingId?: string;
  reason: string;
}

export interface ComplianceReport {
  generatedAt: string;
  ok: boolean;
  scope: { recordings: number; checked: number; sample?: number; auditEntries: number };
  rules: Array<{ rule: ComplianceRule; description: string; violations: number; unverifiable: number }>;
  violations: Violation[];
  unverifiable: Unverifiable[];
  notes: string[];
  /**
   * The audit trail's head hashes as anchored in the control plane's database, per writer stream
   * (docs/rules.md "Audit"): the DPO can compare them with `optin audit verify` and with earlier
   * reports. Absent when the report was made without the control plane's registry.
   */
  auditAnchors?: AuditAnchorLine[];
}

/** One writer stream's latest anchor, as printed in the report. */
export interface AuditAnchorLine {
  stream: string;
  seq: number | null;
  hash: string | null;
  /** When the control plane anchored it (ISO), null when never. */
  anchoredAt: string | null;
}

/** What the manifest may carry about the schedule in force when it was recorded (see R6 in docs/rules.md). */
interface ManifestPolicy {
  agentWindows?: Array<{ start: number; end: number }>;
  monthlyCap?: number;
}

export interface MediaListing {
  /** Media object keys per recording id. */
  byRecording: Map<string, string[]>;
  /** Data key object keys of the expired recordings. */
  keysByRecording: Map<string, string[]>;
  /** For recordings with media but no manifest: the expiry tag of one object (ISO), if any. */
  orphanExpiry: Map<string, string | null>;
  /** False in sample mode: orphans were not looked for. */
  complete: boolean;
}

export interface ComplianceFacts {
  nowMs: number;
  manifests: RecordingManifest[];
  /** Recording ids to check; undefined = all. */
  checkIds?: Set<string>;
  sample?: number;
  media: MediaListing;
  audit: AuditEntry[];
  /** Recordings whose manifest failed its MAC (MANIFEST_TAMPERED): not trusted, so not checked otherwise. */
  tampered?: Array<{ recordingId: string; message: string }>;
}

/**
 * The roles allowed to have produced an audit entry of a given type (undefined: not an access
 * type). It is the access API's own table (`access/policy.ts` rolesForAuditType), passed in by
 * whoever serves the report, so the report checks the trail against the very table the API
 * enforces and compliance/ does not depend on access/.
 */
export type RolesForAuditType = (auditType: string) => readonly string[] | undefined;

export interface ComplianceOptions {
  /** First packet may precede the consent instant by this much (anchor granularity). Default 20 ms. */
  consentToleranceMs?: number;
  /** A segment may overrun a window edge by this much (the packet in flight at the edge). Default 60 ms. */
  windowToleranceMs?: number;
  /** Time the sweeper gets after an expiry instant before a leftover counts. Default 120 s. */
  expiryGraceMs?: number;
}

function toMs(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** The manifest's policy, read defensively (older manifests have none; bounds may be strings). */
function policyOf(m: RecordingManifest): ManifestPolicy | undefined {
  const raw: unknown = m.policy;
  if (raw === null || typeof raw !== 'object') return undefined;
  const p = raw as { agentWindows?: unknown; monthlyCap?: unknown };
  const out: ManifestPolicy = {};
  if (Array.isArray(p.agentWindows)) {
    out.agentWindows = p.agentWindows.flatMap((w: { start?: unknown; end?: unknown }) => {
      const start = toMs(w?.start);
      const end = toMs(w?.end);
      return start !== undefined && end !== undefined ? [{ start, end }] : [];
    });
  }
  if (typeof p.monthlyCap === 'number' && Number.isInteger(p.monthlyCap) && p.monthlyCap >= 0) out.monthlyCap = p.monthlyCap;
  return out;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function agentIds(m: RecordingManifest): string[] {
  return m.participants.filter((p) => p.role === 'agent' && p.subjectId !== undefined).map((p) => p.subjectId!);
}

function teamLeadIds(m: RecordingManifest): string[] {
  return m.participants.flatMap((p) => (p.role === 'agent' && p.teamLeadId !== undefined ? [p.teamLeadId] : []));
}

/** The rules, as a pure function of the collected facts. */
export function evaluateCompliance(facts: ComplianceFacts, rolesForAuditType: RolesForAuditType, options: ComplianceOptions = {}): ComplianceReport {
  const consentTol = options.consentToleranceMs ?? 20;
  const windowTol = options.windowToleranceMs ?? 60;
  const grace = options.expiryGraceMs ?? 120_000;
  const { nowMs } = facts;
  const violations: Violation[] = [];
  const unverifiable: Unverifiable[] = [];
  const notes: string[] = [];
  const checked = facts.manifests.filter((m) => facts.checkIds === undefined || facts.checkIds.has(m.recordingId));

  for (const m of checked) {
    const rid = m.recordingId;
    const segs = m.segments;
    const policy = policyOf(m);

    // R3/R4: consent before the first recorded packet (of anyone in the call).
    if (m.participants.some((p) => p.role === 'customer') && segs.length > 0) {
      const first = segs.reduce((a, s) => (s.startWallClockMs < a.startWallClockMs ? s : a));
      const consentTimes = m.consentEvidence.map((e) => toMs(e.at)).filter((t): t is number => t !== undefined);
      if (consentTimes.length === 0) {
        violations.push({
          rule: 'consent-before-first-packet',
          recordingId: rid,
          message: 'audio was recorded in a call with a customer, but the manifest holds no consent evidence',
          evidence: { firstPacketAt: iso(first.startWallClockMs), participantId: first.participantId, segment: first.segment },
        });
      } else {
        const consentAt = Math.min(...consentTimes);
        if (first.startWallClockMs < consentAt - consentTol) {
          violations.push({
            rule: 'consent-before-first-packet',
            recordingId: rid,
            message: `the first packet was recorded ${Math.round(consentAt - first.startWallClockMs)} ms before the consent`,
            evidence: { firstPacketAt: iso(first.startWallClockMs), consentAt: iso(consentAt), participantId: first.participantId, segment: first.segment },
          });
        }
      }
    }

    // R6: recorded intervals inside the agent's windows.
    if (segs.length > 0) {
      if (policy?.agentWindows === undefined) {
        unverifiable.push({ rule: 'inside-agent-window', recordingId: rid, reason: 'the manifest carries no agent windows (policy.agentWindows)' });
      } else {
        const windows = policy.agentWindows;
        const outside = segs.filter((s) => !windows.some((w) => s.startWallClockMs >= w.start - windowTol && s.startWallClockMs + s.durationMs <= w.end + windowTol));
        if (outside.length > 0) {
          const s = outside[0]!;
          violations.push({
            rule: 'inside-agent-window',
            recordingId: rid,
            message: `${outside.length} recorded segment(s) lie outside every scheduled window`,
            evidence: {
              segments: outside.slice(0, 20).map((x) => ({ participantId: x.participantId, segment: x.segment, start: iso(x.startWallClockMs), end: iso(x.startWallClockMs + x.durationMs) })),
              firstOutside: { start: iso(s.startWallClockMs), end: iso(s.startWallClockMs + s.durationMs) },
              windows: windows.slice(0, 20).map((w) => ({ start: iso(w.start), end: iso(w.end) })),
            },
          });
        }
      }
    }

    // R8: expiry at most 30 days after the start.
    const maxMs = MAX_RETENTION_SECONDS * 1000;
    if (m.expiresAtMs - m.startedAtMs > maxMs || m.retentionSeconds > MAX_RETENTION_SECONDS) {
      violations.push({
        rule: 'retention-at-most-30-days',
        recordingId: rid,
        message: `the recording expires ${((m.expiresAtMs - m.startedAtMs) / 86_400_000).toFixed(2)} days after it started (at most 30 allowed)`,
        evidence: { startedAt: iso(m.startedAtMs), expiresAt: iso(m.expiresAtMs), retentionSeconds: m.retentionSeconds },
      });
    }

    // R8/R9: nothing of an expired recording remains.
    if (m.expiresAtMs <= nowMs - grace) {
      const media = facts.media.byRecording.get(rid) ?? [];
      const keys = facts.media.keysByRecording.get(rid) ?? [];
      violations.push({
        rule: 'no-expired-object',
        recordingId: rid,
        message: `the recording expired at ${m.expiresAt} but its manifest${media.length > 0 ? `, ${media.length} media object(s)` : ''}${keys.length > 0 ? `, ${keys.length} data key(s)` : ''} remain`,
        evidence: { expiresAt: m.expiresAt, manifest: true, mediaObjects: media.slice(0, 50), mediaObjectCount: media.length, dataKeys: keys.slice(0, 50) },
      });
    }
  }

  // Media without a manifest (a crash, a half-finished deletion): judged by its expiry tag.
  for (const [rid, tag] of facts.media.orphanExpiry) {
    const objects = facts.media.byRecording.get(rid) ?? [];
    const expiresAt = tag === null ? undefined : toMs(tag);
    if (expiresAt === undefined) {
      unverifiable.push({ rule: 'no-expired-object', recordingId: rid, reason: `${objects.length} media object(s) without a manifest and without an expiry tag` });
    } else if (expiresAt <= nowMs - grace) {
      violations.push({
        rule: 'no-expired-object',
        recordingId: rid,
        message: `${objects.length} media object(s) of a recording without a manifest remain past their expiry tag`,
        evidence: { expiresAt: iso(expiresAt), manifest: false, mediaObjects: objects.slice(0, 50), mediaObjectCount: objects.length },
      });
    } else {
      notes.push(`recording ${rid}: ${objects.length} media object(s) without a manifest (expire ${iso(expiresAt)}): crash repair or a pending deletion should resolve them`);
    }
  }
  if (!facts.media.complete) notes.push('sample mode: media objects without a manifest were not looked for');

  // R6: the monthly cap, across every manifest (a sample cannot count a month).
  const byAgentMonth = new Map<string, RecordingManifest[]>();
  for (const m of facts.manifests) {
    for (const agent of new Set(agentIds(m))) {
      const key = `${agent}\u0000${monthKey(m.startedAtMs)}`;
      const list = byAgentMonth.get(key) ?? [];
      list.push(m);
      byAgentMonth.set(key, list);
    }
  }
  for (const [key, list] of byAgentMonth) {
    const [agent, month] = key.split('\u0000') as [string, string];
    list.sort((a, b) => a.startedAtMs - b.startedAtMs || a.recordingId.localeCompare(b.recordingId));
    list.forEach((m, i) => {
      if (facts.checkIds !== undefined && !facts.checkIds.has(m.recordingId)) return;
      const cap = policyOf(m)?.monthlyCap;
      if (cap === undefined) {
        unverifiable.push({ rule: 'monthly-cap', recordingId: m.recordingId, reason: 'the manifest carries no monthly cap (policy.monthlyCap)' });
      } else if (i + 1 > cap) {
        violations.push({
          rule: 'monthly-cap',
          recordingId: m.recordingId,
          message: `recording ${i + 1} of agent ${agent} in ${month}, above the monthly cap of ${cap}`,
          evidence: { agentId: agent, month, position: i + 1, cap, recordingsThatMonth: list.map((x) => x.recordingId), startedAt: iso(m.startedAtMs) },
        });
      }
    });
  }
  notes.push('monthly cap: counted over the manifests present; deleted or expired recordings no longer count');

  // R10/R11: every access by an allowed role; playback only by the agent or their team lead.
  const manifestById = new Map(facts.manifests.map((m) => [m.recordingId, m]));
  for (const e of facts.audit) {
    const allowed = rolesForAuditType(e.type);
    const where = { stream: e.stream, seq: e.seq, at: e.at, type: e.type, role: e.role, actor: e.actor };
    if (allowed === undefined) {
      if (e.type.startsWith('access.') && e.type !== 'access.denied') {
        unverifiable.push({ rule: 'access-by-allowed-role', reason: `audit entry ${e.stream}#${e.seq} has an access type this report does not know (${e.type})` });
      }
      continue;
    }
    if (!allowed.includes(e.role)) {
      violations.push({
        rule: 'access-by-allowed-role',
        ...(e.refs.recordingId ? { recordingId: e.refs.recordingId } : {}),
        message: `${e.type} by role ${e.role}; allowed: ${allowed.join(', ')}`,
        evidence: where,
      });
      continue;
    }
    if (e.type === 'access.play' && e.refs.recordingId !== undefined) {
      const m = manifestById.get(e.refs.recordingId);
      if (m === undefined) continue; // deleted or expired since: its people are no longer known
      const related = e.role === 'agent' ? agentIds(m).includes(e.actor) : teamLeadIds(m).includes(e.actor);
      if (!related) {
        violations.push({
          rule: 'access-by-allowed-role',
          recordingId: e.refs.recordingId,
          message: `playback by ${e.role} ${e.actor}, who is neither the recorded agent nor their team lead`,
          evidence: where,
        });
      }
    }
  }

  for (const t of facts.tampered ?? []) {
    if (facts.checkIds !== undefined && !facts.checkIds.has(t.recordingId)) continue;
    violations.push({ rule: 'manifest-authentic', recordingId: t.recordingId, message: t.message, evidence: { recordingId: t.recordingId } });
  }

  const count = (rule: ComplianceRule, list: Array<{ rule: ComplianceRule }>): number => list.filter((v) => v.rule === rule).length;
  return {
    generatedAt: iso(nowMs),
    ok: violations.length === 0,
    scope: { recordings: facts.manifests.length, checked: checked.length, ...(facts.sample === undefined ? {} : { sample: facts.sample }), auditEntries: facts.audit.length },
    rules: (Object.keys(RULES) as ComplianceRule[]).map((rule) => ({ rule, description: RULES[rule], violations: count(rule, violations), unverifiable: count(rule, unverifiable) })),
    violations,
    unverifiable,
    notes,
  };
}

// ---- I/O: gathering the facts ----

export interface ComplianceSources {
  store: {
    listRecordings(): Promise<RecordingSummary[]>;
    getManifest(recordingId: string): Promise<RecordingManifest>;
    readonly buckets: Readonly<BucketNames>;
  };
  s3: Client;
  audit: { list(): Promise<AuditEntry[]> };
  rolesForAuditType: RolesForAuditType;
  now?: () => number;
  /** The control plane's registry of audit streams and their anchored heads (src/audit/anchors.ts). */
  auditAnchors?: () => Promise<Array<{ streamId: string; anchor: { seq: number; hash: string; anchoredAtMs: number } | null }>>;
}

async function listNames(client: Client, bucket: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of client.listObjectsV2(bucket, prefix, true) as AsyncIterable<{ name?: string }>) if (o.name) out.push(o.name);
  return out;
}

function sampleOf<T>(items: readonly T[], n: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n);
}

export async function collectComplianceFacts(src: ComplianceSources, options: { sample?: number } = {}): Promise<ComplianceFacts> {
  const nowMs = (src.now ?? Date.now)();
  const { buckets } = src.store;
  const summaries = await src.store.listRecordings();
  const tampered: Array<{ recordingId: string; message: string }> = [];
  const loaded = await mapLimit(summaries, 8, async (s) => {
    try {
      return await src.store.getManifest(s.recordingId);
    } catch (err) {
      if (isOptinError(err, 'RECORDING_NOT_FOUND')) return null; // deleted meanwhile
      if (isOptinError(err, 'MANIFEST_TAMPERED')) {
        tampered.push({ recordingId: s.recordingId, message: err.message });
        return null;
      }
      throw err;
    }
  });
  // A manifest the listing left out (it would not open) is looked at on its own: one changed
  // outside optin must show up in the report, not vanish from it.
  const listed = new Set(summaries.map((s) => s.recordingId));
  for (const name of await listNames(src.s3, buckets.keys, MANIFESTS_PREFIX)) {
    const id = parseManifestObjectKey(name);
    if (id === null || listed.has(id)) continue;
    try {
      await src.store.getManifest(id);
    } catch (err) {
      if (isOptinError(err, 'MANIFEST_TAMPERED')) tampered.push({ recordingId: id, message: err.message });
    }
  }
  const manifests = loaded.filter((m): m is RecordingManifest => m !== null);
  const sample = options.sample;
  const checkIds = sample === undefined ? undefined : new Set(sampleOf(manifests.map((m) => m.recordingId), sample));
  const known = new Set(manifests.map((m) => m.recordingId));

  // Media: the whole bucket (to find orphans too), or only the sampled recordings' prefixes.
  const byRecording = new Map<string, string[]>();
  const add = (name: string): void => {
    const parsed = parseMediaObjectKey(name);
    if (parsed === null) return;
    const list = byRecording.get(parsed.recordingId) ?? [];
    list.push(name);
    byRecording.set(parsed.recordingId, list);
  };
  if (checkIds === undefined) for (const name of await listNames(src.s3, buckets.media, MEDIA_PREFIX)) add(name);
  else for (const id of checkIds) for (const name of await listNames(src.s3, buckets.media, mediaPrefix(id))) add(name);

  const keysByRecording = new Map<string, string[]>();
  for (const m of manifests) {
    if (m.expiresAtMs > nowMs || (checkIds !== undefined && !checkIds.has(m.recordingId))) continue;
    keysByRecording.set(m.recordingId, await listNames(src.s3, buckets.keys, dataKeyPrefix(m.recordingId)));
  }

  const orphanExpiry = new Map<string, string | null>();
  if (checkIds === undefined) {
    for (const [rid, names] of byRecording) {
      if (known.has(rid)) continue;
      let tag: string | null = null;
      try {
        const tags = (await src.s3.getObjectTagging(buckets.media, names[0]!)) as unknown as Array<{ Key: string; Value: string }>;
        tag = tags.find((t) => t.Key === TAG_EXPIRES_AT)?.Value ?? null;
      } catch {
        tag = null;
      }
      orphanExpiry.set(rid, tag);
    }
  }

  const audit = await src.audit.list();
  return {
    nowMs,
    manifests,
    ...(checkIds === undefined ? {} : { checkIds, sample }),
    media: { byRecording, keysByRecording, orphanExpiry, complete: checkIds === undefined },
    audit,
    ...(tampered.length > 0 ? { tampered } : {}),
  };
}

export async function complianceReport(src: ComplianceSources, options: ComplianceOptions & { sample?: number } = {}): Promise<ComplianceReport> {
  const report = evaluateCompliance(await collectComplianceFacts(src, { sample: options.sample }), src.rolesForAuditType, options);
  if (src.auditAnchors !== undefined) {
    report.auditAnchors = (await src.auditAnchors()).map((s) => ({
      stream: s.streamId,
      seq: s.anchor?.seq ?? null,
      hash: s.anchor?.hash ?? null,
      anchoredAt: s.anchor === null ? null : new Date(s.anchor.anchoredAtMs).toISOString(),
    }));
    const never = report.auditAnchors.filter((a) => a.seq === null).length;
    report.notes.push(`audit trail: ${report.auditAnchors.length} registered writer stream(s), head hashes anchored in the control plane listed in auditAnchors${never ? ` (${never} not anchored yet)` : ''}`);
  } else {
    report.notes.push('audit trail: made without the control plane, so no anchored head hashes are listed');
  }
  return report;
}
