/**
 * The access API against the running stack (real S3 server, mediasoup, ffmpeg, recorder):
 * one real two-speaker call (agent tone 523 Hz over Opus, customer tone 1230 Hz over G.711),
 * plus synthetic recordings of another team stored through the same RecordingStore.
 *
 * - the authorization matrix: every role x every route x own / other team / missing, with every
 *   denial found in the audit trail;
 * - coaching playback: stereo, agent LEFT, customer RIGHT, aligned by the wall-clock anchors;
 *   Range requests;
 * - subject-access extracts: the customer's own voice only (the agent's tone >= 40 dB below),
 *   and a manifest naming no other person;
 * - deletion at the agent's request by the team lead;
 * - tampering with the audit bucket shows in /api/audit/verify.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueToken, type Role } from '../../../src/access/auth.ts';
import { storeSynthRecording } from '../../support/synthRecording.ts';
import { extraRouteGroups } from '../../../src/app/routes.ts';
import { playFixtureCall, type FixtureCallResult } from '../../../workers/fixtureCall.ts';
import { AuditTrail, type AuditEntry } from '../../../src/audit/AuditTrail.ts';
import { TEST_AUDIT_KEY } from '../../support/auditKey.ts';
import { startHttpServer, type HttpServerHandle } from '../../../src/http/HttpServer.ts';
import { decodeToPcm, FFPROBE, runFfmpeg } from '../../../src/media/ffmpeg.ts';
import { joinOggOpus } from '../../../src/media/OggOpusReader.ts';
import { createLogger } from '../../../src/log/logger.ts';
import { useStack } from '../../support/stack.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { toneAdvantageDb } from '../../support/audio.ts';
import { readTrackOgg } from '../../support/storageFixtures.ts';

const SECRET = 'access-api-test-secret-0123456789abcdefghij';
const AGENT_HZ = 523;
const CUSTOMER_HZ = 1230;
const MISSING = 'r_00000000deadbeef';

const stack = useStack({ 'http.jwtSecret': SECRET }, { agents: ['agent-a1'] });
let http: HttpServerHandle;
let call: FixtureCallResult;
let R1: string; // the real call: agent-a1 (lead-l1), cust-c1
const R2 = 'r_2222222222222222'; // other team: agent-a2 (lead-l2), cust-c2
const R3 = 'r_3333333333333333'; // agent-a1 (lead-l1), cust-c3: deleted at the agent's request

const tokens = new Map<string, string>();
async function tokenFor(sub: string, role: Role): Promise<string> {
  const key = `${sub}/${role}`;
  let t = tokens.get(key);
  if (t === undefined) {
    t = await issueToken(SECRET, { sub, role, ttlSeconds: 600 });
    tokens.set(key, t);
  }
  return t;
}

const WHO: Record<string, { sub: string; role: Role }> = {
  a1: { sub: 'agent-a1', role: 'agent' },
  a2: { sub: 'agent-a2', role: 'agent' },
  l1: { sub: 'lead-l1', role: 'team-lead' },
  l2: { sub: 'lead-l2', role: 'team-lead' },
  dpo: { sub: 'dpo-1', role: 'dpo' },
  xop: { sub: 'xop-1', role: 'extract-operator' },
  xop2: { sub: 'xop-2', role: 'extract-operator' },
};

async function api(who: keyof typeof WHO | null, method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const headers: Record<string, string> = { ...opts.headers };
  if (who !== null) headers.authorization = `Bearer ${await tokenFor(WHO[who]!.sub, WHO[who]!.role)}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  return fetch(`${http.url}${path}`, { method, headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
}

async function bytesOf(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

/**
 * Decodes to 48 kHz stereo f32 and splits the channels. Asynchronous on purpose: the HTTP server
 * runs in this process, and a blocking decode would stall its keep-alive timers into racing the
 * next request on the same connection.
 */
