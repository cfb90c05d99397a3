import { decideCap } from '../caps/capDecision.ts';
import { entryFromReport, upsertEntry } from '../catalogue/Catalogue.ts';
import { PROTOCOL_VERSION_2, type WorkerMessageV2 } from '../control/protocolV2.ts';
import type { Database } from '../db/Database.ts';
import { confirmDeletion, confirmErasure } from '../erasure/ledger.ts';
import type { Logger } from '../log/logger.ts';
import type { ControlPlaneMetrics } from '../metrics/controlPlaneMetrics.ts';
import type { StreamSession } from './StreamSession.ts';
import { coverNewRecordingByErasures } from '../erasure/ledger.ts';

/** What the control plane does with each worker -> server frame (docs/control-protocol.md §6). */
export interface WorkerFrameDeps {
  db: Database;
  logger: Logger;
  metrics: ControlPlaneMetrics;
  now: () => number;
  /** A confirmation arrived: let the sweeper look soon. */
  onConfirmation: () => void;
}

export async function handleWorkerFrame(deps: WorkerFrameDeps, session: StreamSession, message: WorkerMessageV2): Promise<void> {
  const now = deps.now();
  switch (message.type) {
    case 'recording-state':
      // R7: the latest state per call, for the agent's UI and operators.
      await deps.db.query(
        `INSERT INTO call_recording_states (call_id, worker_id, recording, reasons, at_ms, recording_id) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (call_id) DO UPDATE SET worker_id = EXCLUDED.worker_id, recording = EXCLUDED.recording, reasons = EXCLUDED.reasons,
           at_ms = EXCLUDED.at_ms, recording_id = EXCLUDED.recording_id
         WHERE call_recording_states.at_ms <= EXCLUDED.at_ms`,
        [message.callId, session.workerId, message.recording, [...message.reasons], message.at, message.recordingId ?? null],
      );
      return;
    case 'cap.request': {
      const outcome = await decideCap(deps.db, { recordingId: message.recordingId, agentIds: message.agentIds, nowMs: now });
      deps.metrics.capDecisions.inc({ result: outcome.admitted ? 'admitted' : outcome.reason });
      session.send(
        outcome.admitted
          ? { v: PROTOCOL_VERSION_2, type: 'cap.decision', requestId: message.requestId, admitted: true, month: outcome.month }
          : { v: PROTOCOL_VERSION_2, type: 'cap.decision', requestId: message.requestId, admitted: false, month: outcome.month, reason: outcome.reason },
      );
      return;
    }
    case 'recording.report': {
      await deps.db.transaction(async (tx) => {
        const entry = entryFromReport(message, session.workerId);
        const result = await upsertEntry(tx, entry, now, 'report');
        if (result.inserted && result.erasures.length > 0) await coverNewRecordingByErasures(tx, entry, result.erasures, now);
      });
      deps.metrics.catalogueReports.inc({ event: message.event });
      return;
    }
    case 'erasure.done': {
      const result = await confirmErasure(deps.db, message.erasureId, session.workerId, message.receipts, now);
      if (result === 'unknown') session.sendError('unknown-erasure', `no erasure ${message.erasureId}`, message.erasureId);
      else deps.onConfirmation();
      return;
    }
    case 'deletion.done': {
      const result = await confirmDeletion(deps.db, message.deletionId, session.workerId, message.receipt, now);
      if (result === 'unknown') session.sendError('unknown-deletion', `no deletion ${message.deletionId}`, message.deletionId);
      else deps.onConfirmation();
      return;
    }
    case 'error':
      deps.logger.warn({ workerId: session.workerId, code: message.code, ref: message.ref }, 'stream: worker reported an error');
      return;
  }
}
