/**
 * HTTP byte ranges (RFC 9110 §14): one range per request, which is what audio players send when
 * they seek. Several ranges in one request are answered with the whole representation (a server
 * may ignore Range, §14.2), which keeps multipart/byteranges out of the code.
 */

export type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/** Parses a Range header against a representation of `size` bytes. `end` is inclusive. */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  // Unknown units, several ranges or garbage: ignore the header (§14.2), serve everything.
  if (m === null) return { kind: 'full' };
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return { kind: 'full' };
  if (a === '') {
    // Suffix range: the last N bytes (§14.1.1).
    const n = Number(b);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (!Number.isSafeInteger(start) || start >= size) return { kind: 'unsatisfiable' };
  if (end < start) return { kind: 'full' }; // syntactically invalid (last < first): ignore
  return { kind: 'partial', start, end };
}
