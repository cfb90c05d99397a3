/**
 * `npm run build`: the production tree in dist/ that the image runs with `node` alone.
 *
 *   dist/src/..., dist/workers/{recorder,control}.js   tsc -p tsconfig.build.json
 *   dist/src/** (non-TypeScript files)   the pages, HTML and SQL migrations the code reads beside itself
 *   dist/bundles/*.js                    browser bundles (src/http/browserBundle.ts), built here with
 *                                        esbuild so that production needs neither esbuild nor tsx
 *
 * `--out DIR` builds into DIR instead of dist/ (tests); DIR's parent must then hold package.json
 * and node_modules for the result to run, as the image's /app does.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBrowserBundle, type BrowserBundleSpec } from '../../src/http/browserBundle.ts';
import { MEDIASOUP_CLIENT_BUNDLE } from '../../src/softphone/softphoneRoutes.ts';
import { WEB_APP_BUNDLE } from '../../src/web/assets.ts';

/** Every browser bundle a server serves. A page that adds one lists its spec here. */
export const BROWSER_BUNDLES: readonly BrowserBundleSpec[] = [MEDIASOUP_CLIENT_BUNDLE, WEB_APP_BUNDLE];

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function copyAssets(from: string, to: string): number {
  let copied = 0;
  for (const entry of readdirSync(from)) {
    const src = path.join(from, entry);
    const dst = path.join(to, entry);
    if (statSync(src).isDirectory()) copied += copyAssets(src, dst);
    else if (!entry.endsWith('.ts')) {
      mkdirSync(to, { recursive: true });
      cpSync(src, dst);
      copied++;
    }
  }
  return copied;
}

function main(argv: string[]): void {
  const outArg = argv.indexOf('--out');
  const out = path.resolve(ROOT, outArg >= 0 ? argv[outArg + 1]! : 'dist');
  const started = Date.now();
  rmSync(out, { recursive: true, force: true });
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', out], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  const assets = copyAssets(path.join(ROOT, 'src'), path.join(out, 'src'));
  mkdirSync(path.join(out, 'bundles'), { recursive: true });
  for (const spec of BROWSER_BUNDLES) writeFileSync(path.join(out, 'bundles', spec.name), buildBrowserBundle(spec));
  console.log(
    `build: ${path.relative(ROOT, out) || out}/ in ${((Date.now() - started) / 1000).toFixed(1)} s ` +
      `(${assets} assets, bundles: ${BROWSER_BUNDLES.map((b) => b.name).join(', ')})`,
  );
}

main(process.argv.slice(2));
