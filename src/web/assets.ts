import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { OptinError } from '../errors/OptinError.ts';

/**
 * The browser code of the web app: src/web/client/app.ts bundled with its libraries
 * (wavesurfer.js) into one ES module, in memory, once per process start (about 0.2 s), served
 * under a content-hashed name with a year of caching (a new build gets a new name). Stylesheets
 * are plain files in src/web/public/, served as they are (@fastify/static).
 */

export const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));
const ENTRY = fileURLToPath(new URL('./client/app.ts', import.meta.url));

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
    const out = await build({
      entryPoints: [ENTRY],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
      minify: true,
      sourcemap: false,
      write: false,
      logLevel: 'silent',
      legalComments: 'eof',
    });
    js = Buffer.from(out.outputFiles[0]!.contents);
  } catch (err) {
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
