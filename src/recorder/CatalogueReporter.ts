import type { CatalogueReport } from '../control/ControlClient.ts';
import type { ManifestSummary } from '../storage/manifestSummary.ts';
import type { RecordingEvent } from './CallRecorder.ts';

/**
 * Turns a recording's life (begun, segments stored, ended) into the catalogue reports of the
 * policy stream (docs/control-protocol.md §6 `recording.report`): totals so far, monotonic. The
 * catalogue is for listing without reading every manifest; the manifests stay the truth.
 *
 * Segment reports are coalesced: at most one per recording per `segmentReportMs` (the control
 * plane upserts a row per report), and the final report carries the totals anyway.
 */

export interface CatalogueSink {
  reportRecording(report: CatalogueReport): void;
}

interface Entry {
  recordingId: string;
  callId: string;
  participants: CatalogueReport['participants'];
  startedAt: number;
  expiresAt: number;
  tracks: Set<string>;
  segments: number;
  bytes: number;
  timer: NodeJS.Timeout | undefined;
}

const MAX_ENTRIES = 10_000;

export class CatalogueReporter {
  readonly #sink: CatalogueSink;
  readonly #retentionMs: number;
  readonly #segmentReportMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly #onError: (err: Error) => void;

  constructor(sink: CatalogueSink, options: { retentionSeconds: number; segmentReportMs?: number; onError: (err: Error) => void }) {
    this.#sink = sink;
    this.#retentionMs = options.retentionSeconds * 1000;
    this.#segmentReportMs = options.segmentReportMs ?? 1000;
    this.#onError = options.onError;
  }

  record(callId: string, event: RecordingEvent): void {
    switch (event.type) {
      case 'begun': {
        const known = this.#entries.get(event.recordingId);
        if (known !== undefined) {
          // Begun again: participants joined (a transfer). The counts so far stay.
          known.participants = reportParticipants(event.participants);
          this.#send(known, 'begun');
          return;
        }
        const entry: Entry = {
          recordingId: event.recordingId,
          callId,
          participants: reportParticipants(event.participants),
          startedAt: event.startedAt,
          expiresAt: event.expiresAt ?? event.startedAt + this.#retentionMs,
          tracks: new Set(),
          segments: 0,
          bytes: 0,
          timer: undefined,
        };
        this.#entries.set(event.recordingId, entry);
        while (this.#entries.size > MAX_ENTRIES) this.#forget(this.#entries.keys().next().value as string);
        this.#send(entry, 'begun');
        return;
      }
      case 'segment': {
        const entry = this.#entries.get(event.recordingId);
        if (entry === undefined) return;
        entry.tracks.add(event.participantId);
        entry.segments++;
        entry.bytes += event.sealedBytes;
        entry.timer ??= setTimeout(() => {
          entry.timer = undefined;
          if (this.#entries.get(entry.recordingId) === entry) this.#send(entry, 'segment');
        }, this.#segmentReportMs);
        entry.timer.unref();
        return;
      }
      case 'ended':
      case 'interrupted': {
        const entry = this.#entries.get(event.recordingId);
        if (entry === undefined) return;
        this.#forget(event.recordingId);
        // The final manifest's end and totals when there is one: `optin catalogue rebuild`
        // compares the catalogue with the manifests, and they must agree.
        if (event.final !== undefined) this.#emit(reportOfSummary(event.final, event.type));
        else this.#send(entry, event.type, event.at);
        return;
      }
    }
  }

  /**
   * A manifest crash repair closed (or found closed): the report its writer could not send.
   * Idempotent at the control plane (totals are monotonic, a final state stays final), so a
   * report the catalogue already had changes nothing.
   */
  reportRepaired(summary: ManifestSummary): void {
    if (this.#entries.has(summary.recordingId)) return; // still being written here: its own reports speak
    this.#emit(reportOfSummary(summary, summary.state === 'recording' ? 'segment' : summary.state));
  }

  /** The recording was erased or deleted: the control plane's ledger speaks for it now; no more reports. */
  forget(recordingId: string): void {
    this.#forget(recordingId);
  }

  close(): void {
    for (const id of [...this.#entries.keys()]) this.#forget(id);
  }

  #forget(recordingId: string): void {
    const entry = this.#entries.get(recordingId);
    if (entry?.timer !== undefined) clearTimeout(entry.timer);
    this.#entries.delete(recordingId);
  }

  #send(entry: Entry, event: CatalogueReport['event'], endedAt?: number): void {
    this.#emit({
      recordingId: entry.recordingId,
      callId: entry.callId,
      event,
      participants: entry.participants,
      startedAt: entry.startedAt,
      ...(endedAt === undefined ? {} : { endedAt }),
      tracks: entry.tracks.size,
      segments: entry.segments,
      bytes: entry.bytes,
      expiresAt: entry.expiresAt,
    });
  }

  #emit(report: CatalogueReport): void {
    try {
      this.#sink.reportRecording(report);
    } catch (err) {
      this.#onError(err as Error);
    }
  }
}

function reportOfSummary(summary: ManifestSummary, event: CatalogueReport['event']): CatalogueReport {
  const { nodeId: _writer, state: _state, ...figures } = summary;
  return { ...figures, event };
}

function reportParticipants(participants: Extract<RecordingEvent, { type: 'begun' }>['participants']): CatalogueReport['participants'] {
  return participants.map((p) => ({ participantId: p.participantId, role: p.role, subjectId: p.subjectId, ...(p.teamLeadId ? { teamLeadId: p.teamLeadId } : {}) }));
}
