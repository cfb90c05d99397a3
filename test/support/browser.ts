import { chromium, type BrowserContext } from 'playwright-core';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildSync } from 'esbuild';

export const CHROMIUM = process.env.OPTIN_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Debian's Chromium, headless, with a fake microphone playing `wavFile`. No browser download works
 * here, so playwright-core drives the system binary; the background-networking flags stop it from
 * calling home (this machine's closed network refuses those connections).
 */
export async function launchChromium(wavFile: string): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: run \`npm run setup\` (apt-get install chromium)`);
  if (!existsSync(wavFile)) throw new Error(`fixture ${wavFile} missing: run \`npm run fixtures\``);
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'optin-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wavFile}`,
      '--autoplay-policy=no-user-gesture-required',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

let bundle: string | undefined;
/** mediasoup-client bundled for the page as `window.mediasoupClient`. */
export function mediasoupClientBundle(): string {
  bundle ??= buildSync({
    stdin: { contents: "import * as m from 'mediasoup-client'; window.mediasoupClient = m;", resolveDir: process.cwd() },
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    logLevel: 'silent',
  }).outputFiles[0]!.text;
  return bundle;
}
