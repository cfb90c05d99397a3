/**
 * Each role signs in through the local OpenID provider (oidc-provider) in headless Debian
 * Chromium and does its job end to end on real recordings (issue 14, "Must show"):
 *
 * - the agent sees their recordings (date, duration, expiry in days, consent in words) and asks
 *   their team lead to delete one;
 * - the team lead is asked the purpose, plays the coaching render (stereo waveform, marks for the
 *   consent, a pause and a concealed stretch; mute a side) and deletes on request in one click,
 *   the receipt shown;
 * - the agent sees the deletion;
 * - the DPO reads the compliance report and finds the planted violation (consent after the first
 *   packet) with its evidence, verifies the audit trail, draws a spot check and reads a
 *   recording's access log;
 * - the extract operator turns a subject-access request into a job, watches its progress and
 *   downloads a single-speaker package: the customer's tone, the agent's >= 40 dB below.
 *
 * Every page is screenshotted (artifacts/webapp/) and checked with axe-core: no serious or
 * critical violation, no script error, no CSP refusal.
 *
 * Recordings: real Opus audio written through the store, calls and consent through the IVR API,
 * catalogue rows through the control plane's catalogue upsert (test/support/webapp.ts) until the
 * recorder speaks policy stream v2 (issue 13).
 */
import { readFile } from 'node:fs/promises';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToPcm } from '../../../src/media/ffmpeg.ts';
import { toneAdvantageDb } from '../../support/audio.ts';
import { checkPage, launchBrowser, personContext, signInBrowser, type AxeViolation } from '../../support/webBrowser.ts';
import { AGENT_HZ, CUSTOMER_HZ, startWebStack, type WebStack } from '../../support/webapp.ts';

const R1 = 'r_e2e0000000000001'; // the coaching recording: a pause and a concealed stretch on the customer side
const RDEL = 'r_e2e0000000000002'; // the agent asks, the team lead deletes
const RPLANT = 'r_e2e0000000000003'; // planted violation: consent 2 s after the first packet
const ROTHER = 'r_e2e0000000000004'; // another team

let s: WebStack;
let browser: Browser;
const findings: Array<{ page: string; axe: AxeViolation[]; problems: string[] }> = [];

async function check(page: Page, name: string): Promise<void> {
  const r = await checkPage(page, name);
  findings.push({ page: name, ...r });
}

function expectCleanPages(prefix: string): void {
  const bad = findings.filter((f) => f.page.startsWith(prefix) && (f.axe.length > 0 || f.problems.length > 0));
  expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
}

