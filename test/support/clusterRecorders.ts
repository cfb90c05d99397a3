import { randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Client } from 'minio';
import { signCallToken } from '../../src/callcontrol/callToken.ts';
import { sendRtp, type FfmpegRun } from '../../src/media/ffmpeg.ts';
import type { TrackSegment } from '../../src/storage/types.ts';
import { fixturePath } from './fixtures.ts';
import { freeUdpPortPair } from './udpPorts.ts';
import { spawnRecorder, type WorkerProcess } from './workerProcess.ts';

/**
 * The recorders of the cluster test (test/integration/cluster/): `workers/recorder.ts`
 * processes, as in production, each on its own control-plane replica and on the Ceph cluster
 * through the gateway balancer, with calls whose legs are asked through call control (as the SIP
 * gateway does) and fed by ffmpeg; and the judge of what they stored, track by track.
 */

export interface ClusterRecorderOptions {
  name: string;
  controlUrl: string;
  controlSecret: string;
  s3: { endpoint: string; accessKey: string; secretKey: string };
  bucketPrefix: string;
  keyring: { activeKeyId: string; keys: Record<string, string> };
  /** The audit trail's HMAC key (hex) and its own store principal. */
  audit: { hmacKey: string; accessKey: string; secretKey: string };
  callSecret: string;
  segmentSeconds: number;
  /** Reused by a restart: the spool a killed recorder left is what its successor uploads. */
  spoolDir?: string;
}

export class ClusterRecorder {
  readonly workerId: string;
  readonly spoolDir: string;
  proc: WorkerProcess;
  url = '';
  readonly #options: ClusterRecorderOptions;
  readonly #earlier: string[] = [];

  private constructor(options: ClusterRecorderOptions, spoolDir: string) {
    this.#options = options;
    this.workerId = `w-cluster-${options.name}`;
    this.spoolDir = spoolDir;
    this.proc = this.#spawn();
  }

  /** Starts the process and resolves once it logged "recorder ready". */
  static async start(options: ClusterRecorderOptions): Promise<ClusterRecorder> {
    const r = new ClusterRecorder(options, options.spoolDir ?? mkdtempSync(path.join(tmpdir(), `optin-cluster-${options.name}-`)));
    await r.ready();
    return r;
  }

