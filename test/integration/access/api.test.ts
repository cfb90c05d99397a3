/**
 * The access API on the control plane (issue 14), against real PostgreSQL, the real S3 server, a
 * real OpenID provider (oidc-provider, scripts/devIdp) and real ffmpeg. People sign in through
 * the provider (authorization code + PKCE) and call the API with their session; the extract
 * service calls it with a client-credentials JWT.
 *
 * Recordings: real Opus audio (agent tone 523 Hz, customer tone 1230 Hz) stored through a
 * RecordingStore of the test's own, their calls and consent posted through the IVR API, their
 * catalogue rows written by the control plane's catalogue upsert (what a recorder's
 * recording.report does); recorder-made recordings replace them once the recorder speaks policy
 * stream v2 (issue 13).
 *
 * - the role x route matrix: every role x every API route x own / other team / missing, every
 *   denial found in the audit trail;
 * - coaching playback: stereo, agent LEFT, customer RIGHT, aligned; WAV; Range requests;
 * - subject-access extracts as jobs: the customer's own voice only (the agent >= 40 dB below),
 *   a manifest naming no other person, for the operator and the case only;
 * - deletion at the agent's request by the team lead, with the store's receipt;
 * - tampering with the audit bucket shows in /api/audit/verify.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditTrail, type AuditEntry } from '../../../src/audit/AuditTrail.ts';
import { TEST_AUDIT_KEY } from '../../support/auditKey.ts';
import { decodeToPcm, FFPROBE, runFfmpeg } from '../../../src/media/ffmpeg.ts';
import { toneAdvantageDb } from '../../support/audio.ts';
import { AGENT_HZ, CUSTOMER_HZ, startWebStack, waitFor, type WebSession, type WebStack } from '../../support/webapp.ts';

const MISSING = 'r_00000000deadbeef';
const R1 = 'r_1111111111111111'; // agent-a1 (lead-l1), cust-c1; customer 700 ms after the agent
const R2 = 'r_2222222222222222'; // other team: agent-a2 (lead-l2), cust-c2
const R3 = 'r_3333333333333333'; // agent-a1 (lead-l1), cust-c3: deleted at the agent's request

let s: WebStack;
const who: Record<string, WebSession> = {};
const SUBS: Record<string, { sub: string; role: string }> = {
  a1: { sub: 'agent-a1', role: 'agent' },
  a2: { sub: 'agent-a2', role: 'agent' },
  l1: { sub: 'lead-l1', role: 'team-lead' },
  l2: { sub: 'lead-l2', role: 'team-lead' },
  dpo: { sub: 'dpo-1', role: 'dpo' },
  xop: { sub: 'xop-1', role: 'extract-operator' },
  xop2: { sub: 'xop-2', role: 'extract-operator' },
};

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

async function bytesOf(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

async function auditEntries(type?: string): Promise<AuditEntry[]> {
  return s.t.cp.store!.trail!.list(type ? { type } : {});
}

/** Decodes to 48 kHz stereo f32 (asynchronously: the server runs in this process). */
async function decodeStereo(file: Buffer): Promise<{ left: Float32Array; right: Float32Array; channels: number }> {
  const probe = (await runFfmpeg(['-v', 'error', '-count_packets', '-show_entries', 'stream=channels', '-of', 'csv=p=0', '-i', 'pipe:0'], { bin: FFPROBE, input: file }).done).toString().trim();
  const out = await runFfmpeg(['-v', 'error', '-i', 'pipe:0', '-f', 'f32le', '-ac', '2', '-ar', '48000', 'pipe:1'], { input: file }).done;
  const all = new Float32Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
  const left = new Float32Array(all.length / 2);
  const right = new Float32Array(all.length / 2);
  for (let i = 0; i < left.length; i++) {
    left[i] = all[2 * i]!;
    right[i] = all[2 * i + 1]!;
  }
  return { left, right, channels: Number(probe) };
}

