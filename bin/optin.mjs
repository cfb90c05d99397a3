#!/usr/bin/env node
/**
 * The `optin` command line (package.json "bin"). Commands: `optin extract ...`, `optin audit
 * verify ...`, `optin catalogue ...` (`optin help`).
 *
 * In a source checkout (src/ present) the TypeScript runs through tsx, like the workers under
 * `npm run`: this stub registers tsx's ESM loader, then hands over to src/cli/main.ts. The image
 * ships no src/ and no tsx: there it runs the compiled dist/src/cli/main.js (`npm run build`).
 * Deciding by the presence of src/, not of dist/, means a stale dist/ in a checkout is never run.
 */
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
let main;
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import(source.href));
} else {
  ({ main } = await import(new URL('../dist/src/cli/main.js', import.meta.url).href));
}
process.exitCode = await main(process.argv.slice(2), process.env);
