import type { Page } from 'playwright-core';
import { startRecorderHttp, type RecorderHttp } from '../../src/app/recorderHttp.ts';
import { signJoinToken } from '../../src/callcontrol/joinToken.ts';
import type { Stack } from './stack.ts';
import { launchChromium } from './browser.ts';
import { useForFile } from './lifecycle.ts';

export interface SoftphoneHost {
  http: RecorderHttp;
  secret: string;
  /** Opens a headless Chromium whose microphone plays `wav`, on the softphone page of one participant. */
  openPhone(callId: string, participantId: string, wav: string): Promise<{ page: Page; close(): Promise<void> }>;
  joinToken(callId: string, participantId: string): string;
  close(): Promise<void>;
}

/**
 * The recorder's HTTP side (softphone, signalling, call control, dashboard, API) beside a test
 * stack, on a free port. DTMF "1" from a page stands for the IVR: it grants consent (R3).
 */
export async function startSoftphoneHost(stack: Stack): Promise<SoftphoneHost> {
  const secret = stack.config.http.callControlSecret!;
  const http = await startRecorderHttp(stack.app, {
    host: '127.0.0.1',
    port: 0,
    onDtmf: (callId, participantId, digit) => {
      // The IVR's webhook: the DTMF consent posted to the control plane's ingest API.
      if (digit === '1') void stack.policy.grantConsent(callId, participantId, { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' }).catch(() => undefined);
    },
  });
  const browsers: { close(): Promise<void> }[] = [];
  const joinToken = (callId: string, participantId: string) => signJoinToken(secret, { callId, participantId, exp: Math.floor(Date.now() / 1000) + 600 });
  return {
    http,
    secret,
    joinToken,
    async openPhone(callId, participantId, wav) {
      const browser = await launchChromium(wav);
      browsers.push(browser);
      const page = await browser.context.newPage();
      await page.goto(`${http.url}/softphone/?token=${encodeURIComponent(joinToken(callId, participantId))}&name=${participantId}`);
      return { page, close: () => browser.close() };
    },
    async close() {
      for (const b of browsers) await b.close();
      await http.close();
    },
  };
}

/** A softphone host beside `stack` for a whole test file (see useForFile). */
export function useSoftphoneHost(stack: Stack): SoftphoneHost {
  return useForFile('the softphone host', () => startSoftphoneHost(stack), (host) => host.close());
}
