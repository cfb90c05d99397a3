/**
 * Operations view of a recorded call with injected network loss: /metrics shows the loss, the gate
 * state and the upload counts moving; the live dashboard (headless Chromium) shows the call, its
 * open gate and per-track loss, with no personal identifiers; a screenshot is kept as an artifact.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { useStack } from '../support/stack.ts';
import { useSoftphoneHost } from '../support/softphone.ts';
import { startLossyRelay } from '../support/lossyRelay.ts';
import { fixturePath } from '../support/fixtures.ts';
import { launchChromium } from '../support/browser.ts';
import { sendRtp } from '../../src/media/ffmpeg.ts';

const stack = useStack({ segmentSeconds: 2 }, { agents: ['agent-m1'] });
const host = useSoftphoneHost(stack);

function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line.startsWith('#')) continue;
    const [key, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)];
    if (key !== name && !key.startsWith(`${name}{`)) continue;
    if (labels && !key.includes(labels)) continue;
    sum += Number(value);
  }
  return sum;
}

const scrape = async () => (await fetch(`${host.http.url}/metrics`)).text();

describe('metrics and dashboard during a lossy recorded call', () => {
  it('shows loss, gate state and uploads, live, without identifiers', async () => {
    const callId = 'call-ops';
    await stack.policy.startCall(callId, [
      { participantId: 'm-agent', role: 'agent', subjectId: 'agent-m1', teamLeadId: 'lead-m1' },
      { participantId: 'm-cust', role: 'customer', subjectId: 'cust-m1' },
    ]);
    const room = await host.http.rooms.get(callId);
    const agentLeg = await room.addPlainLeg('m-agent', 'opus', 0x2001);
    const custLeg = await room.addPlainLeg('m-cust', 'pcmu', 0x2002);
    const relay = await startLossyRelay({ ip: agentLeg.ip, port: agentLeg.rtpPort }, 0.1, 7);
    const senders = [
      sendRtp({ file: fixturePath('agent-tone.wav'), codec: 'opus', ip: '127.0.0.1', rtpPort: relay.port, rtcpPort: agentLeg.rtcpPort, ssrc: 0x2001, seconds: 25 }),
      sendRtp({ file: fixturePath('customer-tone.wav'), codec: 'pcmu', ip: custLeg.ip, rtpPort: custLeg.rtpPort, rtcpPort: custLeg.rtcpPort, ssrc: 0x2002, seconds: 25 }),
    ];
    const browser = await launchChromium(fixturePath('agent-tone-44k.wav'));
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const before = await scrape();
      expect(metric(before, 'optin_gates', 'state="closed",reason="no-consent"')).toBe(1);
      expect(metric(before, 'optin_packets_dropped_total', 'reason="gate-closed"')).toBeGreaterThan(0);

      await stack.policy.grantConsent(callId, 'm-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'training-notice-v1' });
      // Wait until a few segments have been sealed and uploaded (slower on a loaded machine).
      let during = await scrape();
      for (const deadline = Date.now() + 20_000; Date.now() < deadline; during = await scrape()) {
        if (metric(during, 'optin_segments_total', 'result="uploaded"') >= 4 && metric(during, 'optin_packets_lost_total') > 10) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(metric(during, 'optin_gates', 'state="open"')).toBe(1);
      expect(metric(during, 'optin_packets_lost_total')).toBeGreaterThan(10);
      expect(metric(during, 'optin_segments_total', 'result="uploaded"')).toBeGreaterThanOrEqual(2);
      expect(metric(during, 'optin_upload_seconds_count')).toBeGreaterThanOrEqual(2);
      expect(metric(during, 'optin_packets_written_total')).toBeGreaterThan(metric(before, 'optin_packets_written_total'));
      expect(metric(during, 'optin_control_fresh')).toBe(1);
      expect(metric(during, 'optin_control_lag_seconds')).toBeLessThan(3);
      expect((await fetch(`${host.http.url}/healthz`)).status).toBe(200);
      const ready = await fetch(`${host.http.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: 'ready', checks: { controlFresh: true, storage: true } });
      // Bounded label cardinality: no call, participant or subject id in any label.
      expect(during).not.toMatch(/call-ops|m-agent|m-cust|agent-m1|cust-m1|lead-m1/);

      const page = await browser.context.newPage();
      await page.setViewportSize({ width: 1280, height: 560 });
      await page.goto(`${host.http.url}/dashboard`);
      await page.waitForFunction('window.__lastSnapshot && window.__lastSnapshot.calls.length === 1', undefined, { timeout: 10_000 });
      await page.waitForTimeout(2200); // two live updates, so bitrate and loss have moved
      const text = await page.locator('body').innerText();
      expect(text).toContain('open');
      expect(text).toContain('recording');
      const loss = Number(await page.locator('td.loss').first().innerText());
      expect(loss).toBeGreaterThan(3); // ~10% injected on the agent leg
      expect(await page.locator('#t-calls').innerText()).toBe('1');
      expect(text).not.toMatch(/call-ops|m-agent|m-cust|agent-m1|cust-m1|lead-m1/);
      mkdirSync('artifacts', { recursive: true });
      await page.screenshot({ path: 'artifacts/dashboard.png', fullPage: true });

      // The control plane goes away: not ready, the gate closes, and the dashboard says so.
      await stack.control.close();
      await new Promise((r) => setTimeout(r, 500));
      expect((await fetch(`${host.http.url}/readyz`)).status).toBe(503);
      await page.waitForFunction('document.getElementById("t-control").textContent === "STALE"', undefined, { timeout: 5000 });
      const stale = await scrape();
      expect(metric(stale, 'optin_control_fresh')).toBe(0);
      expect(metric(stale, 'optin_gates', 'state="closed",reason="control-stale"')).toBe(1);
    } finally {
      for (const s of senders) s.stop();
      relay.close();
      await browser.close();
    }
  }, 90_000);
});