  #spawn(): WorkerProcess {
    const o = this.#options;
    return spawnRecorder({
      OPTIN_S3_ENDPOINT: o.s3.endpoint,
      OPTIN_S3_ACCESS_KEY: o.s3.accessKey,
      OPTIN_S3_SECRET_KEY: o.s3.secretKey,
      OPTIN_S3_BUCKET_PREFIX: o.bucketPrefix,
      OPTIN_KEYRING: JSON.stringify(o.keyring),
      OPTIN_AUDIT_HMAC_KEY: o.audit.hmacKey,
      OPTIN_S3_AUDIT_ACCESS_KEY: o.audit.accessKey,
      OPTIN_S3_AUDIT_SECRET_KEY: o.audit.secretKey,
      OPTIN_CONTROL_URL: o.controlUrl,
      OPTIN_CONTROL_SECRET: o.controlSecret,
      OPTIN_SIP_LEG_SECRET: o.callSecret,
      OPTIN_HTTP_PORT: '0',
      OPTIN_SPOOL_DIR: this.spoolDir,
      OPTIN_SEGMENT_SECONDS: String(o.segmentSeconds),
      OPTIN_MEDIASOUP_WORKERS: '1',
      OPTIN_WORKER_ID: this.workerId,
      // The machine's two cores also run Ceph, PostgreSQL and the control planes: admission
      // control must not refuse the test's calls for the lag that load causes.
      OPTIN_MAX_EVENT_LOOP_LAG_MS: '60000',
      OPTIN_LOG_LEVEL: 'info',
    });
  }

  async ready(): Promise<void> {
    const rec = await this.proc.waitForLog('recorder ready', 90_000);
    this.url = String(rec.url);
  }

  /** kill -9: no goodbye, the open segments and whatever the spool held stay where they are. */
  async kill(): Promise<void> {
    this.proc.child.kill('SIGKILL');
    await this.proc.exited;
  }

  /** Everything the processes wrote (the killed one's too), for the run's artifacts. */
  logs(): string {
    return [...this.#earlier, this.proc.stdout() + this.proc.stderr()].join('\n--- restarted ---\n');
  }

  /** A new process with the same worker id and the same spool (a restarted container on its volume). */
  async restart(): Promise<void> {
    this.#earlier.push(this.proc.stdout() + this.proc.stderr());
    this.proc = this.#spawn();
    await this.ready();
  }

  /** Items waiting in the spool (sealed segments, manifests, deletions not yet in the store). */
  spoolItems(): number {
    const dir = path.join(this.spoolDir, 'items');
    return existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.json')).length : 0;
  }

  /** SIGTERM: the graceful stop; resolves with the exit code and whether it called the stop clean. */
  async stop(): Promise<{ code: number | null; clean: boolean }> {
    if (this.proc.child.exitCode !== null || this.proc.child.signalCode !== null) return { code: this.proc.child.exitCode, clean: false };
    this.proc.child.kill('SIGTERM');
    const exit = await Promise.race([this.proc.exited, delay(30_000, undefined, { ref: false })]);
    if (exit === undefined) {
      this.proc.child.kill('SIGKILL');
      await this.proc.exited;
      return { code: null, clean: false };
    }
    return { code: exit.code, clean: this.proc.stdout().includes('shutdown complete') };
  }

  /** Asks for the call's legs through call control and starts one ffmpeg sender per leg. */
  async openCall(callId: string, legs: { participantId: string; codec: 'opus' | 'pcmu'; file: string }[], seconds: number): Promise<FfmpegRun[]> {
    const senders: FfmpegRun[] = [];
    for (const leg of legs) {
      const ssrc = randomInt(1, 0x7fffffff);
      // A single-use sip-leg token, and the leg pinned to the address the gateway sends from.
      const token = signCallToken(this.#options.callSecret, { aud: 'sip-leg', callId, participantId: leg.participantId, lifetimeSeconds: 60 });
      const from = await freeUdpPortPair();
      const res = await fetch(`${this.url}/calls/${callId}/plain-legs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ participantId: leg.participantId, codec: leg.codec, ssrc, remote: { ip: '127.0.0.1', rtpPort: from.rtpPort, rtcpPort: from.rtcpPort } }),
      });
      if (res.status !== 201) throw new Error(`plain leg ${leg.participantId} of ${callId} on ${this.workerId}: HTTP ${res.status} ${await res.text()}`);
      const answer = (await res.json()) as { ip: string; rtpPort: number; rtcpPort: number };
      senders.push(
        sendRtp({
          file: fixturePath(leg.file),
          codec: leg.codec,
          ip: answer.ip,
          rtpPort: answer.rtpPort,
          rtcpPort: answer.rtcpPort,
          ssrc,
          seconds,
          loop: true,
          localRtpPort: from.rtpPort,
          localRtcpPort: from.rtcpPort,
        }),
      );
    }
    return senders;
  }
}

/** What one stored track says about losses and duplicates. */
export interface TrackVerdict {
  participantId: string;
  segments: number;
  /** Segment numbers missing between the first and the last stored one. */
  missingSegments: number[];
  /** The same audio stored twice: a segment starting before the previous one ended (> 250 ms). */
  overlaps: number;
  /** Gaps inside one gate run (> 250 ms): audio lost while the gate was open. */
  gapsInRun: { afterSegment: number; ms: number }[];
  /** Gaps where the run changes: the gate was closed (not a loss). */
  runChanges: number;
  /** Wall-clock span of the stored audio. */
  firstStartMs: number | undefined;
  lastEndMs: number | undefined;
  storedMs: number;
}

/** Tolerance of the overlap and gap checks: the anchor's refinement, far below a segment's length. */
const OVERLAP_TOLERANCE_MS = 250;

export function judgeTrack(participantId: string, segs: readonly TrackSegment[]): TrackVerdict {
  const metas = segs.map((s) => s.meta).sort((a, b) => a.segment - b.segment);
  const missingSegments: number[] = [];
  let overlaps = 0;
  let runChanges = 0;
  const gapsInRun: TrackVerdict['gapsInRun'] = [];
  for (let i = 1; i < metas.length; i++) {
    const prev = metas[i - 1]!;
    const cur = metas[i]!;
    for (let n = prev.segment + 1; n < cur.segment; n++) missingSegments.push(n);
    const gap = cur.startWallClockMs - (prev.startWallClockMs + prev.durationMs);
    // A segment's start is the jitter buffer's least-delay anchor at its sealing, refined as the run
    // goes: a stall early in a run (a loaded host) places the next segments up to that stall earlier
    // than the first one ended (85 ms in a full .ci/run here). Audio stored twice overlaps by whole segments.
    if (gap < -OVERLAP_TOLERANCE_MS) overlaps++;
    if (cur.run !== prev.run) runChanges++;
    else if (gap > OVERLAP_TOLERANCE_MS) gapsInRun.push({ afterSegment: prev.segment, ms: Math.round(gap) });
  }
  const first = metas[0];
  const last = metas.at(-1);
  return {
    participantId,
    segments: metas.length,
    missingSegments: first && first.segment !== 0 ? [...Array(first.segment).keys(), ...missingSegments] : missingSegments,
    overlaps,
    gapsInRun,
    runChanges,
    firstStartMs: first?.startWallClockMs,
    lastEndMs: last ? last.startWallClockMs + last.durationMs : undefined,
    storedMs: metas.reduce((a, m) => a + m.durationMs, 0),
  };
}

/** Every version of every object under `prefix` (a key PUT twice has two): name -> versions. */
export async function objectVersions(client: Client, bucket: string, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const stream = client.listObjects(bucket, prefix, true, { IncludeVersion: true }) as AsyncIterable<{ name?: string; isDeleteMarker?: boolean }>;
  for await (const o of stream) {
    if (!o.name || o.isDeleteMarker) continue;
    out.set(o.name, (out.get(o.name) ?? 0) + 1);
  }
  return out;
}
