/**
 * Who uses optin's people side (DESIGN §1, §6): the four roles, and the caller as the access
 * policy sees them. Identity (sign-in, sessions, service tokens) lives in src/identity and hands
 * over a Principal; nothing here knows how it was proven.
 */

export const ROLES = ['agent', 'team-lead', 'dpo', 'extract-operator'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  /** Pseudonymous subject id of the caller: an agent's or team lead's id is the one recordings carry. */
  sub: string;
  role: Role;
}

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** How each role is named to people. */
export const ROLE_NAMES: Readonly<Record<Role, string>> = Object.freeze({
  agent: 'Agent',
  'team-lead': 'Team lead',
  dpo: 'Data-protection officer',
  'extract-operator': 'Extract operator',
});
