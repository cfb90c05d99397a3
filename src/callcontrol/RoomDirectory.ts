import type { CallRoom } from '../sfu/CallRoom.ts';
import type { Recorder } from '../recorder/Recorder.ts';

/**
 * Finds a call's room, or opens it once however many legs ask at the same moment (a browser
 * joining and a SIP leg arriving together must land in the same Router).
 */
export class RoomDirectory {
  readonly #recorder: Recorder;
  readonly #open: (callId: string) => Promise<CallRoom>;
  readonly #opening = new Map<string, Promise<CallRoom>>();

  constructor(recorder: Recorder, open: (callId: string) => Promise<CallRoom>) {
    this.#recorder = recorder;
    this.#open = open;
  }

  /** The call's open room, without opening one. */
  find(callId: string): CallRoom | undefined {
    const room = this.#recorder.calls.get(callId)?.room;
    return room && !room.closed ? room : undefined;
  }

  /**
   * Closes the room if no page and no leg is left in it, and resolves once its recording is
   * finalised. True if the call ended.
   */
  async endIfIdle(room: CallRoom): Promise<boolean> {
    if (!room.closeIfIdle()) return false;
    await this.#recorder.detachCall(room.callId);
    return true;
  }

  async get(callId: string): Promise<CallRoom> {
    const existing = this.#recorder.calls.get(callId)?.room;
    if (existing && !existing.closed) return existing;
    let opening = this.#opening.get(callId);
    if (!opening) {
      opening = this.#open(callId).finally(() => this.#opening.delete(callId));
      this.#opening.set(callId, opening);
    }
    return opening;
  }
}
