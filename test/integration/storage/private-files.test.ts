/**
 * Local copies are private to the worker's user (issue 17): the encrypted spool and the audit
 * spool are created 0700 (directories) and 0600 (files), and a directory that already existed
 * with a looser mode is tightened when opened.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AuditSpool } from '../../../src/audit/AuditSpool.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { Spool } from '../../../src/storage/Spool.ts';

const root = mkdtempSync(path.join(tmpdir(), 'optin-private-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const mode = (p: string): number => statSync(p).mode & 0o777;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe('private local files', () => {
  it('the spool: 0700 directories (even pre-existing 0755 ones), 0600 files', async () => {
    const dir = path.join(root, 'spool');
    mkdirSync(dir, { mode: 0o755 });
    const spool = await Spool.open({ dir, maxBytes: 8 << 20, logger: createLogger('silent') });
    await spool.append({ kind: 'media', bucketRole: 'media', objectKey: 'rec/r_0123456789abcdef/p1/000000.ogg.sealed', recordingId: 'r_0123456789abcdef', participantId: 'p1', segment: 0, expiresAtMs: Date.now() + 60_000 }, Buffer.from('sealed'));
    expect(mode(dir)).toBe(0o700);
    const files = filesUnder(dir);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(mode(f), f).toBe(0o600);
    for (const d of readdirSync(dir)) expect(mode(path.join(dir, d)), d).toBe(0o700);
  });

  it('the audit spool: 0700 directory, 0600 pending file', async () => {
    const dir = path.join(root, 'audit');
    mkdirSync(dir, { mode: 0o755 });
    const spool = new AuditSpool({ append: () => Promise.reject(Object.assign(new Error('store down'), { code: 'ECONNREFUSED' })) }, dir);
    await spool.append({ type: 'gate.transition', actor: 'system', role: 'recorder', purpose: 'training-recording-gate', refs: { callId: 'c1' } });
    expect(mode(dir)).toBe(0o700);
    expect(mode(path.join(dir, 'audit-pending.jsonl'))).toBe(0o600);
    await spool.close();
  });
});
