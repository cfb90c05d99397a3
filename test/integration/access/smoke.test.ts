import { afterAll, beforeAll, expect, it } from 'vitest';
import { startWebStack, type WebStack } from '../../support/webapp.ts';

let s: WebStack;
beforeAll(async () => {
  s = await startWebStack();
  await s.addRecording({ recordingId: 'r_smoke1', agent: 'agent-a1', lead: 'lead-l1', customer: 'cust-c1', customerGapMs: 1500, concealedMs: 120 });
}, 120_000);
afterAll(async () => s?.close());

it('signs in and lists', async () => {
  const a = await s.signIn('agent');
  const res = await a.fetch('/api/recordings');
  const body = await res.json();
  console.log(res.status, JSON.stringify(body).slice(0, 800));
  const page = await a.fetch('/recordings');
  console.log(page.status, (await page.text()).slice(0, 300));
  const det = await a.fetch('/api/recordings/r_smoke1');
  console.log(det.status, JSON.stringify(await det.json()).slice(0, 1500));
  const play = await a.fetch('/api/recordings/r_smoke1/play?purpose=coaching');
  console.log(play.status, play.headers.get('content-type'), (await play.arrayBuffer()).byteLength);
  expect(res.status).toBe(200);
});
