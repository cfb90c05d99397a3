/**
 * Privacy of logs (issue 7, DESIGN §2): a full recorded call with consent, a withdrawal with erase
 * and a stale control link, logged at trace level to a file, then grepped: no subject identifier,
 * team lead id, key-encryption key, secret or S3 credential appears anywhere in it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createLogger } from '../../../src/log/logger.ts';
import { sendRtp } from '../../../src/media/ffmpeg.ts';
import { playFixtureCall } from '../../../workers/fixtureCall.ts';
import { startStack, openSchedule, type Stack } from '../../support/stack.ts';
import { fixturePath } from '../../support/fixtures.ts';
import { listNames, s3Config } from '../../support/s3.ts';
import { mediaPrefix } from '../../../src/storage/layout.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'optin-logs-'));
const logFile = path.join(dir, 'run.log');
let stack: Stack | undefined;

afterAll(async () => {
  await stack?.close();
  if (!process.env.OPTIN_KEEP_LOGS) rmSync(dir, { recursive: true, force: true });
  else console.log(`log kept at ${logFile}`);
});

describe('logs carry no personal data, keys or secrets', () => {
  it('a whole recorded call at trace level', async () => {
    const dest = pino.destination({ dest: logFile, sync: true });
    stack = await startStack({}, { logger: createLogger('trace', dest) });
    const c = stack.config;
    const secrets = [...Object.values(c.keyring!.keys), c.control.secret!, c.callControl.joinSecret!, c.callControl.sipLegSecret!, c.audit.hmacKey!, s3Config().secretKey];
    await openSchedule(stack.policy, 'agent-secretive-7');
    const result = await playFixtureCall(stack.app, stack.policy, {
      callId: 'call-logs',
      seconds: 5,
      consentAfterMs: 1000,
      legs: [
        { participantId: 'l-agent', subjectId: 'agent-secretive-7', role: 'agent', teamLeadId: 'lead-secretive-3', file: fixturePath('agent-speech.wav'), codec: 'opus' },
        { participantId: 'l-cust', subjectId: 'cust-secretive-9', role: 'customer', file: fixturePath('customer-speech.wav'), codec: 'pcmu' },
      ],
    });
    expect(result.recordingId).toMatch(/^r_/);
    // A second call, really recorded (media, consent, segments stored), then withdrawn with erase,
    // and a control link loss while it runs.
    await stack.policy.startCall('call-logs2', [
      { participantId: 'l2-agent', role: 'agent', subjectId: 'agent-secretive-7', teamLeadId: 'lead-secretive-3' },
      { participantId: 'l2-cust', role: 'customer', subjectId: 'cust-secretive-10' },
    ]);
    const room = await stack.app.openCall('call-logs2');
    const senders = [];
    for (const [participantId, codec, file, ssrc] of [['l2-agent', 'opus', 'agent-speech.wav', 0x4401], ['l2-cust', 'pcmu', 'customer-speech.wav', 0x4402]] as const) {
      const leg = await room.addPlainLeg(participantId, codec, ssrc);
      senders.push(sendRtp({ file: fixturePath(file), codec, ip: leg.ip, rtpPort: leg.rtpPort, rtcpPort: leg.rtcpPort, ssrc, seconds: 8 }));
    }
    try {
      const call = () => stack!.app.recorder.calls.get('call-logs2');
      await expect.poll(() => [...(call()?.tracks.values() ?? [])].every((t) => t.counters.received > 0), { timeout: 10_000 }).toBe(true);
      await stack.policy.grantConsent('call-logs2', 'l2-cust', { method: 'dtmf', at: Date.now(), infoVersion: 'v1' });
      // Recorded: a segment of the customer's track is stored before the withdrawal.
      await expect.poll(() => [...(call()?.tracks.values() ?? [])].find((t) => t.participantId === 'l2-cust')?.counters.written ?? 0, { timeout: 10_000 }).toBeGreaterThan(0);
      const recordingId = call()!.recordingId!;
      await expect.poll(async () => (await stack!.app.store.getManifest(recordingId).catch(() => null))?.segments.some((g) => g.participantId === 'l2-cust') ?? false, { timeout: 15_000 }).toBe(true);
      await stack.policy.withdrawConsent('call-logs2', 'l2-cust', { erase: true, evidence: { method: 'dtmf', at: Date.now() + 1, infoVersion: 'v1' } });
      stack.relay.dropConnections();
      // The erase really happened: no object of the customer's track is left in the media bucket
      // (and the manifest, if the recording still exists, lists none of it).
      // The deletion removes keys, then media, then rewrites the manifest: wait for all of it.
      const customerLeft = async (): Promise<{ objects: string[]; listed: boolean }> => ({
        objects: await listNames(stack!.app.s3, stack!.app.store.buckets.media, mediaPrefix(recordingId, 'l2-cust')),
        listed: (await stack!.app.store.getManifest(recordingId).catch(() => null))?.segments.some((g) => g.participantId === 'l2-cust') ?? false,
      });
      await expect.poll(customerLeft, { timeout: 20_000 }).toEqual({ objects: [], listed: false });
    } finally {
      for (const sender of senders) sender.stop();
      await stack.policy.endCall('call-logs2');
      room.close();
    }
    await stack.app.control.waitFresh(10_000);
    await stack.app.store.drained(20_000);
    await stack.close();
    stack = undefined;
    dest.flushSync();

    const log = readFileSync(logFile, 'utf8');
    expect(log.split("\n").length).toBeGreaterThan(10); // it did log
    for (const forbidden of ['agent-secretive-7', 'cust-secretive-9', 'cust-secretive-10', 'lead-secretive-3']) {
      expect(log, `log mentions ${forbidden}`).not.toContain(forbidden);
    }
    for (const secret of secrets) expect(log.includes(secret), 'a key or secret is in the log').toBe(false);
    for (const line of log.split('\n').filter(Boolean)) {
      const rec = JSON.parse(line) as Record<string, unknown>;
      for (const field of ['key', 'dataKey', 'kek', 'secret', 'token', 'payload', 'audio']) {
        if (field in rec) expect(rec[field]).toBe('[redacted]');
      }
    }
  }, 120_000);
});
