/**
 * Real clients end to end (issue 9): two headless Chromium softphones (WebRTC: ICE, DTLS, SRTP)
 * in one call, and a SIP-style leg (ffmpeg sending G.711 PCMU RTP) bridged with a browser agent.
 * Consent arrives a few seconds in; afterwards each speaker's extract holds that speaker only,
 * recording began only after consent, and the pages showed "recorded" only while it was.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { joinOggOpus } from '../../src/media/OggOpusReader.ts';
import { decodeToPcm, sendRtp } from '../../src/media/ffmpeg.ts';
import { openingEarlyBoundMs, useStack } from '../support/stack.ts';
import { useSoftphoneHost } from '../support/softphone.ts';
import { fixturePath } from '../support/fixtures.ts';
import { toneAdvantageDb } from '../support/audio.ts';
import { readTrack } from '../support/storageFixtures.ts';

const AGENT_HZ = 523;
const CUSTOMER_HZ = 1230;
const stack = useStack({ segmentSeconds: 2 }, { agents: ['agent-s1'] });
const host = useSoftphoneHost(stack);

async function waitFor(page: Page, fn: string, timeoutMs = 20_000): Promise<void> {
  await page.waitForFunction(fn, undefined, { timeout: timeoutMs, polling: 100 });
}

async function track(recordingId: string, participantId: string): Promise<{ pcm: Float32Array; firstStart: number; stderr: string }> {
  const segs = await readTrack(stack.app.store, recordingId, participantId);
  expect(segs.length).toBeGreaterThan(0);
  const { pcm, stderr } = await decodeToPcm(joinOggOpus(segs.map((s) => s.ogg)));
  return { pcm, stderr, firstStart: Math.min(...segs.map((s) => s.meta.startWallClockMs)) };
}

type History = { recording: boolean; at: number }[];

describe('browser softphones over WebRTC', () => {
  it('records both speakers only after the customer presses 1, each track one voice', async () => {
    const t0 = Date.now();
    const callId = 'call-web';
    await stack.policy.startCall(callId, [
      { participantId: 'w-agent', role: 'agent', subjectId: 'agent-s1', teamLeadId: 'lead-s1' },
      { participantId: 'w-cust', role: 'customer', subjectId: 'cust-s1' },
    ]);
    const agent = await host.openPhone(callId, 'w-agent', fixturePath('agent-tone-44k.wav'));
    const customer = await host.openPhone(callId, 'w-cust', fixturePath('customer-tone-44k.wav'));
    await waitFor(agent.page, 'window.__joined === true && typeof window.__remoteLevel === "function"');
    await waitFor(customer.page, 'window.__joined === true && typeof window.__remoteLevel === "function"');
    // Media flows both ways before consent (R5: the call itself is unaffected).
    await waitFor(agent.page, 'window.__remoteLevel() > 0.01');
    await waitFor(customer.page, 'window.__remoteLevel() > 0.01');
    expect(await agent.page.locator('#recording-state').getAttribute('data-recording')).toBe('false');
    await sleep(2000);

    const consentAt = Date.now();
    await customer.page.click('#dtmf1'); // the explicit act (R3), through the page
    await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "true"', 5000);
    await sleep(5000);
    const recordingId = stack.app.recorder.calls.get(callId)!.recordingId!;
    await stack.policy.endCall(callId);
    await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "false"', 5000);
    const histories = [await agent.page.evaluate('window.__recordingHistory'), await customer.page.evaluate('window.__recordingHistory')] as History[];
    await agent.close();
    await customer.close();
    await sleep(500);
    await stack.app.store.drained(30_000);

    // The pages showed "recorded" only after consent, and not any more once the call ended.
    for (const h of histories) {
      expect(h.some((e) => e.recording)).toBe(true);
      for (const e of h) if (e.recording) expect(e.at).toBeGreaterThanOrEqual(consentAt);
      expect(h.at(-1)!.recording).toBe(false);
    }
    const a = await track(recordingId, 'w-agent');
    const c = await track(recordingId, 'w-cust');
    expect(a.stderr.trim()).toBe('');
    expect(c.stderr.trim()).toBe('');
    expect(a.firstStart).toBeGreaterThanOrEqual(consentAt - openingEarlyBoundMs(stack));
    expect(c.firstStart).toBeGreaterThanOrEqual(consentAt - openingEarlyBoundMs(stack));
    expect(toneAdvantageDb(a.pcm, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    expect(toneAdvantageDb(c.pcm, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
    // ~5 s were recorded after consent.
    expect(a.pcm.length / 48000).toBeGreaterThan(4);
    console.log(`[e2e] browser-to-browser call took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 90_000);

  it('bridges a SIP-style G.711 leg (ffmpeg PCMU) with a browser agent, recorded and transcoded', async () => {
    const t0 = Date.now();
    const callId = 'call-sip';
    await stack.policy.startCall(callId, [
      { participantId: 's-agent', role: 'agent', subjectId: 'agent-s1', teamLeadId: 'lead-s1' },
      { participantId: 's-cust', role: 'customer', subjectId: 'cust-s2' },
    ]);
    const agent = await host.openPhone(callId, 's-agent', fixturePath('agent-tone-44k.wav'));
    await waitFor(agent.page, 'window.__joined === true');
    const room = stack.app.recorder.calls.get(callId)!.room!;
    const leg = await room.addPlainLeg('s-cust', 'pcmu', 0x5151);
    const sender = sendRtp({ file: fixturePath('customer-tone.wav'), codec: 'pcmu', ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc: 0x5151, seconds: 12 });
    try {
      // The browser agent hears the SIP customer (the SFU forwards PCMU to the page).
      await waitFor(agent.page, 'typeof window.__remoteLevel === "function" && window.__remoteLevel() > 0.01');
      await sleep(2000);
      const consentAt = Date.now();
      await stack.policy.grantConsent(callId, 's-cust', { method: 'dtmf', at: consentAt, infoVersion: 'training-notice-v1' });
      await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "true"', 5000);
      await sleep(5000);
      const recordingId = stack.app.recorder.calls.get(callId)!.recordingId!;
      await stack.policy.endCall(callId);
      await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "false"', 5000);
      const history = (await agent.page.evaluate('window.__recordingHistory')) as History;
      await agent.close();
      await sleep(500);
      await stack.app.store.drained(30_000);

      for (const e of history) if (e.recording) expect(e.at).toBeGreaterThanOrEqual(consentAt);
      const a = await track(recordingId, 's-agent');
      const c = await track(recordingId, 's-cust');
      expect(c.stderr.trim()).toBe('');
      expect(c.firstStart).toBeGreaterThanOrEqual(consentAt - openingEarlyBoundMs(stack));
      expect(a.firstStart).toBeGreaterThanOrEqual(consentAt - openingEarlyBoundMs(stack));
      expect(toneAdvantageDb(a.pcm, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
      expect(toneAdvantageDb(c.pcm, CUSTOMER_HZ, AGENT_HZ)).toBeGreaterThan(40);
      expect(c.pcm.length / 48000).toBeGreaterThan(4);
    } finally {
      sender.stop();
    }
    console.log(`[e2e] SIP-to-browser call took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 90_000);

  it('a page reload mid-call: the speaker is recorded again, in a new run of the same recording', async () => {
    const callId = 'call-reload';
    await stack.policy.startCall(callId, [
      { participantId: 'r-agent', role: 'agent', subjectId: 'agent-s1', teamLeadId: 'lead-s1' },
      { participantId: 'r-cust', role: 'customer', subjectId: 'cust-s3' },
    ]);
    const agent = await host.openPhone(callId, 'r-agent', fixturePath('agent-tone-44k.wav'));
    await waitFor(agent.page, 'window.__joined === true');
    const room = stack.app.recorder.calls.get(callId)!.room!;
    const leg = await room.addPlainLeg('r-cust', 'pcmu', 0x5252);
    const sender = sendRtp({ file: fixturePath('customer-tone.wav'), codec: 'pcmu', ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc: 0x5252, seconds: 25 });
    try {
      await stack.policy.grantConsent(callId, 'r-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' });
      await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "true"', 5000);
      const recordingId = stack.app.recorder.calls.get(callId)!.recordingId!;
      await sleep(3000);
      // The reload: the page goes away and comes back with a fresh single-use link (the page drops
      // its token from the address bar once used, so the same URL cannot join twice).
      await agent.page.goto('about:blank');
      const reloadAt = Date.now();
      await agent.page.goto(`${host.http.url}/softphone/#token=${encodeURIComponent(host.joinToken(callId, 'r-agent'))}&name=r-agent`);
      await waitFor(agent.page, 'window.__joined === true');
      await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "true"', 5000);
      await sleep(4000);
      expect(stack.app.recorder.calls.get(callId)!.recordingId).toBe(recordingId);
      await stack.policy.endCall(callId);
      await waitFor(agent.page, 'document.getElementById("recording-state").dataset.recording === "false"', 5000);
      await agent.close();
      await sleep(500);
      await stack.app.store.drained(30_000);

      const segs = await readTrack(stack.app.store, recordingId, 'r-agent');
      const runs = [...new Set(segs.map((s) => s.meta.run))];
      expect(runs.length, `runs ${runs.join(',')}`).toBe(2);
      expect(new Set(segs.map((s) => s.meta.segment)).size).toBe(segs.length);
      const second = segs.filter((s) => s.meta.run === runs[1]);
      expect(Math.min(...second.map((s) => s.meta.startWallClockMs))).toBeGreaterThanOrEqual(reloadAt - openingEarlyBoundMs(stack));
      // The new run is the agent's voice again, seconds of it.
      const { pcm, stderr } = await decodeToPcm(joinOggOpus(second.map((s) => s.ogg)));
      expect(stderr.trim()).toBe('');
      expect(pcm.length / 48000).toBeGreaterThan(3);
      expect(toneAdvantageDb(pcm, AGENT_HZ, CUSTOMER_HZ)).toBeGreaterThan(40);
    } finally {
      sender.stop();
    }
  }, 90_000);
});
