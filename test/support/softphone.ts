import { randomBytes } from 'node:crypto';
import type { Page } from 'playwright-core';
import { startHttpServer, type HttpServerHandle } from '../../src/http/HttpServer.ts';
import { healthRoutes } from '../../src/http/healthRoutes.ts';
import { softphoneRoutes } from '../../src/softphone/softphoneRoutes.ts';
import { SignallingServer } from '../../src/callcontrol/SignallingServer.ts';
import { signJoinToken } from '../../src/callcontrol/joinToken.ts';
import type { Stack } from './stack.ts';
import { launchChromium } from './browser.ts';

export interface SoftphoneHost {
  http: HttpServerHandle;
  signalling: SignallingServer;
  secret: string;
  /** Opens a headless Chromium whose microphone plays `wav`, on the softphone page of one participant. */
  openPhone(callId: string, participantId: string, wav: string): Promise<{ page: Page; close(): Promise<void> }>;
  close(): Promise<void>;
}

/** Serves the softphone and its signalling beside a test stack; DTMF "1" from a page grants consent. */
export async function startSoftphoneHost(stack: Stack): Promise<SoftphoneHost> {
  const secret = randomBytes(32).toString('base64url');
  const signalling = new SignallingServer({
    secret,
    recorder: stack.app.recorder,
    openRoom: (callId) => stack.app.openCall(callId),
    onDtmf: (callId, participantId, digit) => {
      if (digit === '1') stack.policy.grantConsent(callId, participantId, { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' });
    },
    logger: stack.app.logger,
  });
  const http = await startHttpServer({ host: '127.0.0.1', port: 0, groups: [healthRoutes(stack.app), softphoneRoutes()], logger: stack.app.logger });
  signalling.attach(http.server);
  const browsers: { close(): Promise<void> }[] = [];
  return {
    http,
    signalling,
    secret,
    async openPhone(callId, participantId, wav) {
      const browser = await launchChromium(wav);
      browsers.push(browser);
      const page = await browser.context.newPage();
      const token = signJoinToken(secret, { callId, participantId, exp: Math.floor(Date.now() / 1000) + 600 });
      await page.goto(`${http.url}/softphone/?token=${encodeURIComponent(token)}&name=${participantId}`);
      return { page, close: () => browser.close() };
    },
    async close() {
      for (const b of browsers) await b.close();
      signalling.close();
      await http.close();
    },
  };
}