beforeAll(async () => {
  s = await startWebStack();
  const now = Date.now();
  await s.addRecording({ recordingId: R1, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c1', startedAtMs: now - 9 * 3_600_000, seconds: 8, customerGapMs: 1500, concealedMs: 240 });
  await s.addRecording({ recordingId: RDEL, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c2', startedAtMs: now - 5 * 3_600_000, seconds: 4 });
  await s.addRecording({ recordingId: RPLANT, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c3', startedAtMs: now - 3 * 3_600_000, seconds: 4, consentAtMs: now - 3 * 3_600_000 + 2000 });
  await s.addRecording({ recordingId: ROTHER, agent: 'agent-a2', lead: 'lead-l2', customer: 'cust-c4', startedAtMs: now - 2 * 3_600_000, seconds: 3 });
  browser = await launchBrowser();
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await s?.close();
});

describe.sequential('each role does its job in the browser', () => {
  it('the agent sees their recordings in words and asks their team lead to delete one', async () => {
    const { context, page } = await personContext(browser);
    await page.goto(`${s.url}/recordings`);
    expect(new URL(page.url()).pathname).toBe('/signin');
    await check(page, '01-signin');
    await page.getByRole('link', { name: 'Sign in with your organisation' }).click();
    await page.locator('#login').waitFor();
    await check(page, '02-provider-login');
    await page.locator('#login').fill('agent');
    await page.locator('#password').fill('demo');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${s.url}/recordings`);
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('My recordings');
    const rows = page.locator('tr[data-recording]');
    expect(await rows.count()).toBe(3);
    expect(await page.locator(`tr[data-recording="${ROTHER}"]`).count()).toBe(0);
    const first = page.locator(`tr[data-recording="${R1}"]`);
    await expect.poll(() => first.textContent()).toContain('pressed a key on the phone keypad');
    expect(await first.textContent()).toMatch(/in (29|30) days/);
    expect(await first.textContent()).not.toContain('cust-c1');
    await check(page, '03-agent-recordings');
    await page.locator(`tr[data-recording="${RDEL}"]`).getByRole('button', { name: /Ask my team lead to delete/ }).click();
    await page.waitForURL(/done=requested/);
    expect(await page.getByRole('status').first().textContent()).toContain('Your team lead has been asked');
    expect(await page.locator(`tr[data-recording="${RDEL}"]`).textContent()).toContain('waiting for your team lead');
    await check(page, '04-agent-requested');
    await page.goto(`${s.url}/recordings/${R1}`);
    await check(page, '05-agent-recording-purpose');
    await page.goto(`${s.url}/deletion-requests`);
    expect(await page.locator(`tr[data-recording="${RDEL}"] [data-state]`).getAttribute('data-state')).toBe('pending');
    await check(page, '06-agent-deletion-requests');
    await context.close();
    expectCleanPages('0');
  });

  it('the team lead states a purpose, plays the coaching render with its marks, and deletes on request with the receipt', async () => {
    const { context, page } = await personContext(browser);
    await signInBrowser(page, s.url, 'lead');
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe("My team's recordings");
    expect(await page.locator('tr[data-recording]').count()).toBe(3);
    await check(page, '10-lead-recordings');
    await page.locator(`tr[data-recording="${R1}"]`).getByRole('link').click();
    await page.waitForURL(`${s.url}/recordings/${R1}`);
    // The purpose is asked before any audio is fetched.
    expect(await page.locator('[data-player]').count()).toBe(0);
    await check(page, '11-lead-purpose');
    await page.getByLabel('Coaching the agent').check();
    await page.getByRole('button', { name: 'Continue to the player' }).click();
    await page.waitForURL(/purpose=coaching/);
    const player = page.locator('[data-player]');
    await expect.poll(() => player.getAttribute('data-ready'), { timeout: 20_000 }).toBe('true');
    expect(await player.getAttribute('data-channels')).toBe('2');
    const marks = page.locator('ol.marks li');
    expect(await marks.count()).toBe(3);
    expect(await page.locator('li.mark-consent').textContent()).toContain('consent given');
    expect(await page.locator('li.mark-gap').textContent()).toContain('customer side: recording paused for 1.5 s');
    expect(await page.locator('li.mark-concealed').textContent()).toContain('0.2 s concealed');
    await page.getByRole('button', { name: 'Play' }).click();
    await expect.poll(() => page.locator('audio').evaluate((a: HTMLAudioElement) => a.currentTime), { timeout: 10_000 }).toBeGreaterThan(0.3);
    await page.getByRole('button', { name: 'Mute agent (left)' }).click();
    expect(await page.getByRole('button', { name: 'Mute agent (left)' }).getAttribute('aria-pressed')).toBe('true');
    await check(page, '12-lead-player');
    await page.getByRole('button', { name: 'Pause' }).click();
    // The play was audited with its purpose.
    const plays = await s.t.cp.store!.trail!.list({ type: 'access.play' });
    expect(plays.some((e) => e.actor === 'lead-l1' && e.purpose === 'coaching' && e.refs.recordingId === R1)).toBe(true);

    await page.getByRole('link', { name: 'Deletion requests' }).click();
    await page.waitForURL(`${s.url}/deletion-requests`);
    expect(await page.locator(`tr[data-recording="${RDEL}"]`).textContent()).toContain('agent-a1');
    await check(page, '13-lead-deletion-queue');
    await page.locator(`tr[data-recording="${RDEL}"]`).getByRole('button', { name: /Delete/ }).click();
    await page.waitForURL(/\/deletions\/d_/);
    await check(page, '14-lead-deletion-accepted');
    // The page follows the deletion until the store's receipt is there.
    await expect.poll(() => page.locator('[data-deletion]').getAttribute('data-state'), { timeout: 30_000 }).toBe('done');
    expect(await page.locator('[data-receipt] table').textContent()).toContain('2');
    await check(page, '15-lead-deletion-receipt');
    await context.close();
    expectCleanPages('1');
  });

  it('the agent sees the deletion', async () => {
    const { context, page } = await personContext(browser);
    await signInBrowser(page, s.url, 'agent');
    expect(await page.locator(`tr[data-recording="${RDEL}"]`).count()).toBe(0);
    expect(await page.locator('tr[data-recording]').count()).toBe(2);
    await page.goto(`${s.url}/deletion-requests`);
    expect(await page.locator(`tr[data-recording="${RDEL}"] [data-state]`).getAttribute('data-state')).toBe('deleted');
    expect(await page.locator(`tr[data-recording="${RDEL}"]`).textContent()).toContain('Deleted');
    await check(page, '20-agent-sees-deletion');
    await page.goto(`${s.url}/recordings/${RDEL}`);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('Not found');
    await check(page, '21-agent-deleted-recording-404');
    await context.close();
    expectCleanPages('2');
  });

  it('the DPO reads the report per rule and finds the planted violation, verifies the trail, spot-checks and reads an access log', async () => {
    const { context, page } = await personContext(browser);
    await signInBrowser(page, s.url, 'dpo');
    await page.waitForURL(`${s.url}/compliance`);
    const r3 = page.locator('tr[data-rule="R3"]');
    expect(await r3.getAttribute('data-status')).toBe('violated');
    expect(await page.locator('tr[data-rule="R10"]').getAttribute('data-status')).toBe('holds');
    await check(page, '30-dpo-compliance');
    await r3.getByRole('link', { name: 'R3' }).click();
    await page.waitForURL(`${s.url}/compliance/R3`);
    const violation = page.locator('article.violation', { hasText: RPLANT });
    expect(await violation.count()).toBe(1);
    expect(await violation.textContent()).toContain('before the consent');
    expect(await violation.locator('dl.evidence').textContent()).toContain('firstPacketAt');
    expect(await page.locator('article.violation').count()).toBe(1);
    await check(page, '31-dpo-rule-R3');
    await page.getByRole('link', { name: 'Audit trail' }).click();
    await page.waitForURL(`${s.url}/audit`);
    expect(await page.locator('[data-audit-ok]').getAttribute('data-audit-ok')).toBe('true');
    await check(page, '32-dpo-audit');
    await page.getByRole('link', { name: 'Spot check' }).click();
    await page.waitForURL(/\/spot-check/);
    expect(await page.locator('section.spot').count()).toBeGreaterThan(0);
    expect(await page.content()).not.toContain('<audio');
    await check(page, '33-dpo-spot-check');
    await page.goto(`${s.url}/recordings/${R1}/access-log`);
    expect(await page.locator('tr[data-type="access.play"]', { hasText: 'lead-l1' }).count()).toBeGreaterThan(0);
    await check(page, '34-dpo-access-log');
    await page.goto(`${s.url}/recordings/${R1}`);
    expect(await page.locator('[data-player]').count()).toBe(0);
    expect(await page.content()).toContain('cust-c1');
    await check(page, '35-dpo-recording-metadata');
    await context.close();
    expectCleanPages('3');
  });

  it("the extract operator turns a request into a job and downloads one speaker's package", async () => {
    const { context, page } = await personContext(browser);
    await signInBrowser(page, s.url, 'extract');
    await page.waitForURL(`${s.url}/extracts`);
    await check(page, '40-extract-form');
    await page.getByRole('button', { name: 'Start the extract' }).click();
    expect(await page.getByRole('alert').textContent()).toContain('subject id');
    await check(page, '41-extract-form-error');
    await page.getByLabel('Subject id').fill('cust-c1');
    await page.getByLabel('Case reference of the request').fill('SAR-2026-77');
    await page.getByRole('button', { name: 'Start the extract' }).click();
    await page.waitForURL(/\/extracts\/x_/);
    await check(page, '42-extract-job');
    await expect.poll(() => page.locator('[data-extract]').getAttribute('data-state'), { timeout: 30_000 }).toBe('ready');
    expect(await page.locator('[data-progress]').getAttribute('value')).toBe('100');
    await check(page, '43-extract-ready');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: `${R1}.ogg` }).click()]);
    const audio = await readFile((await download.path())!);
    const { pcm } = await decodeToPcm(audio);
    expect(pcm.length / 48).toBeGreaterThan(7000);
    const advantage = toneAdvantageDb(pcm, CUSTOMER_HZ, AGENT_HZ);
    console.log(`extract downloaded in the browser: customer tone ${advantage.toFixed(1)} dB above the agent's`);
    expect(advantage).toBeGreaterThanOrEqual(40);
    const [mdl] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'manifest.json' }).click()]);
    const manifest = (await readFile((await mdl.path())!)).toString();
    for (const other of ['agent-a1', 'lead-l1', `call-${R1}`]) expect(manifest).not.toContain(other);
    await page.goto(`${s.url}/extracts`);
    expect(await page.locator('tr[data-job]').count()).toBe(1);
    await check(page, '44-extract-list');
    await context.close();
    expectCleanPages('4');
  });

  it('refusals are pages too: a role typing a URL it may not open, a recording not theirs', async () => {
    const { context, page } = await personContext(browser);
    await signInBrowser(page, s.url, 'agent');
    const forbidden = await page.goto(`${s.url}/compliance`);
    expect(forbidden!.status()).toBe(403);
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('Not for your role');
    await check(page, '50-error-403');
    const missing = await page.goto(`${s.url}/recordings/${ROTHER}`);
    expect(missing!.status()).toBe(404);
    await check(page, '51-error-404');
    await context.close();
    expectCleanPages('5');
  });
});
