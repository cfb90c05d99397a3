import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadBrowserBundle, type BrowserBundleSpec } from '../http/browserBundle.ts';
import type { RouteGroup } from '../http/HttpServer.ts';

const PUBLIC = fileURLToPath(new URL('./public/', import.meta.url));

/** mediasoup-client for the page, as `window.mediasoupClient` (built by `npm run build`). */
export const MEDIASOUP_CLIENT_BUNDLE: BrowserBundleSpec = {
  name: 'mediasoup-client.js',
  source: "import * as m from 'mediasoup-client'; window.mediasoupClient = m;",
};

/**
 * Serves the softphone page under /softphone/ with mediasoup-client bundled for the browser: the
 * prebuilt bundle from dist/ when running compiled, else built once (src/http/browserBundle.ts).
 */
/** The routes this group serves (docs/openapi.yaml documents each; `/softphone` is `/softphone/`). */
export const SOFTPHONE_ROUTES = ['GET /softphone/', 'GET /softphone/softphone.js', 'GET /softphone/mediasoup-client.js'] as const;

export function softphoneRoutes(): RouteGroup {
  const bundle = loadBrowserBundle(MEDIASOUP_CLIENT_BUNDLE);
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
