import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { OptinError, isOptinError } from '../errors/OptinError.ts';
import { loadBrowserBundle, type BrowserBundleSpec } from '../http/browserBundle.ts';

/**
 * The browser code of the web app: src/web/client/app.ts bundled with its libraries
 * (wavesurfer.js) into one ES module, served under a content-hashed name with a year of caching
 * (a new build gets a new name). Like every browser bundle (src/http/browserBundle.ts) it is built
 * by `npm run build` into dist/bundles/, so the production image runs without esbuild; from
 * source it is bundled in memory once per process start (about 0.2 s). Stylesheets are plain
 * files in src/web/public/ (copied beside the compiled code by the build), served as they are
 * (@fastify/static).
 */

export const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));

/** The web app's script, for scripts/build/build.ts and loadBrowserBundle. */
export const WEB_APP_BUNDLE: BrowserBundleSpec = {
  name: 'web-app.js',
  source: "import './src/web/client/app.ts';",
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  legalComments: 'eof',
};

export interface Asset {
  name: string;
  body: Buffer;
  contentType: string;
  etag: string;
}

export interface WebAssets {
  /** `/assets/app.<hash>.js` */
  scriptUrl: string;
  get(name: string): Asset | undefined;
}

export async function buildWebAssets(): Promise<WebAssets> {
  let js: Buffer;
  try {
    js = Buffer.from(loadBrowserBundle(WEB_APP_BUNDLE));
  } catch (err) {
    if (isOptinError(err)) throw err; // BUNDLE_MISSING names its fix
    throw new OptinError('INTERNAL', `the web app's script could not be bundled: ${(err as Error).message}`);
  }
  const hash = createHash('sha256').update(js).digest('hex').slice(0, 16);
  const name = `app.${hash}.js`;
  const asset: Asset = { name, body: js, contentType: 'text/javascript; charset=utf-8', etag: `"${hash}"` };
  return {
    scriptUrl: `/assets/${name}`,
    get: (n) => (n === name ? asset : undefined),
  };
}