async function decodeStereo(file: Buffer): Promise<{ left: Float32Array; right: Float32Array; channels: number }> {
  // -count_packets makes ffprobe read the whole input (it would otherwise stop after the header
  // and close the pipe under our feet).
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

/** First sample whose level exceeds a tenth of the channel's peak. */
function onset(x: Float32Array): number {
  let peak = 0;
  for (const v of x) peak = Math.max(peak, Math.abs(v));
  const threshold = peak / 10;
  return x.findIndex((v) => Math.abs(v) > threshold);
}

async function auditEntries(type?: string): Promise<AuditEntry[]> {
  await stack.app.recorder.flushAudit();
  return stack.app.audit.list(type ? { type } : {});
}

beforeAll(async () => {
  // The same route groups the worker mounts (src/app/routes.ts).
  http = await startHttpServer({ host: '127.0.0.1', port: 0, groups: await extraRouteGroups(stack.app), logger: createLogger('silent') });
  call = await playFixtureCall(stack.app, stack.policy, {
    callId: 'call-acc-1',
    seconds: 5,
    consentAfterMs: 1000,
    legs: [
      { participantId: 'leg-agent-x7', subjectId: 'agent-a1', role: 'agent', teamLeadId: 'lead-l1', file: fixturePath('agent-tone.wav'), codec: 'opus' },
      { participantId: 'leg-cust-y3', subjectId: 'cust-c1', role: 'customer', file: fixturePath('customer-tone.wav'), codec: 'pcmu' },
    ],
  });
  R1 = call.recordingId!;
  const agentOpus = readFileSync(fixturePath('agent-tone.opus'));
  const customerOpus = readFileSync(fixturePath('customer-tone.opus'));
  const now = Date.now();
  for (const [rid, agent, lead, customer] of [
    [R2, 'agent-a2', 'lead-l2', 'cust-c2'],
    [R3, 'agent-a1', 'lead-l1', 'cust-c3'],
  ] as const) {
    await storeSynthRecording(stack.app.store, {
      recordingId: rid,
      callId: `call-${rid.slice(2, 8)}`,
      startedAtMs: now - 30_000,
      seconds: 3,
      segmentSeconds: 2,
      consentEvidence: [{ method: 'dtmf', at: now - 31_000, infoVersion: 'training-notice-v1' }],
      participants: [
        { participantId: `leg-${agent}`, role: 'agent', subjectId: agent, teamLeadId: lead, source: agentOpus },
        { participantId: `leg-${customer}`, role: 'customer', subjectId: customer, source: customerOpus },
      ],
    });
  }
  await stack.app.store.drained(30_000);
}, 180_000);

afterAll(async () => {
  await http?.close();
});

describe('authentication', () => {
  it('refuses missing, expired, forged and foreign tokens with 401, and audits each', async () => {
    const expired = await issueToken(SECRET, { sub: 'agent-a1', role: 'agent', ttlSeconds: 60 }, { nowMs: Date.now() - 3_600_000 });
    const forged = await issueToken('x'.repeat(40), { sub: 'dpo-1', role: 'dpo' });
    const foreign = await issueToken(SECRET, { sub: 'dpo-1', role: 'dpo' }, { audience: 'other-service' });
    const cases: Array<[Record<string, string>, string]> = [
      [{}, 'missing-token'],
      [{ authorization: `Bearer ${expired}` }, 'expired-token'],
      [{ authorization: `Bearer ${forged}` }, 'invalid-signature'],
      [{ authorization: `Bearer ${foreign}` }, 'invalid-claims'],
      [{ authorization: 'Basic dXNlcjpwYXNz' }, 'missing-token'],
    ];
    for (const [headers, reason] of cases) {
      const res = await api(null, 'GET', `/api/recordings/${R1}`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('Bearer');
      expect(await res.json()).toMatchObject({ error: 'unauthenticated', reason });
    }
    const denials = (await auditEntries('access.denied')).filter((e) => e.details.status === 401);
    expect(denials.length).toBeGreaterThanOrEqual(cases.length);
    expect(denials[0]).toMatchObject({ actor: 'anonymous', role: 'none', details: { route: 'GET /api/recordings/{id}' } });
    // The token never reaches the audit trail.
    expect(JSON.stringify(denials)).not.toContain(expired.slice(-20));
  });
});

describe('authorization matrix (R10): every role x every route x own / other team / missing', () => {
  let extractId: string;
  let extractFile: string;

  beforeAll(async () => {
    const res = await api('xop', 'POST', '/api/extracts', { body: { subjectId: 'cust-c2', caseRef: 'CASE-matrix' } });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { extractId: string; files: Array<{ name: string }> };
    extractId = body.extractId;
    extractFile = body.files[0]!.name;
  });

  type Row = { who: keyof typeof WHO; method: string; path: () => string; body?: unknown; expect: number };
  const rec = (target: 'own' | 'other' | 'missing'): string => (target === 'own' ? R1 : target === 'other' ? R2 : MISSING);
  const rows: Row[] = [];
  const perTarget = (who: keyof typeof WHO, method: string, suffix: string, codes: [number, number, number], body?: unknown): void => {
    (['own', 'other', 'missing'] as const).forEach((t, i) => rows.push({ who, method, path: () => `/api/recordings/${rec(t)}${suffix}`, expect: codes[i]!, ...(body ? { body } : {}) }));
  };
  for (const [who, code] of [['a1', 200], ['l1', 200], ['dpo', 200], ['xop', 403]] as const) rows.push({ who, method: 'GET', path: () => '/api/recordings', expect: code });
  // Metadata.
  perTarget('a1', 'GET', '', [200, 404, 404]);
  perTarget('a2', 'GET', '', [404, 200, 404]); // "own" is a1's recording: a2 sees only R2
  perTarget('l1', 'GET', '', [200, 404, 404]);
  perTarget('l2', 'GET', '', [404, 200, 404]);
  perTarget('dpo', 'GET', '', [200, 200, 404]);
  perTarget('xop', 'GET', '', [403, 403, 403]);
  // Coaching playback: never the DPO, never the extract operator.
  perTarget('a1', 'GET', '/play?purpose=coaching', [200, 404, 404]);
  perTarget('l1', 'GET', '/play?purpose=coaching', [200, 404, 404]);
  perTarget('l2', 'GET', '/play?purpose=coaching', [404, 200, 404]);
  perTarget('dpo', 'GET', '/play?purpose=coaching', [403, 403, 403]);
  perTarget('xop', 'GET', '/play?purpose=coaching', [403, 403, 403]);
  // Deletion requests: the recorded agent only.
  perTarget('a1', 'POST', '/deletion-requests', [201, 404, 404]);
  perTarget('l1', 'POST', '/deletion-requests', [403, 403, 403]);
  perTarget('dpo', 'POST', '/deletion-requests', [403, 403, 403]);
  perTarget('xop', 'POST', '/deletion-requests', [403, 403, 403]);
  // Deletion: the team lead of the recording (own target left out here: see the deletion test).
  rows.push({ who: 'l1', method: 'DELETE', path: () => `/api/recordings/${R2}`, expect: 404 });
  rows.push({ who: 'l1', method: 'DELETE', path: () => `/api/recordings/${MISSING}`, expect: 404 });
  perTarget('a1', 'DELETE', '', [403, 403, 403]);
  perTarget('dpo', 'DELETE', '', [403, 403, 403]);
  perTarget('xop', 'DELETE', '', [403, 403, 403]);
  for (const [who, code] of [['a1', 200], ['l1', 200], ['dpo', 200], ['xop', 403]] as const) rows.push({ who, method: 'GET', path: () => '/api/deletion-requests', expect: code });
  // Extracts: the extract operator only, and only their own extract.
  for (const [who, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 201]] as const) {
    rows.push({ who, method: 'POST', path: () => '/api/extracts', body: { subjectId: 'cust-c2', caseRef: 'CASE-m2' }, expect: code });
  }
  for (const [who, code] of [['a1', 403], ['l1', 403], ['dpo', 403], ['xop', 200], ['xop2', 404]] as const) {
    rows.push({ who, method: 'GET', path: () => `/api/extracts/${extractId}/files/${extractFile}?caseRef=CASE-matrix`, expect: code });
  }
  rows.push({ who: 'xop', method: 'GET', path: () => `/api/extracts/${extractId}/files/${extractFile}?caseRef=CASE-other`, expect: 404 });
  // Audit trail and compliance: the DPO only.
  for (const route of ['/api/audit', '/api/audit/verify', '/api/compliance']) {
    for (const [who, code] of [['a1', 403], ['l1', 403], ['dpo', 200], ['xop', 403]] as const) rows.push({ who, method: 'GET', path: () => route, expect: code });
  }

  it('answers every combination as the policy says, and audits every denial', async () => {
    const since = new Date().toISOString();
    const denials: Array<{ who: keyof typeof WHO; status: number; method: string; path: string }> = [];
    const mismatches: string[] = [];
    for (const row of rows) {
      const path = row.path();
      const res = await api(row.who, row.method, path, row.body === undefined ? {} : { body: row.body });
      await res.arrayBuffer();
      if (res.status !== row.expect) mismatches.push(`${row.who} ${row.method} ${path}: ${res.status}, expected ${row.expect}`);
      if (row.expect === 403 || row.expect === 404) denials.push({ who: row.who, status: row.expect, method: row.method, path });
    }
    expect(mismatches).toEqual([]);

    const entries = (await auditEntries('access.denied')).filter((e) => e.at >= since);
    // The route template a denial must name.
    const template = (method: string, path: string): string =>
      `${method} ${path
        .replace(/\?.*$/, '')
        .replace(/^\/api\/extracts\/[^/]+\/files\/[^/]+$/, '/api/extracts/{extractId}/files/{name}')
        .replace(/^\/api\/recordings\/[^/]+/, '/api/recordings/{id}')}`;
    const unmatched = denials.filter(
      (d) =>
        !entries.some(
          (e) =>
            e.actor === WHO[d.who]!.sub &&
            e.role === WHO[d.who]!.role &&
            e.details.status === d.status &&
            e.details.route === template(d.method, d.path) &&
            typeof e.details.reason === 'string',
        ),
    );
    expect(denials.length).toBeGreaterThan(40);
    expect(unmatched).toEqual([]);
    // A denial names the recording asked for (pseudonymous), never anything else about it.
    const agentProbe = entries.find((e) => e.actor === 'agent-a1' && e.refs.recordingId === R2);
    expect(agentProbe).toMatchObject({ type: 'access.denied', details: { status: 404, reason: 'not-own-recording' } });
  });

  it('lists only what the caller may see, and hides customer ids from agents and team leads', async () => {
    const ids = async (who: keyof typeof WHO) => ((await (await api(who, 'GET', '/api/recordings')).json()) as { recordings: Array<{ recordingId: string }> }).recordings.map((r) => r.recordingId);
    expect((await ids('a1')).sort()).toEqual([R1, R3].sort());
    expect(await ids('a2')).toEqual([R2]);
    expect((await ids('l1')).sort()).toEqual([R1, R3].sort());
    expect(await ids('l2')).toEqual([R2]);
    expect(await ids('dpo')).toEqual(expect.arrayContaining([R1, R2, R3]));
    for (const who of ['a1', 'l1'] as const) {
      const text = JSON.stringify(await (await api(who, 'GET', `/api/recordings/${R1}`)).json());
      expect(text).not.toContain('cust-c1');
      expect(text).toContain('"role":"customer"');
    }
    const dpoView = JSON.stringify(await (await api('dpo', 'GET', `/api/recordings/${R1}`)).json());
    expect(dpoView).toContain('cust-c1');
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
    expect((await api('a1', 'GET', `/api/recordings/${R1}/play`)).status).toBe(400);
    expect((await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=marketing`)).status).toBe(400);
    expect((await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching&format=mp3`)).status).toBe(400);
  });

  it('is stereo: agent LEFT, customer RIGHT, each side clean, aligned by the wall-clock anchors', async () => {
    const res = await api('l1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('audio/ogg');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    const file = await bytesOf(res);
    const { left, right, channels } = await decodeStereo(file);
    expect(channels).toBe(2);
    expect(toneAdvantageDb(left, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(right, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);

    const m = await stack.app.store.getManifest(R1);
    const first = (pid: string) => Math.min(...m.segments.filter((s) => s.participantId === pid).map((s) => s.startWallClockMs));
    const last = Math.max(...m.segments.map((s) => s.startWallClockMs + s.durationMs));
    const origin = Math.min(first('leg-agent-x7'), first('leg-cust-y3'));
    // Length: the recording's span on the common axis (within an Opus frame or two).
    expect(Math.abs(left.length / 48 - (last - origin))).toBeLessThan(60);
    // Each side begins where its anchor says: the tone's onset in the render equals its onset in
    // the track alone (a decoder joining a passthrough stream mid-call takes a frame or so to
    // reach full level) plus the anchor's offset from the origin, within 5 ms.
    for (const [pid, channel] of [['leg-agent-x7', left], ['leg-cust-y3', right]] as const) {
      const segs = await readTrackOgg(stack.app.store, R1, pid);
      const alone = (await decodeToPcm(joinOggOpus(segs))).pcm;
      expect(Math.abs(onset(channel) / 48 - (onset(alone) / 48 + first(pid) - origin)), pid).toBeLessThan(5);
    }
  });

  it('renders WAV on request', async () => {
    const res = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching&format=wav`);
    expect(res.status).toBe(200);
    const file = await bytesOf(res);
    expect(file.subarray(0, 4).toString()).toBe('RIFF');
    expect(file.readUInt32LE(40)).toBe(file.length - 44);
    const { left, right, channels } = await decodeStereo(file);
    expect(channels).toBe(2);
    expect(toneAdvantageDb(left, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(right, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
  });

  it('serves byte ranges (206, Content-Range) of one cached render, so a player can seek', async () => {
    const full = await bytesOf(await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`));
    const size = full.length;
    const part = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`, { headers: { range: 'bytes=100-1123' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 100-1123/${size}`);
    expect(part.headers.get('content-length')).toBe('1024');
    expect((await bytesOf(part)).equals(full.subarray(100, 1124))).toBe(true);
    const tail = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`, { headers: { range: 'bytes=-500' } });
    expect(tail.status).toBe(206);
    expect((await bytesOf(tail)).equals(full.subarray(size - 500))).toBe(true);
    const open = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`, { headers: { range: `bytes=${size - 10}-` } });
    expect((await bytesOf(open)).equals(full.subarray(size - 10))).toBe(true);
    const beyond = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`, { headers: { range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${size}`);
    // The same ETag every time: one render, served in pieces.
    const etag = part.headers.get('etag');
    expect(etag).toBeTruthy();
    expect(tail.headers.get('etag')).toBe(etag);
    const stale = await api('a1', 'GET', `/api/recordings/${R1}/play?purpose=coaching`, { headers: { range: 'bytes=0-9', 'if-range': '"stale"' } });
    expect(stale.status).toBe(200);
    await stale.arrayBuffer();
  });
});

