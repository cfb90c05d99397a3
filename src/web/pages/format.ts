import { html, type Html } from '../html.ts';

/** Dates and small pieces every page shows the same way (UTC, so everyone reads the same instant). */

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "3 May 2026, 14:03 UTC". */
export function when(ms: number): string {
  const d = new Date(ms);
  return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}, ${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')} UTC`;
}

/** A <time> element with the machine-readable instant. */
export function time(ms: number): Html {
  return html`<time datetime="${new Date(ms).toISOString()}">${when(ms)}</time>`;
}

export function verdictBadge(v: string): Html {
  const label: Record<string, string> = { holds: 'Holds', violated: 'Violated', unverifiable: 'Cannot be verified', 'not-applicable': 'Not applicable', 'not-checked': 'Not checked automatically' };
  return html`<span class="badge badge-${v}">${label[v] ?? v}</span>`;
}
