import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { OptinError } from '../errors/OptinError.ts';

/**
 * Browser bundles (a library like mediasoup-client, or a page's script) that the servers send to
 * browsers. They are built by `npm run build` (scripts/build/bundles.ts) into dist/bundles/, so the
 * production image neither ships nor runs esbuild: compiled code (dist/) reads the prebuilt file.
 * Code run from source (tsx, vitest) builds each bundle once per process instead, so a developer
 * never gets a stale bundle from an old build.
 *
 * A page declares its bundle as a `BrowserBundleSpec` next to its routes, serves the text from
 * `loadBrowserBundle`, and lists the spec in scripts/build/bundles.ts.
 */

export interface BrowserBundleSpec {
  /** File name under dist/bundles/ (for example `mediasoup-client.js`). */
  readonly name: string;
  /** ES module source that esbuild bundles, resolved from the package root (`import ... from 'pkg'`). */
  readonly source: string;
  /** Default: an IIFE for `<script src>`. */
  readonly format?: 'iife' | 'esm';
  /** esbuild targets (default `es2020`). */
  readonly target?: readonly string[];
  /** Where license comments go (default: dropped). */
  readonly legalComments?: 'none' | 'eof';
}

/** True when this module runs compiled (dist/src/http/browserBundle.js), false under tsx or vitest. */
export const RUNNING_COMPILED = import.meta.url.endsWith('.js');

/** The package root: two levels above src/http/ from source, three from dist/src/http/. */
const PACKAGE_ROOT = fileURLToPath(new URL(RUNNING_COMPILED ? '../../../' : '../../', import.meta.url));

/** Where `npm run build` writes the bundles. */
export const BUNDLE_DIR = `${PACKAGE_ROOT}dist/bundles/`;

const built = new Map<string, string>();

/**
 * Bundles `spec` with esbuild (a development dependency: loaded only here, on demand). Used by the
 * build script and, from source, by `loadBrowserBundle`.
 */
export function buildBrowserBundle(spec: BrowserBundleSpec): string {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  } catch {
    throw new OptinError(
      'BUNDLE_MISSING',
      `browser bundle ${spec.name} is not in ${BUNDLE_DIR} and esbuild is not installed to build it: run \`npm run build\` (the image does, at build time)`,
    );
  }
  const result = esbuild.buildSync({
    stdin: { contents: spec.source, resolveDir: PACKAGE_ROOT, sourcefile: spec.name.replace(/\.js$/, '.entry.js') },
    bundle: true,
    write: false,
    format: spec.format ?? 'iife',
    platform: 'browser',
    target: spec.target ? [...spec.target] : 'es2020',
    minify: true,
    legalComments: spec.legalComments ?? 'none',
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

/**
 * The bundle's text: the prebuilt file when running compiled, else built once per process. A
 * compiled server without its prebuilt bundle builds it when esbuild happens to be installed and
 * otherwise fails at startup naming the fix (never on the first browser request).
 */
export function loadBrowserBundle(spec: BrowserBundleSpec, options: { dir?: string; compiled?: boolean } = {}): string {
  const compiled = options.compiled ?? RUNNING_COMPILED;
  const file = `${options.dir ?? BUNDLE_DIR}${spec.name}`;
  if (compiled && existsSync(file)) return readFileSync(file, 'utf8');
  const cached = built.get(spec.name);
  if (cached !== undefined) return cached;
  const text = buildBrowserBundle(spec);
  built.set(spec.name, text);
  return text;
}