describe('subject-access extract (R12)', () => {
  it("holds the customer's own voice only, and a manifest naming no other person", async () => {
    const res = await api('xop', 'POST', '/api/extracts', { body: { subjectId: 'cust-c1', caseRef: 'SAR-2025-0042' } });
    expect(res.status).toBe(201);
    const body = (await res.json()) as {
      extractId: string;
      manifest: { recordings: Array<Record<string, unknown> & { recordingId: string; accesses: Array<{ type: string; role: string; by: string }> }> };
      files: Array<{ name: string; bytes: number; sha256: string; url: string }>;
    };
    const text = JSON.stringify(body);
    for (const other of ['agent-a1', 'leg-agent-x7', 'lead-l1', 'call-acc-1', 'cust-c2', 'cust-c3', 'agent-a2']) expect(text, other).not.toContain(other);
    expect(body.manifest.recordings.map((r) => r.recordingId)).toEqual([R1]);
    const r = body.manifest.recordings[0]!;
    expect(r).toMatchObject({
      yourRole: 'customer',
      purpose: 'agent training and coaching',
      legalBasis: { article: expect.stringContaining('6(1)(a)') },
      consentEvidence: [{ method: 'dtmf', infoVersion: 'training-notice-v1' }],
      retention: { retentionClass: 'training-30d' },
    });
    // Earlier plays by the agent and the team lead, by role and alias only.
    expect(r.accesses.filter((a) => a.type === 'access.play').map((a) => a.role)).toEqual(expect.arrayContaining(['agent', 'team-lead']));
    expect(r.accesses.every((a) => /^(you|system|person-\d+)$/.test(a.by))).toBe(true);

    const audio = body.files.find((f) => f.name.endsWith('.ogg'))!;
    const fileRes = await api('xop', 'GET', audio.url);
    expect(fileRes.status).toBe(200);
    const ogg = await bytesOf(fileRes);
    expect(createHash('sha256').update(ogg).digest('hex')).toBe(audio.sha256);
    const { pcm, stderr } = await decodeToPcm(ogg);
    expect(stderr.trim()).toBe('');
    expect(pcm.length / 48).toBeGreaterThan(3000);
    expect(toneAdvantageDb(pcm, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThanOrEqual(40);

    const manifestFile = body.files.find((f) => f.name === 'manifest.json')!;
    const mres = await api('xop', 'GET', manifestFile.url);
    expect(JSON.parse((await bytesOf(mres)).toString())).toEqual(body.manifest);
  });

  it("an agent's extract (their own subject-access request): their voice, no customer", async () => {
    const res = await api('xop', 'POST', '/api/extracts?caseRef=SAR-agent-7', { body: { subjectId: 'agent-a1', format: 'wav' } });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { manifest: { recordings: Array<{ recordingId: string }> }; files: Array<{ name: string; url: string }> };
    const text = JSON.stringify(body);
    for (const other of ['cust-c1', 'cust-c3', 'leg-cust-y3', 'lead-l1', 'call-acc-1']) expect(text, other).not.toContain(other);
    expect(body.manifest.recordings.map((r) => r.recordingId).sort()).toEqual([R1, R3].sort());
    const wav = await bytesOf(await api('xop', 'GET', body.files.find((f) => f.name === `${R1}.wav`)!.url));
    expect(wav.subarray(0, 4).toString()).toBe('RIFF');
    const { pcm } = await decodeToPcm(wav);
    expect(toneAdvantageDb(pcm, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThanOrEqual(40);
  });

  it('requires a case reference', async () => {
    expect((await api('xop', 'POST', '/api/extracts', { body: { subjectId: 'cust-c1' } })).status).toBe(400);
    expect((await api('xop', 'POST', '/api/extracts', { body: { subjectId: 'cust-c1', caseRef: 'has space' } })).status).toBe(400);
    expect((await api('xop', 'POST', '/api/extracts', { body: { caseRef: 'SAR-1' } })).status).toBe(400);
  });
});

describe('deletion at the agent request (R9)', () => {
  it('the agent asks, the team lead sees it and deletes; the recording is gone', async () => {
    const ask = await api('a1', 'POST', `/api/recordings/${R3}/deletion-requests`);
    expect(ask.status).toBe(201);
    expect((await api('a1', 'POST', `/api/recordings/${R3}/deletion-requests`)).status).toBe(200); // idempotent
    const pending = async (who: keyof typeof WHO) =>
      ((await (await api(who, 'GET', '/api/deletion-requests')).json()) as { requests: Array<{ recordingId: string }> }).requests.map((r) => r.recordingId);
    expect(await pending('l1')).toContain(R3);
    expect(await pending('l2')).not.toContain(R3);
    expect(await pending('a1')).toContain(R3);
    expect(await pending('a2')).not.toContain(R3);

    expect((await api('a1', 'DELETE', `/api/recordings/${R3}`)).status).toBe(403);
    expect((await api('l2', 'DELETE', `/api/recordings/${R3}`)).status).toBe(404);
    const del = await api('l1', 'DELETE', `/api/recordings/${R3}`);
    expect(del.status).toBe(200);
    const body = (await del.json()) as { receipt: { recordingId: string; complete: boolean; mediaObjects: { count: number } }; requestClosed: boolean };
    expect(body.requestClosed).toBe(true);
    expect(body.receipt).toMatchObject({ recordingId: R3, complete: true });
    expect(body.receipt.mediaObjects.count).toBeGreaterThan(0);

    expect((await api('l1', 'GET', `/api/recordings/${R3}`)).status).toBe(404);
    expect((await api('a1', 'GET', `/api/recordings/${R3}/play?purpose=coaching`)).status).toBe(404);
    expect(await pending('l1')).not.toContain(R3);
    const deletes = await auditEntries('access.delete');
    expect(deletes.some((e) => e.actor === 'lead-l1' && e.role === 'team-lead' && e.refs.recordingId === R3 && e.purpose === 'agent-request')).toBe(true);
    expect((await auditEntries('recording.deleted')).some((e) => e.refs.recordingId === R3)).toBe(true);
  });
});

describe('audit trail for the DPO (R11)', () => {
  it('lists entries filtered by type and time', async () => {
    const res = await api('dpo', 'GET', `/api/audit?type=access.play&from=${encodeURIComponent(new Date(Date.now() - 3_600_000).toISOString())}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { entries: AuditEntry[]; count: number };
    expect(body.count).toBeGreaterThan(0);
    expect(body.entries.every((e) => e.type === 'access.play')).toBe(true);
    expect((await api('dpo', 'GET', '/api/audit?from=yesterday')).status).toBe(400);
  });

  it('the compliance report of the stack holds no role violation', async () => {
    const res = await api('dpo', 'GET', '/api/compliance');
    expect(res.status).toBe(200);
    const report = (await res.json()) as { violations: Array<{ rule: string; recordingId?: string }> };
    expect(report.violations.filter((v) => v.rule === 'access-by-allowed-role')).toEqual([]);
    expect(report.violations.filter((v) => v.recordingId === R1)).toEqual([]);
  });

  it('verifies the chain, and shows where an edited or deleted entry breaks it', async () => {
    const ok = (await (await api('dpo', 'GET', '/api/audit/verify')).json()) as { ok: boolean; entries: number };
    expect(ok).toMatchObject({ ok: true });
    expect(ok.entries).toBeGreaterThan(10);

    const client = stack.app.s3;
    const bucket = stack.app.audit.bucket;
    const writer = stack.app.audit.writerId;
    // Edit entry 2 of the worker's own stream.
    const key = `streams/${writer}/audit/000000000002.json`;
    const entry = JSON.parse(Buffer.concat(await (await client.getObject(bucket, key)).toArray()).toString()) as AuditEntry;
    const edited = Buffer.from(JSON.stringify({ ...entry, purpose: 'edited-later' }));
    await client.putObject(bucket, key, edited, edited.length);
    // Delete entry 2 of a second writer's stream.
    const other = await AuditTrail.open({ client, bucket, writerId: 'tamper-del', hmacKey: TEST_AUDIT_KEY });
    for (let i = 0; i < 4; i++) await other.append({ type: 'test.filler', actor: 'system', role: 'system', purpose: 'test' });
    await client.removeObject(bucket, 'streams/tamper-del/audit/000000000002.json');

    const res = await api('dpo', 'GET', '/api/audit/verify');
    expect(res.status).toBe(200);
    const report = (await res.json()) as { ok: boolean; brokenAt?: { stream: string; seq: number; reason: string }; streams: Array<{ stream: string; ok: boolean; brokenAt?: { seq: number; reason: string; explanation: string } }> };
    expect(report.ok).toBe(false);
    expect(report.brokenAt).toBeDefined();
    const mine = report.streams.find((s) => s.stream === writer)!;
    expect(mine.brokenAt).toMatchObject({ seq: 2, reason: 'hash-mismatch', explanation: 'an entry was edited' });
    const del = report.streams.find((s) => s.stream === 'tamper-del')!;
    expect(del.brokenAt).toMatchObject({ seq: 2, reason: 'missing', explanation: 'an entry was deleted' });
  });
});
