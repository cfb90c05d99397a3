/**
 * docs/openapi.yaml documents every route the recorder serves, and nothing it does not (issue 19).
 * The served routes are the groups' own lists (RECORDER_ROUTES); each list is checked against the
 * paths its group's source matches, so a route added to a group without its list fails here too.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RECORDER_ROUTES } from '../../../src/app/servedRoutes.ts';
import { HEALTH_ROUTES } from '../../../src/http/healthRoutes.ts';
import { DASHBOARD_ROUTES } from '../../../src/dashboard/dashboardRoutes.ts';
import { SOFTPHONE_ROUTES } from '../../../src/softphone/softphoneRoutes.ts';
import { CALL_CONTROL_ROUTES } from '../../../src/callcontrol/callControlRoutes.ts';
import { SIGNAL_ROUTES } from '../../../src/callcontrol/SignallingServer.ts';

const src = (p: string): string => readFileSync(new URL(`../../../src/${p}`, import.meta.url), 'utf8');
const paths = (routes: readonly string[]): string[] => routes.map((r) => r.split(' ')[1]!).sort();

/**
 * The document's operations, read line by line (no YAML package in the project): a path item at
 * two spaces, its operations at four; each operation's text up to the next one.
 */
const text = readFileSync(new URL('../../../docs/openapi.yaml', import.meta.url), 'utf8');
const blocks = new Map<string, string[]>();
{
  let path: string | undefined;
  let current: string[] | undefined;
  for (const line of text.split('\n')) {
    const p = /^ {2}(\/\S*):$/.exec(line);
    if (p) {
      path = p[1];
      current = undefined;
      continue;
    }
    if (/^\S/.test(line)) path = undefined;
    const m = /^ {4}(get|post|put|patch|delete):$/.exec(line);
    if (path !== undefined && m) {
      const key = `${m[1]!.toUpperCase()} ${path}`;
      current = [];
      blocks.set(key, current);
      continue;
    }
    if (current !== undefined && (/^ {4}\S/.test(line) || /^ {2}\S/.test(line))) current = undefined;
    current?.push(line);
  }
}
const documented = [...blocks.keys()];
const block = (route: string): string => (blocks.get(route) ?? []).join('\n');

describe('docs/openapi.yaml and the routes the recorder serves', () => {
  it('documents every served route, each with its responses', () => {
    for (const route of RECORDER_ROUTES) {
      expect(documented, `${route} is documented`).toContain(route);
      expect(block(route), `${route} has responses`).toMatch(/^ {6}responses:\n {8}'\d{3}':/m);
    }
  });

  it('documents no route the recorder does not serve', () => {
    expect([...documented].sort()).toEqual([...RECORDER_ROUTES].sort());
  });

  it('each group list matches the paths its source serves', () => {
    const exact = (file: string): string[] => [...src(file).matchAll(/pathname === '(\/[^']*)'/g)].map((m) => m[1]!).filter((p) => !p.endsWith('/') || p === '/softphone/');
    expect(paths(HEALTH_ROUTES)).toEqual([...new Set(exact('http/healthRoutes.ts'))].sort());
    expect(paths(DASHBOARD_ROUTES)).toEqual([...new Set(exact('dashboard/dashboardRoutes.ts'))].sort());
    const files = [...src('softphone/softphoneRoutes.ts').matchAll(/^ {4}'(\/softphone\/[^']*)':/gm)].map((m) => m[1]!);
    expect(paths(SOFTPHONE_ROUTES)).toEqual(files.sort());
    expect(src('callcontrol/SignallingServer.ts')).toContain(`pathname !== '${paths(SIGNAL_ROUTES)[0]}'`);
    // Call control matches by pattern: one per listed route, with the method it checks.
    const cc = src('callcontrol/callControlRoutes.ts');
    expect(cc).toContain("/^\\/calls\\/([^/]{1,128})\\/plain-legs$/");
    expect(cc).toContain("/^\\/calls\\/([^/]{1,128})\\/plain-legs\\/([^/]{1,128})$/");
    expect(paths(CALL_CONTROL_ROUTES)).toEqual(['/calls/{callId}/plain-legs', '/calls/{callId}/plain-legs/{participantId}']);
  });

  it('documents the call-control security scheme and the call token format', () => {
    expect(text).toContain('    sipLegToken:');
    expect(text).toMatch(/v1\.<claims>\.<mac>/);
    for (const route of CALL_CONTROL_ROUTES) expect(block(route), route).toContain('      security:\n        - sipLegToken: []');
  });
});
