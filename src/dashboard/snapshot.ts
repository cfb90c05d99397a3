import { createHash } from 'node:crypto';
import type { Recorder } from '../recorder/Recorder.ts';

/**
 * What the dashboard reads from the running worker. Declared here so dashboard/ does not depend
 * on the composition root: `app/RecorderApp.ts` satisfies it as it stands and
 * `app/recorderHttp.ts` passes the app in.
 */
export interface DashboardSources {
  readonly recorder: Pick<Recorder, 'calls' | 'eventLoopLagP99Ms'>;
  readonly store: {
    spoolState(): { readonly bytes: number; readonly items: number; readonly full: boolean };
    stats(): { readonly uploadLatencyMs: { readonly p99: number } };
  };
  readonly pool: {
    readonly workers: readonly unknown[];
    resourceUsage(): Promise<readonly { readonly cpuMs: number }[]>;
  };
  readonly control: { readonly fresh: boolean };
}

export interface DashboardTrack {
  /** A short digest, not the participant id: the dashboard shows health, not who. */
  track: string;
  codec: string;
  lossPct: number;
  jitterMs: number;
  concealedMs: number;
  bitrateKbps: number;
  packetsWritten: number;
}

export interface DashboardCall {
  call: string;
  gate: 'open' | 'closed';
  reason: string;
  recording: boolean;
  tracks: DashboardTrack[];
}

export interface DashboardSnapshot {
  at: number;
  calls: DashboardCall[];
  totals: { calls: number; tracks: number; recording: number };
  uploadBacklog: { spoolBytes: number; spoolItems: number; spoolFull: boolean; uploadP99Ms: number };
  load: { eventLoopLagP99Ms: number; mediaWorkers: number; mediaWorkerCpuPct: number[]; controlFresh: boolean };
}

const short = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/**
 * What the live dashboard shows: per-track media health next to the gate state, the upload
 * backlog and the worker's load. No audio and no personal identifiers: calls and tracks appear
 * as short digests, never as subject ids.
 */
export class DashboardModel {
  readonly #app: DashboardSources;
  #prevBytes = new Map<string, { bytes: number; at: number }>();
  #prevCpu: { cpuMs: number; at: number }[] = [];
  #cpuPct: number[] = [];

  constructor(app: DashboardSources) {
    this.#app = app;
  }

  async snapshot(): Promise<DashboardSnapshot> {
    const now = Date.now();
    const calls: DashboardCall[] = [];
    // Only the tracks alive now are remembered: ended calls must not accumulate here.
    const seen = new Map<string, { bytes: number; at: number }>();
    let tracks = 0;
    let recording = 0;
    for (const call of this.#app.recorder.calls.values()) {
      const ts: DashboardTrack[] = [];
      for (const t of call.tracks.values()) {
        const h = t.health;
        const key = `${call.callId}/${t.participantId}`;
        const prev = this.#prevBytes.get(key);
        const kbps = prev && now > prev.at ? ((h.writtenBytes - prev.bytes) * 8) / (now - prev.at) : 0;
        seen.set(key, { bytes: h.writtenBytes, at: now });
        ts.push({
          track: short(key),
          codec: t.codec,
          lossPct: h.expected > 0 ? Math.round((h.lost / h.expected) * 1000) / 10 : 0,
          jitterMs: Math.round(h.jitterMs * 10) / 10,
          concealedMs: Math.round(h.concealedMs),
          // Payload bitrate as written (RTP payload bytes; the G.711 figure is before transcoding).
          bitrateKbps: Math.round(kbps * 10) / 10,
          packetsWritten: h.written,
        });
      }
      tracks += ts.length;
      if (call.writing) recording++;
      calls.push({ call: short(call.callId), gate: call.gate.isOpen ? 'open' : 'closed', reason: call.writing ? 'recording' : (call.gate.reasons[0] ?? 'admitting'), recording: call.writing, tracks: ts });
    }
    this.#prevBytes = seen;
    const spool = this.#app.store.spoolState();
    const usage = await this.#app.pool.resourceUsage().catch(() => []);
    this.#cpuPct = usage.map((u, i) => {
      const prev = this.#prevCpu[i];
      const pct = prev && now > prev.at ? Math.round(((u.cpuMs - prev.cpuMs) / (now - prev.at)) * 1000) / 10 : 0;
      this.#prevCpu[i] = { cpuMs: u.cpuMs, at: now };
      return pct;
    });
    return {
      at: now,
      calls,
      totals: { calls: calls.length, tracks, recording },
      uploadBacklog: { spoolBytes: spool.bytes, spoolItems: spool.items, spoolFull: spool.full, uploadP99Ms: Math.round(this.#app.store.stats().uploadLatencyMs.p99) },
      load: { eventLoopLagP99Ms: Math.round(this.#app.recorder.eventLoopLagP99Ms * 10) / 10, mediaWorkers: this.#app.pool.workers.length, mediaWorkerCpuPct: this.#cpuPct, controlFresh: this.#app.control.fresh },
    };
  }
}
