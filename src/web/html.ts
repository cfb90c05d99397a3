/**
 * HTML with escaping by default: `html\`<p>${text}</p>\`` escapes `text`; nested `html` values
 * and arrays of them are inserted as they are. Nothing else is ever inserted unescaped, so a
 * pseudonymous id, an audit detail or an error message cannot become markup (and the strict CSP
 * stops any script that slipped through anyway).
 */

export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c]!);
}

type Part = Html | string | number | boolean | null | undefined | readonly Part[];

function render(v: Part): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return (v as readonly Part[]).map(render).join('');
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new Html(out);
}

/** JSON for a `<script type="application/json">` data block: never executed, and `<` escaped so it cannot close the block. */
export function jsonBlock(id: string, value: unknown): Html {
  const text = JSON.stringify(value).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return new Html(`<script type="application/json" id="${escapeHtml(id)}">${text}</script>`);
}
