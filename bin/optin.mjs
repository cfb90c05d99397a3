#!/usr/bin/env node
/**
 * The `optin` command line (package.json "bin"). The code is TypeScript run through tsx, like the
 * worker: this stub registers tsx's ESM loader for this process, then hands over to
 * src/cli/main.ts. Commands: `optin extract ...`, `optin audit verify ...` (`optin help`).
 */
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2), process.env);
