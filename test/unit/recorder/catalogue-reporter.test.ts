import { describe, expect, it } from 'vitest';
import type { CatalogueReport } from '../../../src/control/ControlClient.ts';
import { CatalogueReporter } from '../../../src/recorder/CatalogueReporter.ts';
import type { ManifestSummary } from '../../../src/storage/manifestSummary.ts';

const summary = (over: Partial<ManifestSummary> = {}): ManifestSummary => ({
  recordingId: 'rec-crashed',
  callId: 'call-1',
  nodeId: 'node-b',
  state: 'interrupted',
  participants: [{ participantId: 'pa', role: 'agent', subjectId: 'agent-1', teamLeadId: 'lead-1' }],
  startedAt: 1_000,
  endedAt: 9_000,
  tracks: 1,
  segments: 4,
  bytes: 4096,
  expiresAt: 99_000,
  ...over,
});

describe('CatalogueReporter: manifests closed by crash repair', () => {
  it('reports what the repaired manifest says, as the closing report the crash prevented', () => {
    const sent: CatalogueReport[] = [];
    const reporter = new CatalogueReporter({ reportRecording: (r) => sent.push(r) }, { retentionSeconds: 60, onError: () => undefined });
    reporter.reportRepaired(summary());
    reporter.reportRepaired(summary({ recordingId: 'rec-done', state: 'ended' }));
    reporter.reportRepaired(summary({ recordingId: 'rec-other-node', state: 'recording' }));
    expect(sent.map((r) => `${r.recordingId}:${r.event}`)).toEqual(['rec-crashed:interrupted', 'rec-done:ended', 'rec-other-node:segment']);
    expect(sent[0]).toEqual({
      recordingId: 'rec-crashed', callId: 'call-1', event: 'interrupted', participants: summary().participants,
      startedAt: 1_000, endedAt: 9_000, tracks: 1, segments: 4, bytes: 4096, expiresAt: 99_000,
    });
  });

  it('leaves a recording this process is writing to its own reports; a sink that throws is reported, not thrown', () => {
    const sent: CatalogueReport[] = [];
    const errors: string[] = [];
    const reporter = new CatalogueReporter({ reportRecording: (r) => {
      if (r.recordingId === 'rec-bad') throw new Error('invalid');
      sent.push(r);
    } }, { retentionSeconds: 60, onError: (e) => errors.push(e.message) });
    reporter.record('call-1', { type: 'begun', recordingId: 'rec-live', participants: [], startedAt: 1, expiresAt: undefined });
    reporter.reportRepaired(summary({ recordingId: 'rec-live' }));
    expect(sent.map((r) => r.event)).toEqual(['begun']);
    reporter.reportRepaired(summary({ recordingId: 'rec-bad' }));
    expect(errors).toEqual(['invalid']);
    reporter.close();
  });
});
