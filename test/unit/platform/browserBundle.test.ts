/**
 * Browser bundles (src/http/browserBundle.ts): compiled code serves the prebuilt file; code run
 * from source builds once per process and never reads a possibly stale dist/.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RUNNING_COMPILED, buildBrowserBundle, loadBrowserBundle, type BrowserBundleSpec } from '../../../src/http/browserBundle.ts';
import { MEDIASOUP_CLIENT_BUNDLE } from '../../../src/softphone/softphoneRoutes.ts';

const dir = `${mkdtempSync(path.join(tmpdir(), 'optin-bundles-'))}/`;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('browser bundles', () => {
  const spec: BrowserBundleSpec = { name: 'tiny.js', source: "import { v4 } from './no-such-thing.js'; window.x = v4;" };

  it('under vitest the code runs from source', () => {
    expect(RUNNING_COMPILED).toBe(false);
  });

  it('compiled: the prebuilt file is served as it is (no build, so a spec that cannot build is fine)', () => {
    writeFileSync(`${dir}tiny.js`, '/* prebuilt */');
    expect(loadBrowserBundle(spec, { dir, compiled: true })).toBe('/* prebuilt */');
  });

  it('from source: built once, the prebuilt file ignored', () => {
    writeFileSync(`${dir}${MEDIASOUP_CLIENT_BUNDLE.name}`, '/* stale */');
    const first = loadBrowserBundle(MEDIASOUP_CLIENT_BUNDLE, { dir, compiled: false });
    expect(first).not.toBe('/* stale */');
    expect(first).toContain('window.mediasoupClient');
    expect(loadBrowserBundle(MEDIASOUP_CLIENT_BUNDLE, { dir, compiled: false })).toBe(first);
  });

  it('the build is deterministic (the image and a developer get the same bytes)', () => {
    expect(buildBrowserBundle(MEDIASOUP_CLIENT_BUNDLE)).toBe(buildBrowserBundle(MEDIASOUP_CLIENT_BUNDLE));
  });
});
