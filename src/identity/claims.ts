import { ID_PATTERN } from '../ids/ids.ts';
import { isRole, type Principal, type Role } from '../access/roles.ts';

/**
 * From an identity provider's claims to a Principal (issue 14 §2): the subject from a
 * configurable claim (default `sub`: the pseudonymous id recordings carry for agents and team
 * leads), the role from a configurable claim (default `optin_roles`; a dotted path reaches into
 * nested claims such as Keycloak's `realm_access.roles`), mapped through an optional table from
 * the provider's group names to optin's roles. Pure.
 *
 * A person must hold exactly one optin role: none means no access; several are refused rather
 * than guessed (the IdP should give a team lead who is also recorded as an agent two accounts, or
 * the contact centre should decide which hat a session wears).
 */

export interface ClaimMapping {
  /** Dotted path of the role claim (a string, a space-separated string, or an array of strings). */
  roleClaim: string;
  /** Dotted path of the subject claim. */
  subjectClaim: string;
  /** Provider value -> optin role; values not in the table are used as they are when they name a role. */
  roleMap: Readonly<Record<string, Role>>;
}

export const DEFAULT_CLAIM_MAPPING: ClaimMapping = Object.freeze({ roleClaim: 'optin_roles', subjectClaim: 'sub', roleMap: Object.freeze({}) });

export type ClaimRefusal = 'no-subject' | 'bad-subject' | 'no-role' | 'several-roles';

export type ClaimResult = { ok: true; principal: Principal } | { ok: false; reason: ClaimRefusal; message: string };

export function claimAt(claims: Readonly<Record<string, unknown>>, dotted: string): unknown {
  let node: unknown = claims;
  for (const part of dotted.split('.')) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

/** The optin roles a claim value names (deduplicated, in optin's order). */
export function rolesFromClaim(value: unknown, roleMap: Readonly<Record<string, Role>>): Role[] {
  const raw = typeof value === 'string' ? value.split(/\s+/) : Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
  const out = new Set<Role>();
  for (const v of raw) {
    const mapped = Object.hasOwn(roleMap, v) ? roleMap[v] : isRole(v) ? v : undefined;
    if (mapped !== undefined) out.add(mapped);
  }
  return [...out];
}

export function principalFromClaims(claims: Readonly<Record<string, unknown>>, mapping: ClaimMapping = DEFAULT_CLAIM_MAPPING): ClaimResult {
  const sub = claimAt(claims, mapping.subjectClaim);
  if (typeof sub !== 'string' || sub === '') return { ok: false, reason: 'no-subject', message: `the identity provider sent no "${mapping.subjectClaim}" claim` };
  if (!ID_PATTERN.test(sub)) return { ok: false, reason: 'bad-subject', message: `the "${mapping.subjectClaim}" claim is not a pseudonymous id ([A-Za-z0-9_-]{1,64})` };
  const roles = rolesFromClaim(claimAt(claims, mapping.roleClaim), mapping.roleMap);
  if (roles.length === 0) return { ok: false, reason: 'no-role', message: `your account has no optin role (claim "${mapping.roleClaim}"); ask the contact centre's identity administrator for one` };
  if (roles.length > 1) return { ok: false, reason: 'several-roles', message: `your account holds several optin roles (${roles.join(', ')}); a session wears exactly one: ask for separate accounts` };
  return { ok: true, principal: { sub, role: roles[0]! } };
}