function onset(x: Float32Array): number {
  let peak = 0;
  for (const v of x) peak = Math.max(peak, Math.abs(v));
  return x.findIndex((v) => Math.abs(v) > peak / 10);
}

/** Starts an extract job and waits until it is ready; its files. */
async function extract(session: WebSession, body: Record<string, unknown>): Promise<{ id: string; caseRef: string; files: Array<{ name: string; sha256: string; bytes: number }> }> {
  const res = await session.fetch('/api/extracts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status, JSON.stringify(await res.clone().json())).toBe(202);
  const { job } = (await res.json()) as { job: { id: string } };
  const last = await waitFor(() => session.fetch(`/api/extracts/${job.id}`).then(json), (j) => j.state === 'ready' || j.state === 'failed', { what: 'the extract' });
  expect(last.state, JSON.stringify(last)).toBe('ready');
  return last as { id: string; caseRef: string; files: Array<{ name: string; sha256: string; bytes: number }> };
}

beforeAll(async () => {
  s = await startWebStack();
  const now = Date.now();
  await s.addRecording({ recordingId: R1, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c1', startedAtMs: now - 40_000, seconds: 5 });
  await s.addRecording({ recordingId: R2, agent: 'agent-a2', lead: 'lead-l2', customer: 'cust-c2', startedAtMs: now - 30_000, seconds: 3 });
  await s.addRecording({ recordingId: R3, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c3', startedAtMs: now - 20_000, seconds: 3 });
  for (const [k, login] of Object.entries({ a1: 'agent', l1: 'lead', dpo: 'dpo', xop: 'extract' })) who[k] = await s.signIn(login);
  for (const [k, login] of Object.entries({ a2: 'agent2', l2: 'lead2', xop2: 'extract2' })) who[k] = await s.signIn(login);
}, 240_000);

afterAll(async () => {
  await s?.close();
});

describe('authentication', () => {
  it('refuses a caller without a session or with a bad token (401 with a reason), and audits each', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{}, 'missing-token'],
      [{ authorization: 'Bearer not-a-jwt' }, 'malformed-token'],
      [{ authorization: 'Basic dXNlcjpwYXNz' }, 'missing-token'],
      [{ cookie: '__Host-optin-session=' + 'x'.repeat(43) }, 'missing-token'],
    ];
    for (const [headers, reason] of cases) {
      const res = await fetch(`${s.url}/api/recordings/${R1}`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('Bearer');
      expect(await res.json()).toMatchObject({ error: 'unauthenticated', reason });
    }
    const denials = (await auditEntries('access.denied')).filter((e) => e.details.status === 401);
    expect(denials.length).toBeGreaterThanOrEqual(cases.length);
    expect(denials[0]).toMatchObject({ actor: 'anonymous', role: 'none', details: { route: 'GET /api/recordings/{recordingId}' } });
  });

  it('a service with a client-credentials token from the provider acts as its role; nothing else', async () => {
    const token = await s.serviceToken();
    const me = await fetch(`${s.url}/api/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(await me.json()).toEqual({ sub: 'extract-service', role: 'extract-operator' });
    expect((await fetch(`${s.url}/api/recordings`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(403);
    const job = await fetch(`${s.url}/api/extracts`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ subjectId: 'cust-c2', caseRef: 'SVC-1' }) });
    expect(job.status).toBe(202);
  });
});

describe('the role x route matrix (R10): every role x every route x own / other team / missing', () => {
  let extractId: string;
  let extractFile: string;

  beforeAll(async () => {
    const x = await extract(who.xop!, { subjectId: 'cust-c2', caseRef: 'CASE-matrix' });
    extractId = x.id;
    extractFile = x.files[0]!.name;
  });

  type Row = { who: string; method: string; path: () => string; body?: unknown; expect: number };
  const rec = (t: 'own' | 'other' | 'missing'): string => (t === 'own' ? R1 : t === 'other' ? R2 : MISSING);
  const rows: Row[] = [];
  const perTarget = (w: string, method: string, suffix: string, codes: [number, number, number], body?: unknown): void => {
    (['own', 'other', 'missing'] as const).forEach((t, i) => rows.push({ who: w, method, path: () => `/api/recordings/${rec(t)}${suffix}`, expect: codes[i]!, ...(body ? { body } : {}) }));
  };
  for (const [w, code] of [['a1', 200], ['l1', 200], ['dpo', 200], ['xop', 403]] as const) rows.push({ who: w, method: 'GET', path: () => '/api/recordings', expect: code });
  perTarget('a1', 'GET', '', [200, 404, 404]);
  perTarget('a2', 'GET', '', [404, 200, 404]);
  perTarget('l1', 'GET', '', [200, 404, 404]);
  perTarget('l2', 'GET', '', [404, 200, 404]);
  perTarget('dpo', 'GET', '', [200, 200, 404]);
  perTarget('xop', 'GET', '', [403, 403, 403]);
  perTarget('a1', 'GET', '/play?purpose=coaching', [200, 404, 404]);
  perTarget('l1', 'GET', '/play?purpose=coaching', [200, 404, 404]);
  perTarget('l2', 'GET', '/play?purpose=coaching', [404, 200, 404]);
  perTarget('dpo', 'GET', '/play?purpose=coaching', [403, 403, 403]);
  perTarget('xop', 'GET', '/play?purpose=coaching', [403, 403, 403]);
  perTarget('a1', 'POST', '/deletion-requests', [201, 404, 404]);
  perTarget('l1', 'POST', '/deletion-requests', [403, 403, 403]);
  perTarget('dpo', 'POST', '/deletion-requests', [403, 403, 403]);
  perTarget('xop', 'POST', '/deletion-requests', [403, 403, 403]);
  rows.push({ who: 'l1', method: 'DELETE', path: () => `/api/recordings/${R2}`, expect: 404 });
  rows.push({ who: 'l1', method: 'DELETE', path: () => `/api/recordings/${MISSING}`, expect: 404 });
  perTarget('a1', 'DELETE', '', [403, 403, 403]);
  perTarget('dpo', 'DELETE', '', [403, 403, 403]);
  perTarget('xop', 'DELETE', '', [403, 403, 403]);
  perTarget('a1', 'GET', '/access-log', [403, 403, 403]);
  perTarget('l1', 'GET', '/access-log', [403, 403, 403]);
  perTarget('dpo', 'GET', '/access-log', [200, 200, 200]);
  perTarget('xop', 'GET', '/access-log', [403, 403, 403]);
  for (const [w, code] of [['a1', 200], ['l1', 200], ['dpo', 200], ['xop', 403]] as const) rows.push({ who: w, method: 'GET', path: () => '/api/deletion-requests', expect: code });
  for (const [w, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 202]] as const) rows.push({ who: w, method: 'POST', path: () => '/api/extracts', body: { subjectId: 'cust-c2', caseRef: 'CASE-m2' }, expect: code });
  for (const [w, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 200], ['xop2', 200]] as const) rows.push({ who: w, method: 'GET', path: () => '/api/extracts', expect: code });
  for (const [w, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 200], ['xop2', 404]] as const) rows.push({ who: w, method: 'GET', path: () => `/api/extracts/${extractId}`, expect: code });
  for (const [w, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 200], ['xop2', 404]] as const) {
    rows.push({ who: w, method: 'GET', path: () => `/api/extracts/${extractId}/files/${extractFile}?caseRef=CASE-matrix`, expect: code });
  }
  rows.push({ who: 'xop', method: 'GET', path: () => `/api/extracts/${extractId}/files/${extractFile}?caseRef=CASE-other`, expect: 404 });
  for (const route of ['/api/audit', '/api/audit/verify', '/api/compliance', '/api/spot-check']) {
    for (const [w, code] of [['a1', 403], ['l1', 403], ['dpo', 200], ['xop', 403]] as const) rows.push({ who: w, method: 'GET', path: () => route, expect: code });
  }

  it('answers every combination as the policy says, and audits every denial', async () => {
    const since = new Date().toISOString();
    const denials: Array<{ who: string; status: number; method: string; path: string }> = [];
    const mismatches: string[] = [];
    for (const row of rows) {
      const path = row.path();
      const res = await who[row.who]!.fetch(path, { method: row.method, ...(row.body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(row.body) }) });
      await res.arrayBuffer();
      if (res.status !== row.expect) mismatches.push(`${row.who} ${row.method} ${path}: ${res.status}, expected ${row.expect}`);
      if (row.expect === 403 || row.expect === 404) denials.push({ who: row.who, status: row.expect, method: row.method, path });
    }
    expect(mismatches).toEqual([]);
    const entries = (await auditEntries('access.denied')).filter((e) => e.at >= since);
    const template = (method: string, path: string): string =>
      `${method} ${path
        .replace(/\?.*$/, '')
        .replace(/^\/api\/extracts\/[^/]+\/files\/[^/]+$/, '/api/extracts/{extractId}/files/{name}')
        .replace(/^\/api\/extracts\/[^/]+$/, '/api/extracts/{extractId}')
        .replace(/^\/api\/recordings\/[^/]+/, '/api/recordings/{recordingId}')}`;
    const unmatched = denials.filter(
      (d) => !entries.some((e) => e.actor === SUBS[d.who]!.sub && e.role === SUBS[d.who]!.role && e.details.status === d.status && e.details.route === template(d.method, d.path) && typeof e.details.reason === 'string'),
    );
    expect(denials.length).toBeGreaterThan(50);
    expect(unmatched).toEqual([]);
    const agentProbe = entries.find((e) => e.actor === 'agent-a1' && e.refs.recordingId === R2);
    expect(agentProbe).toMatchObject({ type: 'access.denied', details: { status: 404, reason: 'not-own-recording' } });
  });

  it('lists only what the caller may see, and hides customer ids from agents and team leads', async () => {
    const ids = async (w: string) => ((await json(await who[w]!.fetch('/api/recordings'))).recordings as Array<{ recordingId: string }>).map((r) => r.recordingId);
    expect((await ids('a1')).sort()).toEqual([R1, R3].sort());
    expect(await ids('a2')).toEqual([R2]);
    expect((await ids('l1')).sort()).toEqual([R1, R3].sort());
    expect(await ids('l2')).toEqual([R2]);
    expect(await ids('dpo')).toEqual(expect.arrayContaining([R1, R2, R3]));
    for (const w of ['a1', 'l1']) {
      const text = JSON.stringify(await json(await who[w]!.fetch(`/api/recordings/${R1}`)));
      expect(text).not.toContain('cust-c1');
      expect(text).toContain('"role":"customer"');
      expect(text).toContain('pressed a key on the phone keypad');
    }
    expect(JSON.stringify(await json(await who.dpo!.fetch(`/api/recordings/${R1}`)))).toContain('cust-c1');
  });

  it('every allowed access left its own entry', async () => {
    const plays = await auditEntries('access.play');
    expect(plays.some((e) => e.actor === 'agent-a1' && e.role === 'agent' && e.purpose === 'coaching' && e.refs.recordingId === R1)).toBe(true);
    expect(plays.some((e) => e.actor === 'lead-l1' && e.role === 'team-lead' && e.refs.recordingId === R1)).toBe(true);
    expect((await auditEntries('access.metadata')).some((e) => e.actor === 'dpo-1' && e.refs.recordingId === R2)).toBe(true);
    expect((await auditEntries('extract')).some((e) => e.actor === 'xop-1' && e.refs.subjectId === 'cust-c2' && e.details.caseRef === 'CASE-matrix')).toBe(true);
    expect((await auditEntries('extract.download')).some((e) => e.actor === 'xop-1')).toBe(true);
  });
});

describe('coaching playback', () => {
  it('needs a purpose, and only training or coaching', async () => {
    expect((await who.a1!.fetch(`/api/recordings/${R1}/play`)).status).toBe(400);
    expect((await who.a1!.fetch(`/api/recordings/${R1}/play?purpose=marketing`)).status).toBe(400);
    expect((await who.a1!.fetch(`/api/recordings/${R1}/play?purpose=coaching&format=mp3`)).status).toBe(400);
  });

  it('is stereo: agent LEFT, customer RIGHT, each side clean, aligned on one time axis', async () => {
    const res = await who.l1!.fetch(`/api/recordings/${R1}/play?purpose=coaching`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('audio/ogg');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('cache-control')).toBe('private, no-store');
    const { left, right, channels } = await decodeStereo(await bytesOf(res));
    expect(channels).toBe(2);
    expect(toneAdvantageDb(left, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(right, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
    // Both tracks start at the recording's first anchor: both onsets within 30 ms of each other and of 0.
    expect(Math.abs(onset(left) - onset(right)) / 48).toBeLessThan(30);
    expect(Math.abs(left.length / 48 - 5000)).toBeLessThan(60);
  });

  it('renders WAV on request', async () => {
    const file = await bytesOf(await who.a1!.fetch(`/api/recordings/${R1}/play?purpose=training&format=wav`));
    expect(file.subarray(0, 4).toString()).toBe('RIFF');
    expect(file.readUInt32LE(40)).toBe(file.length - 44);
    const { left, right } = await decodeStereo(file);
    expect(toneAdvantageDb(left, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(right, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
  });

  it('serves byte ranges (206, Content-Range) of one cached render, so a player can seek', async () => {
    const url = `/api/recordings/${R1}/play?purpose=coaching`;
    const full = await bytesOf(await who.a1!.fetch(url));
    const size = full.length;
    const part = await who.a1!.fetch(url, { headers: { range: 'bytes=100-1123' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-1123/${size}`);
    expect((await bytesOf(part)).equals(full.subarray(100, 1124))).toBe(true);
    const tail = await who.a1!.fetch(url, { headers: { range: 'bytes=-500' } });
    expect((await bytesOf(tail)).equals(full.subarray(size - 500))).toBe(true);
    const beyond = await who.a1!.fetch(url, { headers: { range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${size}`);
    expect(tail.headers.get('etag')).toBe(part.headers.get('etag'));
  });
});

describe('subject-access extract (R12)', () => {
  it("holds the customer's own voice only, and a manifest naming no other person", async () => {
    const x = await extract(who.xop!, { subjectId: 'cust-c1', caseRef: 'SAR-2026-0042' });
    const manifestRes = await who.xop!.fetch(`/api/extracts/${x.id}/files/manifest.json?caseRef=SAR-2026-0042`);
    expect(manifestRes.status).toBe(200);
    const manifest = JSON.parse((await bytesOf(manifestRes)).toString()) as { recordings: Array<Record<string, unknown> & { recordingId: string; accesses: Array<{ type: string; role: string; by: string }> }> };
    const text = JSON.stringify(manifest);
    for (const other of ['agent-a1', 'lead-l1', `call-${R1}`, 'cust-c2', 'cust-c3', 'agent-a2']) expect(text, other).not.toContain(other);
    expect(manifest.recordings.map((r) => r.recordingId)).toEqual([R1]);
    expect(manifest.recordings[0]).toMatchObject({ yourRole: 'customer', legalBasis: { article: expect.stringContaining('6(1)(a)') }, consentEvidence: [{ method: 'dtmf', infoVersion: 'training-notice-v3' }] });
    expect(manifest.recordings[0]!.accesses.filter((a) => a.type === 'access.play').map((a) => a.role)).toEqual(expect.arrayContaining(['agent', 'team-lead']));
    expect(manifest.recordings[0]!.accesses.every((a) => /^(you|system|person-\d+)$/.test(a.by))).toBe(true);

    const audio = x.files.find((f) => f.name.endsWith('.ogg'))!;
    const res = await who.xop!.fetch(`/api/extracts/${x.id}/files/${audio.name}?caseRef=SAR-2026-0042`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toContain('attachment');
    const ogg = await bytesOf(res);
    expect(createHash('sha256').update(ogg).digest('hex')).toBe(audio.sha256);
    const { pcm, stderr } = await decodeToPcm(ogg);
    expect(stderr.trim()).toBe('');
    expect(pcm.length / 48).toBeGreaterThan(4500);
    expect(toneAdvantageDb(pcm, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThanOrEqual(40);
  });

  it("an agent's extract (their own subject-access request) in WAV: their voice, no customer", async () => {
    const x = await extract(who.xop!, { subjectId: 'agent-a2', caseRef: 'SAR-agent-7', format: 'wav' });
    const wav = await bytesOf(await who.xop!.fetch(`/api/extracts/${x.id}/files/${R2}.wav?caseRef=SAR-agent-7`));
    expect(wav.subarray(0, 4).toString()).toBe('RIFF');
    expect(toneAdvantageDb((await decodeToPcm(wav)).pcm, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThanOrEqual(40);
    const m = (await bytesOf(await who.xop!.fetch(`/api/extracts/${x.id}/files/manifest.json?caseRef=SAR-agent-7`))).toString();
    for (const other of ['cust-c2', 'lead-l2', `call-${R2}`]) expect(m, other).not.toContain(other);
  });

  it('requires a subject and a case reference', async () => {
    const post = (body: unknown) => who.xop!.fetch('/api/extracts', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post({ subjectId: 'cust-c1' })).status).toBe(400);
    expect((await post({ subjectId: 'cust-c1', caseRef: 'has space' })).status).toBe(400);
    expect((await post({ caseRef: 'SAR-1' })).status).toBe(400);
    expect((await post({ subjectId: 'cust-c1', caseRef: 'SAR-1', extra: 1 })).status).toBe(400);
  });
});

describe('deletion at the agent request (R9)', () => {
  it('the agent asks, the team lead sees it and deletes; the recording is gone, with the store receipt', async () => {
    const ask = await who.a1!.fetch(`/api/recordings/${R3}/deletion-requests`, { method: 'POST' });
    expect(ask.status).toBe(201);
    expect((await who.a1!.fetch(`/api/recordings/${R3}/deletion-requests`, { method: 'POST' })).status).toBe(200);
    const pending = async (w: string) => ((await json(await who[w]!.fetch('/api/deletion-requests'))).requests as Array<{ recordingId: string; state: string }>).filter((r) => r.state === 'pending').map((r) => r.recordingId);
    expect(await pending('l1')).toContain(R3);
    expect(await pending('l2')).not.toContain(R3);
    expect(await pending('a1')).toContain(R3);
    expect(await pending('a2')).not.toContain(R3);

    const del = await who.l1!.fetch(`/api/recordings/${R3}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    const { deletionId, requestClosed, statusUrl } = (await del.json()) as { deletionId: string; requestClosed: boolean; statusUrl: string };
    expect(requestClosed).toBe(true);
    expect((await who.l1!.fetch(`/api/recordings/${R3}`)).status).toBe(404);
    expect((await who.a1!.fetch(`/api/recordings/${R3}/play?purpose=coaching`)).status).toBe(404);
    expect(await pending('l1')).not.toContain(R3);
    const mine = (await json(await who.a1!.fetch('/api/deletion-requests'))).requests as Array<{ recordingId: string; state: string }>;
    expect(mine.find((r) => r.recordingId === R3)?.state).toBe('deleted');

    let status: Record<string, unknown> = {};
    await expect.poll(async () => (status = await json(await who.l1!.fetch(statusUrl))).state, { timeout: 20_000, interval: 200 }).toBe('done');
    const receipt = status.receipt as { storeReceipts: Array<{ recordingId: string; complete: boolean; mediaObjects: number; dataKeysDestroyed: number }> };
    expect(receipt.storeReceipts[0]).toMatchObject({ recordingId: R3, complete: true });
    expect(receipt.storeReceipts[0]!.mediaObjects).toBeGreaterThan(0);
    expect(receipt.storeReceipts[0]!.dataKeysDestroyed).toBe(2);
    // The receipt is the deleting lead's and the DPO's, nobody else's.
    expect((await who.l2!.fetch(statusUrl)).status).toBe(404);
    expect((await who.dpo!.fetch(statusUrl)).status).toBe(200);
    expect((await who.a1!.fetch(statusUrl)).status).toBe(403);
    await expect(s.writer.getManifest(R3)).rejects.toMatchObject({ code: 'RECORDING_NOT_FOUND' });
    const deletes = await auditEntries('access.delete');
    expect(deletes.some((e) => e.actor === 'lead-l1' && e.role === 'team-lead' && e.refs.recordingId === R3 && e.purpose === 'agent-request')).toBe(true);
    expect(deletionId).toMatch(/^d_/);
  });
});

describe('audit trail for the DPO (R11)', () => {
  it('lists entries filtered by type and time', async () => {
    const res = await who.dpo!.fetch(`/api/audit?type=access.play&from=${encodeURIComponent(new Date(Date.now() - 3_600_000).toISOString())}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { entries: AuditEntry[]; count: number };
    expect(body.count).toBeGreaterThan(0);
    expect(body.entries.every((e) => e.type === 'access.play')).toBe(true);
    expect((await who.dpo!.fetch('/api/audit?from=yesterday')).status).toBe(400);
  });

  it('the compliance report holds no role violation; the access log of a recording names who played it', async () => {
    const report = (await json(await who.dpo!.fetch('/api/compliance'))) as { sections: Array<{ rule: string; status: string; checks: Array<{ check: string; violations: unknown[] }> }> };
    expect(report.sections.map((x) => x.rule)).toEqual(['R3', 'R4', 'R5', 'R6', 'R7', 'R8', 'R9', 'R10', 'R11']);
    const r10 = report.sections.find((x) => x.rule === 'R10')!;
    expect(r10.checks.find((c) => c.check === 'access-by-allowed-role')!.violations).toEqual([]);
    const log = (await json(await who.dpo!.fetch(`/api/recordings/${R1}/access-log`))) as { entries: AuditEntry[] };
    expect(log.entries.some((e) => e.type === 'access.play' && e.actor === 'lead-l1')).toBe(true);
  });

  it('verifies the chain, and shows where an edited or deleted entry breaks it', async () => {
    const ok = await json(await who.dpo!.fetch('/api/audit/verify'));
    expect(ok).toMatchObject({ ok: true });
    const trail = s.t.cp.store!.trail!;
    const client = s.client;
    const bucket = s.buckets.audit;
    const writer = trail.writerId;
    const key = `streams/${writer}/audit/000000000002.json`;
    const entry = JSON.parse(Buffer.concat(await (await client.getObject(bucket, key)).toArray()).toString()) as AuditEntry;
    const edited = Buffer.from(JSON.stringify({ ...entry, purpose: 'edited-later' }));
    await client.putObject(bucket, key, edited, edited.length);
    // Delete entry 2 of a second writer's stream.
    const other = await AuditTrail.open({ client, bucket, writerId: 'tamper-del', hmacKey: TEST_AUDIT_KEY });
    for (let i = 0; i < 4; i++) await other.append({ type: 'test.filler', actor: 'system', role: 'system', purpose: 'test' });
    await client.removeObject(bucket, 'streams/tamper-del/audit/000000000002.json');
    const report = (await json(await who.dpo!.fetch('/api/audit/verify'))) as { ok: boolean; streams: Array<{ stream: string; brokenAt?: { seq: number; reason: string; explanation: string } }> };
    expect(report.ok).toBe(false);
    expect(report.streams.find((x) => x.stream === writer)!.brokenAt).toMatchObject({ seq: 2, reason: 'hash-mismatch', explanation: 'an entry was edited' });
    expect(report.streams.find((x) => x.stream === 'tamper-del')!.brokenAt).toMatchObject({ seq: 2, reason: 'missing', explanation: 'an entry was deleted' });
  });
});
