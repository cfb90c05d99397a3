import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callBody, dtmfEvidence, startTestControlPlane } from '../../support/controlPlane.ts';
import { StreamClientV2 } from '../../support/controlStreamV2.ts';

/**
 * The demo path: the control plane on its embedded database (PGlite, no server), the same SQL as
 * on PostgreSQL. Facts survive a restart on the same data directory and the stream continues.
 */

let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'optin-embedded-'));
});

afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

describe('embedded database', () => {
  it('serves ingest and the stream, and keeps facts and the seq across a restart', { timeout: 120_000 }, async () => {
    const first = await startTestControlPlane({ overrides: { dataDir } });
    expect(first.cp.db.kind).toBe('embedded');
    const c = await StreamClientV2.connect(first.cp.streamUrl, { secret: first.secret, workerId: 'w-emb' });
    await c.waitSnapshot();
    expect((await first.api('POST', '/v1/calls', { token: first.tokens.ivr, body: callBody('e-1') })).status).toBe(201);
    const granted = await first.api('POST', '/v1/calls/e-1/consent', { token: first.tokens.ivr, body: { participantId: 'e-1-c', decision: 'granted', evidence: dtmfEvidence() } });
    expect(granted.status).toBe(200);
    await c.waitSeq(granted.body.seq as number);
    expect(c.deltas.map((d) => d.fact.type)).toEqual(['call.started', 'consent.granted']);
    c.send({ v: 2, type: 'cap.request', requestId: 'q1', recordingId: 'r-e', callId: 'e-1', agentIds: ['agent-1'], at: Date.now() });
    await c.waitFor(() => c.capDecisions.length === 1);
    expect(c.capDecisions[0]).toMatchObject({ admitted: false, reason: 'no-schedule' });
    c.close();
    await first.close();

    const second = await startTestControlPlane({ overrides: { dataDir }, createTokens: false });
    try {
      const again = await StreamClientV2.connect(second.cp.streamUrl, { secret: second.secret, workerId: 'w-emb' });
      await again.waitSnapshot();
      expect(again.snapshot!.seq).toBe(granted.body.seq);
      expect(again.snapshot!.calls).toEqual([expect.objectContaining({ callId: 'e-1', consents: [expect.objectContaining({ status: 'granted' })] })]);
      again.close();
    } finally {
      await second.close();
    }
  });
});
