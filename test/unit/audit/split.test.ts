import { describe, expect, it } from 'vitest';
import { splitDetails } from '../../../src/audit/AuditTrail.ts';

describe('splitDetails', () => {
  it('keeps small details whole', () => {
    expect(splitDetails({ a: 1, list: [1, 2, 3] }, 4096)).toEqual([{ a: 1, list: [1, 2, 3] }]);
  });

  it('shares the largest array out over parts, each keeping the other fields', () => {
    const details = { id: 'x', nested: { items: Array.from({ length: 500 }, (_, i) => `item-${i}`) }, small: [1] };
    const parts = splitDetails(details, 4096, 'g1');
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) expect(Buffer.byteLength(JSON.stringify(p))).toBeLessThanOrEqual(4096);
    expect(parts.flatMap((p) => (p.nested as { items: string[] }).items)).toEqual(details.nested.items);
    expect(parts.every((p) => p.id === 'x' && JSON.stringify(p.small) === '[1]')).toBe(true);
    expect(parts.map((p) => p.split)).toEqual(parts.map((_, i) => expect.objectContaining({ group: 'g1', index: i + 1, of: parts.length, path: 'nested.items', total: 500 })));
  });

  it('cuts the JSON text itself when no array can carry the bulk (one huge string), never across a surrogate pair', () => {
    const details = { text: `${'é😀'.repeat(3000)}` };
    const parts = splitDetails(details, 4096, 'g2');
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) expect(Buffer.byteLength(JSON.stringify(p))).toBeLessThanOrEqual(4096);
    const joined = parts.map((p) => p.text as string).join('');
    expect(JSON.parse(joined)).toEqual(details);
    expect(parts.every((p) => (p.split as { encoding: string }).encoding === 'json-text')).toBe(true);
  });
});
