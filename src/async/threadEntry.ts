import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

/**
 * How to start a worker thread whose module is TypeScript. Under tsx or vitest the worker needs
 * tsx's loader, and `execArgv: ['--import', 'tsx']` does not do it (tsx self-registers only on the
 * main thread: it checks `isMainThread`), so a two-line bootstrap registers tsx's ESM hooks through
 * its API, then imports the thread module. The compiled build (dist/) needs none of this.
 *
 * `callerUrl` is the caller's `import.meta.url` and `file` the thread module's name beside it,
 * without extension: the test for the build is on the caller's own URL (a `new URL('./x.ts')`
 * string is not rewritten by the compiler).
 */
export function threadEntry(callerUrl: string, file: string): [string | URL, { eval?: boolean }] {
  if (callerUrl.endsWith('.js')) return [new URL(`./${file}.js`, callerUrl), {}];
  const url = new URL(`./${file}.ts`, callerUrl);
  const code = `import(${JSON.stringify(tsxEsmApiUrl())})` + `.then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return [code, { eval: true }];
}

function tsxEsmApiUrl(): string {
  // `tsx/esm/api` under the "import" condition; createRequire would pick the CommonJS build.
  const pkg = createRequire(import.meta.url).resolve('tsx/package.json');
  return pathToFileURL(pkg.replace(/package\.json$/, 'dist/esm/api/index.mjs')).href;
}

/** FNV-1a 32-bit: a cheap, stable hash to pin work to a thread. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
