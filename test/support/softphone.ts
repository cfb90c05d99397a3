import type { Page } from 'playwright-core';
import { startRecorderHttp, type RecorderHttp } from '../../src/app/recorderHttp.ts';
import { signCallToken } from '../../src/callcontrol/callToken.ts';
import type { Stack } from './stack.ts';
import { launchChromium } from './browser.ts';
import { useForFile } from './lifecycle.ts';

export interface SoftphoneHost {
  http: RecorderHttp;
  /** The softphone-join secret (callControl.joinSecret). */
  secret: string;
  /** Opens a headless Chromium whose microphone plays `wav`, on the softphone page of one participant. */
  openPhone(callId: string, participantId: string, wav: string): Promise<{ page: Page; close(): Promise<void> }>;
  /** A fresh single-use softphone-join token. */
  joinToken(callId: string, participantId: string): string;
  close(): Promise<void>;
}

/**
 * The recorder's HTTP side (softphone, signalling, call control, dashboard, API) beside a test
 * stack, on a free port. DTMF "1" from a page stands for the IVR: it grants consent (R3).
 */
export async function startSoftphoneHost(stack: Stack): Promise<SoftphoneHost> {
  const secret = stack.config.callControl.joinSecret!;
  const http = await startRecorderHttp(stack.app, {
    host: '127.0.0.1',
    port: 0,
    onDtmf: (callId, participantId, digit) => {
      // The IVR's webhook: the DTMF consent posted to the control plane's ingest API.
      if (digit === '1') void stack.policy.grantConsent(callId, participantId, { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' }).catch(() => undefined);
    },
  });
  const browsers: { close(): Promise<void> }[] = [];
  const joinToken = (callId: string, participantId: string) => signCallToken(secret, { aud: 'softphone-join', callId, participantId, lifetimeSeconds: 120 });
  return {
    http,
    secret,
    joinToken,
    async openPhone(callId, participantId, wav) {
      const browser = await launchChromium(wav);
      browsers.push(browser);
      const page = await browser.context.newPage();
      // The token in the fragment: never sent to the server in a URL (docs/call-control.md).
      await page.goto(`${http.url}/softphone/#token=${encodeURIComponent(joinToken(callId, participantId))}&name=${participantId}`);
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
