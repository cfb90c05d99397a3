/**
 * The web app with the keyboard alone (issue 14: "everything usable with the keyboard alone"):
 * no click, no mouse, only Tab, Shift+Tab, Enter, Space, arrows and the player's keys, in
 * headless Debian Chromium through the local OpenID provider.
 *
 * - the agent signs in, and asks their team lead to delete a recording;
 * - the team lead opens a recording, states the purpose, plays it and mutes the agent with the
 *   player's keys, then goes to the deletion queue and deletes on request;
 * - focus is always visible where it lands (the element focused is the one the test names).
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPage, launchBrowser, personContext } from '../../support/webBrowser.ts';
import { startWebStack, type WebStack } from '../../support/webapp.ts';

const R1 = 'r_kbd0000000000001';
const RDEL = 'r_kbd0000000000002';

let s: WebStack;
let browser: Browser;

/** What has focus: its accessible text (aria-label, else text, else value), tag and type. */
async function focused(page: Page): Promise<{ name: string; tag: string; type: string }> {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    if (el === null) return { name: '', tag: '', type: '' };
    const name = el.getAttribute('aria-label') ?? (el.textContent ?? '').trim() ?? '';
    return { name: name || ((el as HTMLInputElement).value ?? ''), tag: el.tagName.toLowerCase(), type: (el as HTMLInputElement).type ?? '' };
  });
}

/** Presses Tab until the focused element's name matches (at most `max` presses): a keyboard user's way there. */
async function tabTo(page: Page, name: RegExp, max = 80): Promise<number> {
  for (let i = 1; i <= max; i++) {
    await page.keyboard.press('Tab');
    if (name.test((await focused(page)).name)) return i;
  }
  throw new Error(`no focusable element named ${name} within ${max} Tab presses (last: ${JSON.stringify(await focused(page))})`);
}

async function signInWithKeys(page: Page, login: string): Promise<void> {
  await page.goto(`${s.url}/`);
  await tabTo(page, /^Sign in with your organisation$/);
  await page.keyboard.press('Enter');
  await page.locator('#login').waitFor();
  // The provider's login page focuses the user name field itself (autofocus).
  expect(await page.evaluate(() => document.activeElement?.id)).toBe('login');
  await page.keyboard.type(login);
  await page.keyboard.press('Tab');
  await page.keyboard.type('demo');
  await page.keyboard.press('Enter');
  await page.waitForURL((u) => u.href.startsWith(s.url) && !u.pathname.startsWith('/auth/'), { timeout: 20_000 });
}

beforeAll(async () => {
  s = await startWebStack();
  const now = Date.now();
  await s.addRecording({ recordingId: R1, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-k1', startedAtMs: now - 4 * 3_600_000, seconds: 8, customerGapMs: 1000 });
  await s.addRecording({ recordingId: RDEL, agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-k2', startedAtMs: now - 2 * 3_600_000, seconds: 4 });
  browser = await launchBrowser();
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await s?.close();
});

describe.sequential('the keyboard alone', () => {
  it('the agent signs in and asks their team lead to delete a recording', async () => {
    const { context, page } = await personContext(browser);
    await signInWithKeys(page, 'agent');
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe('My recordings');
    // The first Tab reaches the skip link.
    await page.keyboard.press('Tab');
    expect((await focused(page)).name).toBe('Skip to content');
    await tabTo(page, /^Ask my team lead to delete this: the recording of /);
    // Which row: the newest first, so the first request button is RDEL's.
    const row = await page.evaluate(() => document.activeElement?.closest('tr')?.getAttribute('data-recording'));
    expect(row).toBe(RDEL);
    await page.keyboard.press('Enter');
    await page.waitForURL(/done=requested/);
    expect(await page.locator(`tr[data-recording="${RDEL}"]`).textContent()).toContain('waiting for your team lead');
    await context.close();
  });

  it('the team lead opens a recording, states the purpose, plays and mutes with keys, and deletes on request', async () => {
    const { context, page } = await personContext(browser);
    await signInWithKeys(page, 'lead');
    await expect.poll(() => page.getByRole('heading', { level: 1 }).textContent()).toBe("My team's recordings");
    // R1 is the older one: the second "Open" link.
    await tabTo(page, /^Open: the recording of /);
    await tabTo(page, /^Open: the recording of /);
    expect(await page.evaluate(() => document.activeElement?.closest('tr')?.getAttribute('data-recording'))).toBe(R1);
    await page.keyboard.press('Enter');
    await page.waitForURL(`${s.url}/recordings/${R1}`);
    // The purpose: Tab into the radio group, Space picks the first, Tab to Continue, Enter.
    const first = await tabTo(page, /Coaching the agent|^coaching$/);
    expect(first).toBeGreaterThan(0);
    expect((await focused(page)).type).toBe('radio');
    await page.keyboard.press('Space');
    await tabTo(page, /^Continue to the player$/);
    await page.keyboard.press('Enter');
    await page.waitForURL(/purpose=coaching/);
    const player = page.locator('[data-player]');
    await expect.poll(() => player.getAttribute('data-ready'), { timeout: 20_000 }).toBe('true');
    // Into the player's controls; Space on the Play button, then the player's own keys.
    await tabTo(page, /^Play$/);
    await page.keyboard.press('Space');
    await expect.poll(() => page.locator('audio').evaluate((a: HTMLAudioElement) => a.currentTime), { timeout: 10_000 }).toBeGreaterThan(0.3);
    await page.keyboard.press('a');
    expect(await page.getByRole('button', { name: 'Mute agent (left)' }).getAttribute('aria-pressed')).toBe('true');
    await page.keyboard.press('c');
    expect(await page.getByRole('button', { name: 'Mute customer (right)' }).getAttribute('aria-pressed')).toBe('true');
    const before = await page.locator('audio').evaluate((a: HTMLAudioElement) => a.currentTime);
    await page.keyboard.press('ArrowRight');
    await expect.poll(() => page.locator('audio').evaluate((a: HTMLAudioElement) => a.currentTime)).toBeGreaterThan(before + 3);
    await page.keyboard.press('k');
    await expect.poll(() => page.locator('audio').evaluate((a: HTMLAudioElement) => a.paused)).toBe(true);
    await checkPage(page, '60-keyboard-player');

    // Shift+Tab back up to the main navigation, then to the deletion queue.
    for (let i = 0; i < 80 && (await focused(page)).name !== 'Deletion requests'; i++) await page.keyboard.press('Shift+Tab');
    expect((await focused(page)).name).toBe('Deletion requests');
    await page.keyboard.press('Enter');
    await page.waitForURL(`${s.url}/deletion-requests`);
    await tabTo(page, new RegExp(`^Delete: the recording ${RDEL}, asked for by agent-a1`));
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/deletions\/d_/);
    await expect.poll(() => page.locator('[data-deletion]').getAttribute('data-state'), { timeout: 30_000 }).toBe('done');
    await context.close();
  });
});
