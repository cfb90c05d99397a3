import type { ControlClient } from '../control/ControlClient.ts';
import type { PolicyState } from '../gate/PolicyState.ts';
import type { Admitter } from './CallRecorder.ts';

/**
 * The monthly cap (R6) as the control plane decides it, for every worker in one database
 * transaction (docs/control-protocol.md §6 `cap.request`): this worker only asks. While the
 * question is open the recording counts against its agents' caps for this worker's other calls
 * (PolicyState.markAdmitting), so two calls of one agent decided in the same turn never both
 * ask for the last slot.
 *
 * Rejections pass through for the CallRecorder: CONTROL_NOT_FRESH (the stream went away: the
 * gate is closed anyway, the same recording id is asked for again once fresh) and
 * CONTROL_CAP_UNKNOWN (no answer in time, or the control plane could not decide: `cap-unknown`).
 */
export class ControlAdmitter implements Admitter {
  readonly #control: ControlClient;

  constructor(control: ControlClient) {
    this.#control = control;
  }

  async admitCall(state: PolicyState, callId: string, recordingId: string, now: number = Date.now()): Promise<boolean> {
    const agentIds = [...new Set(state.agentsOf(callId).map((a) => a.subjectId))];
    if (agentIds.length === 0) {
      state.markCapRefused(callId);
      return false;
    }
    state.markAdmitting(callId, recordingId, now);
    try {
      const decision = await this.#control.requestCap({ recordingId, callId, agentIds, at: now });
      // Recorded before resolving, as the CallRecorder's re-evaluation reads them.
      if (decision.admitted) state.markAdmitted(callId, recordingId, now);
      else state.markCapRefused(callId);
      return decision.admitted;
    } catch (err) {
      state.clearAdmitting(callId);
      throw err;
    }
  }
}
