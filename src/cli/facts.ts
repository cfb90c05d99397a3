import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { CliIo } from './io.ts';
import { requestJson } from './http.ts';

/**
 * `optin facts`: posts facts to the control plane's ingest API, for people and scripts. Input is
 * JSON, one fact per line, in the policy stream's `fact` format (docs/control-protocol.md §5)
 * plus two API-only forms:
 *   {"type":"call.started","callId":"c1","participants":[...]}
 *   {"type":"consent.granted","callId":"c1","participantId":"p2","evidence":{...}}
 *   {"type":"team.set","agentId":"a1","teamLeadId":"l1"}
 *   {"type":"monthly-cap.set","agentId":"a1","monthlyCap":20}
 * Each line's Idempotency-Key is derived from its text, so running the same file twice applies
 * it once. Prints one JSON line per fact: {line, type, status, body}.
 *
 * Exit status: 0 every fact accepted, 1 some refused or failed, 2 usage.
 */

const USAGE = `usage: optin facts [--url URL] [--token-file FILE] [--ca-file FILE] [--file FILE] [--fact JSON]...

Posts facts (JSON lines, the policy stream's fact format) to the control plane's API.

  --url URL          API base URL (default $OPTIN_CONTROL_API_URL, else http://127.0.0.1:8780)
  --token-file FILE  file holding the integration token (default $OPTIN_FACTS_TOKEN)
  --ca-file FILE     private CA for an https:// control plane
  --file FILE        read facts from FILE ("-" or absent with no --fact: standard input)
  --fact JSON        one fact given on the command line (repeatable)
  --key-prefix P     prefix of the derived Idempotency-Keys (default "cli")`;

interface Route {
  method: 'POST' | 'PUT';
  path: string;
  body?: Record<string, unknown>;
}

function str(fact: Record<string, unknown>, key: string): string {
  const v = fact[key];
  if (typeof v !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(v)) throw new Error(`${key} must be an id ([A-Za-z0-9_-]{1,64})`);
  return v;
}

/** Maps a fact to its API call; the API validates the rest. */
export function routeOf(fact: Record<string, unknown>): Route {
  const { type, ...rest } = fact;
  switch (type) {
    case 'call.started':
      return { method: 'POST', path: '/v1/calls', body: rest };
    case 'call.ended':
      return { method: 'POST', path: `/v1/calls/${str(fact, 'callId')}/end` };
    case 'participants.changed': {
      const { callId: _callId, ...body } = rest;
      return { method: 'POST', path: `/v1/calls/${str(fact, 'callId')}/participants`, body };
    }
    case 'call.paused':
      return { method: 'POST', path: `/v1/calls/${str(fact, 'callId')}/pause` };
    case 'call.resumed':
      return { method: 'POST', path: `/v1/calls/${str(fact, 'callId')}/resume` };
    case 'consent.granted':
    case 'consent.declined':
    case 'consent.withdrawn': {
      const { callId: _callId, ...body } = rest;
      return { method: 'POST', path: `/v1/calls/${str(fact, 'callId')}/consent`, body: { ...body, decision: String(type).slice('consent.'.length) } };
    }
    case 'schedule.set': {
      const { agentId: _agentId, ...body } = rest;
      return { method: 'PUT', path: `/v1/agents/${str(fact, 'agentId')}/schedule`, body };
    }
    case 'monthly-cap.set': {
      const { agentId: _agentId, ...body } = rest;
      return { method: 'PUT', path: `/v1/agents/${str(fact, 'agentId')}/monthly-cap`, body };
    }
    case 'team.set': {
      const { agentId: _agentId, ...body } = rest;
      return { method: 'PUT', path: `/v1/agents/${str(fact, 'agentId')}/team-lead`, body };
    }
    default:
      throw new Error(`unknown fact type ${JSON.stringify(type)}`);
  }
}

export async function runFacts(argv: string[], env: NodeJS.ProcessEnv, io: CliIo, stdin: () => string = () => readFileSync(0, 'utf8')): Promise<number> {
  let values: { url?: string; 'token-file'?: string; 'ca-file'?: string; file?: string; fact?: string[]; 'key-prefix'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        'token-file': { type: 'string' },
        'ca-file': { type: 'string' },
        file: { type: 'string' },
        fact: { type: 'string', multiple: true },
        'key-prefix': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.err(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.out(`${USAGE}\n`);
    return 0;
  }
  const url = (values.url ?? env.OPTIN_CONTROL_API_URL ?? 'http://127.0.0.1:8780').replace(/\/+$/, '');
  let token: string | undefined;
  try {
    token = values['token-file'] !== undefined ? readFileSync(values['token-file'], 'utf8').trim() : env.OPTIN_FACTS_TOKEN;
  } catch (err) {
    io.err(`optin facts: cannot read --token-file: ${(err as Error).message}\n`);
    return 2;
  }
  if (token === undefined || token === '') {
    io.err(`optin facts: no token: pass --token-file or set OPTIN_FACTS_TOKEN (optin integrations add prints one)\n${USAGE}\n`);
    return 2;
  }
  const prefix = values['key-prefix'] ?? 'cli';
  if (!/^[A-Za-z0-9_.:-]{1,40}$/.test(prefix)) {
    io.err('optin facts: --key-prefix must be 1..40 of A-Z a-z 0-9 _ . : -\n');
    return 2;
  }
  const ca = values['ca-file'] !== undefined ? readFileSync(values['ca-file']) : undefined;
  let lines: string[];
  if (values.fact !== undefined && values.file === undefined) lines = values.fact;
  else {
    const text = values.file === undefined || values.file === '-' ? stdin() : readFileSync(values.file, 'utf8');
    lines = [...(values.fact ?? []), ...text.split('\n')];
  }
  let failures = 0;
  let n = 0;
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    n++;
    let route: Route;
    let type = 'unknown';
    try {
      const fact = JSON.parse(line) as Record<string, unknown>;
      if (typeof fact !== 'object' || fact === null || Array.isArray(fact)) throw new Error('a fact is a JSON object');
      type = String(fact.type);
      route = routeOf(fact);
    } catch (err) {
      failures++;
      io.out(`${JSON.stringify({ line: n, type, status: 0, error: (err as Error).message })}\n`);
      continue;
    }
    const key = `${prefix}-${createHash('sha256').update(line).digest('base64url').slice(0, 32)}`;
    try {
      const res = await requestJson(`${url}${route.path}`, {
        method: route.method,
        headers: { authorization: `Bearer ${token}`, 'idempotency-key': key },
        ...(route.body === undefined ? {} : { body: route.body }),
        ...(ca === undefined ? {} : { ca }),
      });
      if (res.status < 200 || res.status >= 300) failures++;
      io.out(`${JSON.stringify({ line: n, type, status: res.status, body: res.body })}\n`);
    } catch (err) {
      failures++;
      io.out(`${JSON.stringify({ line: n, type, status: 0, error: (err as Error).message })}\n`);
    }
  }
  if (n === 0) {
    io.err('optin facts: no facts given\n');
    return 2;
  }
  return failures === 0 ? 0 : 1;
}
