import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { buildSync } from 'esbuild';
import type { RouteGroup } from '../http/HttpServer.ts';

const PUBLIC = fileURLToPath(new URL('./public/', import.meta.url));

/**
 * Serves the softphone page under /softphone/ with mediasoup-client bundled for the browser
 * once at startup (esbuild, a few hundred ms).
 */
/** The routes this group serves (docs/openapi.yaml documents each; `/softphone` is `/softphone/`). */
export const SOFTPHONE_ROUTES = ['GET /softphone/', 'GET /softphone/softphone.js', 'GET /softphone/mediasoup-client.js'] as const;

export function softphoneRoutes(): RouteGroup {
  const require = createRequire(import.meta.url);
  const clientEntry = require.resolve('mediasoup-client');
  const bundle = buildSync({
    stdin: { contents: `import * as m from ${JSON.stringify(clientEntry)}; window.mediasoupClient = m;`, resolveDir: PUBLIC },
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    logLevel: 'silent',
  }).outputFiles[0]!.text;
  const files: Record<string, [string, string]> = {
    '/softphone/': ['text/html; charset=utf-8', readFileSync(`${PUBLIC}index.html`, 'utf8')],
    '/softphone/softphone.js': ['text/javascript; charset=utf-8', readFileSync(`${PUBLIC}softphone.js`, 'utf8')],
    '/softphone/mediasoup-client.js': ['text/javascript; charset=utf-8', bundle],
  };
  return (req, res, url) => {
    if (req.method !== 'GET') return false;
    const file = files[url.pathname === '/softphone' ? '/softphone/' : url.pathname];
    if (!file) return false;
    res.writeHead(200, { 'content-type': file[0], 'cache-control': 'no-store' });
    res.end(file[1]);
    return true;
  };
}
