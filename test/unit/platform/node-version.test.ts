import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';

// The project brings its own Node from the npm registry (package `node`, see package.json): the
// README's commands run on it through `npm run`/`npm test`, whatever Node the machine has.
describe('platform', () => {
  it('runs on Node 24 LTS, the version package.json declares', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };
    expect(pkg.engines.node).toBe('>=24 <25');
    expect(process.versions.node.split('.')[0]).toBe('24');
  });
});
