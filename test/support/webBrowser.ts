import { mkdirSync, readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { CHROMIUM } from './browser.ts';

/**
 * Headless Debian Chromium for the web app's browser tests: one browser, a context (own
 * cookies) per person, sign-in through the local OpenID provider's login page, axe-core on
 * every page, and screenshots kept as artifacts (artifacts/webapp/*.png, gitignored).
 */

export const ARTIFACTS = fileURLToPath(new URL('../../artifacts/webapp/', import.meta.url));
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: run \`npm run setup\` (apt-get install chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

export async function personContext(browser: Browser): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) problems.push(`csp: ${m.text()}`);
  });
  (page as Page & { problems?: string[] }).problems = problems;
  return { context, page };
}

/** Script errors and CSP refusals the page reported (a strict CSP must not break the app). */
export function pageProblems(page: Page): string[] {
  return (page as Page & { problems?: string[] }).problems ?? [];
}

/** Signs in through the app's sign-in button and the provider's login form (mouse-free: fill + Enter). */
export async function signInBrowser(page: Page, appUrl: string, login: string, password = 'demo'): Promise<void> {
  await page.goto(`${appUrl}/`);
  await page.getByRole('link', { name: 'Sign in with your organisation' }).click();
  await page.locator('#login').fill(login);
  await page.locator('#password').fill(password);
  await page.locator('#password').press('Enter');
  await page.waitForURL((u) => u.href.startsWith(appUrl) && !u.pathname.startsWith('/auth/'), { timeout: 20_000 });
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: string[] }>;
}

/**
 * axe-core (WCAG 2.1 A/AA and best practices) on the page as it is; returns the serious and
 * critical violations. Evaluated through the DevTools protocol, which the page's CSP does not
 * govern, so the app's policy needs no exception for the checker.
 */
export async function axeSerious(page: Page): Promise<AxeViolation[]> {
  await page.evaluate(AXE_SOURCE);
  const result = (await page.evaluate(`axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })`)) as { violations: AxeViolation[] };
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => ({ target: n.target })) }));
}

/**
 * A full-page screenshot under artifacts/webapp/. A page that reloads itself (the extract job's
 * page when the job finishes) can do so mid-capture, and the capture then waits on a document that
 * is gone (CI: 30 s timeout): it is taken again of the new document once that has loaded.
 */
export async function shot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  // The document's time origin: a new document (a reload) has another.
  const documentOf = (): Promise<number | undefined> => page.evaluate(() => performance.timeOrigin).catch(() => undefined);
  for (let attempt = 0; ; attempt++) {
    const before = await documentOf();
    try {
      await page.screenshot({ path: file, fullPage: true, timeout: 15_000 });
      return file;
    } catch (err) {
      // Only a capture lost to a new document is taken again; anything else is the test's failure.
      await page.waitForLoadState('load');
      const after = await documentOf();
      if (attempt >= 2 || before === undefined || after === before) throw err;
    }
  }
}

/**
 * Every page: screenshot, axe (no serious or critical violation), no script error or CSP refusal
 * by the app. (axe-core itself applies an inline style while it runs, which the app's CSP
 * rightly refuses: refusals during the check are the checker's and are dropped.) A page that
 * reloads itself meanwhile (a job finishing) is checked again once the new document has loaded.
 */
export async function checkPage(page: Page, name: string): Promise<{ axe: AxeViolation[]; problems: string[] }> {
  await page.waitForLoadState('load');
  await shot(page, name);
  const problems = pageProblems(page);
  const mine = [...problems];
  for (let attempt = 0; ; attempt++) {
    const before = problems.length;
    try {
      const axe = await axeSerious(page);
      problems.splice(before);
      return { axe, problems: mine };
    } catch (err) {
      problems.splice(before);
      if (attempt >= 3 || !/Execution context was destroyed|navigat/i.test((err as Error).message)) throw err;
      // The old document may still answer 'load' for a moment: give the navigation time to commit.
      await new Promise((r) => setTimeout(r, 250));
      await page.waitForLoadState('load');
    }
  }
}
