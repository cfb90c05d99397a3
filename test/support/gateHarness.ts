/**
 * Helpers for the gate/recorder tests (test/integration/gate/recorder-*.test.ts): tagged Opus RTP injected
 * through a real mediasoup worker, an in-memory CallStore that keeps every segment it was ever
 * handed, arrival spies and small waiting utilities. Nothing here replaces the subject under test
 * (mediasoup, the control plane and its policy stream, the control client, the recorder): only
 * the object store.
 */
import type dgram from 'node:dgram';
import { setImmediate as immediate } from 'node:timers/promises';
import type { ReceiveStream } from '../../src/siprec/MediaPlane.ts';
import type { types } from 'mediasoup';
import { buildRtp } from '../../src/rtp/RtpPacket.ts';
import { parseRtp } from '../../src/rtp/RtpPacket.ts';
import { readOggOpus } from '../../src/media/OggOpusReader.ts';
import { plainAudioRtpParameters } from '../../src/sfu/mediaCodecs.ts';
import type { CallRoom } from '../../src/sfu/CallRoom.ts';
import type { CallStore } from '../../src/recorder/CallRecorder.ts';
import type { TrackRecorder } from '../../src/recorder/TrackRecorder.ts';
import type { DeletionReceipt, SegmentBody } from '../../src/storage/types.ts';
import { oggOfSegment } from './heldSegment.ts';
import { readTrack, type TrackSource } from './storageFixtures.ts';

// ---------------------------------------------------------------------------------------------
// Tagged Opus packets
// ---------------------------------------------------------------------------------------------

/** TOC 0xF8: config 31 (CELT fullband 20 ms), mono, code 0 (one frame): 960 samples at 48 kHz. */
export const OPUS_TOC_20MS = 0xf8;
const MAGIC = Buffer.from('GTpk', 'latin1');

/**
 * An Opus payload that carries a packet id: TOC, 4 magic bytes, the id (u32 BE), and a few bytes
 * of filler. The recorder passes Opus through untouched, so the id survives into the Ogg segment.
 * Silence the segmenter writes for gaps never carries the magic.
 */
export function taggedOpusPayload(id: number): Buffer {
  const b = Buffer.alloc(1 + MAGIC.length + 4 + 3);
  b[0] = OPUS_TOC_20MS;
  MAGIC.copy(b, 1);
  b.writeUInt32BE(id >>> 0, 1 + MAGIC.length);
  b.fill(0x55, 1 + MAGIC.length + 4);
  return b;
}

/** The packet id in a payload made by `taggedOpusPayload`, or undefined (silence, headers, foreign). */
export function packetIdOf(payload: Uint8Array): number | undefined {
  if (payload.length < 1 + MAGIC.length + 4 || payload[0] !== OPUS_TOC_20MS) return undefined;
  for (let i = 0; i < MAGIC.length; i++) if (payload[1 + i] !== MAGIC[i]) return undefined;
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).readUInt32BE(1 + MAGIC.length);
}

/** Every tagged packet id in one Ogg Opus segment, in file order (throws on a malformed file). */
export function packetIdsInOgg(ogg: Uint8Array): number[] {
  const ids: number[] = [];
  for (const p of readOggOpus(ogg).packets) {
    const id = packetIdOf(p.data);
    if (id !== undefined) ids.push(id);
  }
  return ids;
}

/** A recorded track read back from the store (decrypted), as packet ids and segment metadata. */
export async function readTaggedTrack(store: TrackSource, recordingId: string, participantId: string) {
  return (await readTrack(store, recordingId, participantId)).map((s) => ({ ids: packetIdsInOgg(s.ogg), run: s.meta.run, startWallClockMs: s.meta.startWallClockMs, durationMs: s.meta.durationMs }));
}

/**
 * One participant's voice injected as plain RTP: a DirectTransport producer on the call's own
 * Router, registered with the room like any other audio producer. Each `send` goes through the
 * real mediasoup worker (producer -> router -> the recorder's tap consumer).
 */
export class RtpLeg {
  readonly participantId: string;
  readonly producer: types.Producer;
  readonly transport: types.DirectTransport;
  readonly ssrc: number;
  #seq: number;
  #ts: number;

  private constructor(participantId: string, transport: types.DirectTransport, producer: types.Producer, ssrc: number) {
    this.participantId = participantId;
    this.transport = transport;
    this.producer = producer;
    this.ssrc = ssrc;
    this.#seq = (ssrc * 7) & 0xffff;
    this.#ts = (ssrc * 13) >>> 0;
  }

  static async create(room: CallRoom, participantId: string, ssrc: number): Promise<RtpLeg> {
    const transport = await room.router.createDirectTransport();
    const producer = await transport.produce({ kind: 'audio', rtpParameters: plainAudioRtpParameters('opus', ssrc), appData: { participantId } });
    room.addProducer(participantId, producer);
    return new RtpLeg(participantId, transport, producer, ssrc);
  }

  /** Sends one 20 ms Opus packet carrying `id`; sequence numbers and timestamps advance like a live stream. */
  send(id: number): void {
    const rtp = buildRtp({ payloadType: 100, sequenceNumber: this.#seq, timestamp: this.#ts, ssrc: this.ssrc, marker: false, payload: taggedOpusPayload(id) });
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#ts = (this.#ts + 960) >>> 0;
    this.producer.send(rtp);
  }

  close(): void {
    this.transport.close();
  }
}

/**
 * One participant's voice sent as plain RTP over UDP to a stream of the media threads (a SIPREC
 * stream's socket in its call's thread): the threaded path, no SFU.
 */
export class UdpLeg {
  readonly participantId: string;
  readonly ssrc: number;
  readonly #socket: dgram.Socket;
  readonly #port: number;
  readonly #stream: ReceiveStream;
  #seq: number;
  #ts: number;

  constructor(participantId: string, socket: dgram.Socket, stream: ReceiveStream, ssrc: number) {
    this.participantId = participantId;
    this.ssrc = ssrc;
    this.#socket = socket;
    this.#stream = stream;
    this.#port = stream.local.rtpPort;
    this.#seq = (ssrc * 7) & 0xffff;
    this.#ts = (ssrc * 13) >>> 0;
  }

  send(id: number): void {
    const rtp = buildRtp({ payloadType: 111, sequenceNumber: this.#seq, timestamp: this.#ts, ssrc: this.ssrc, marker: false, payload: taggedOpusPayload(id) });
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#ts = (this.#ts + 960) >>> 0;
    this.#socket.send(rtp, this.#port, '127.0.0.1');
  }

  close(): void {
    this.#stream.close('bye');
  }
}

/**
 * Observes every packet a TrackRecorder is handed, with the `writable` flag the recorder passed
 * (the gate as the recorder saw it at arrival). The original method still runs, unchanged.
 */
export function spyArrivals(track: TrackRecorder, onArrival: (id: number | undefined, writable: boolean, nowMs: number) => void): void {
  const original = track.onRtp.bind(track);
  track.onRtp = (buf: Buffer, nowMs: number, writable: boolean): void => {
    const parsed = parseRtp(buf);
    onArrival(parsed.ok ? packetIdOf(parsed.packet.payload) : undefined, writable, nowMs);
    original(buf, nowMs, writable);
  };
}

/**
 * Sends one tagged 20 ms packet per leg every 20 ms (a live call), and remembers when each id was
 * sent (Date.now(), the clock the recorder's wall-clock anchors use).
 */
export class PacedSender {
  readonly sentAt = new Map<number, { ms: number; participantId: string }>();
  #timer: NodeJS.Timeout | undefined;
  #legs: RtpLeg[];
  #nextId: number;

  constructor(legs: RtpLeg[], firstId = 1) {
    this.#legs = legs;
    this.#nextId = firstId;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#tick(), 20);
    this.#tick();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Ids sent by one participant, in order. */
  idsOf(participantId: string): number[] {
    return [...this.sentAt].filter(([, v]) => v.participantId === participantId).map(([id]) => id);
  }

  #tick(): void {
    const now = Date.now();
    for (const leg of this.#legs) {
      const id = this.#nextId++;
      this.sentAt.set(id, { ms: now, participantId: leg.participantId });
      leg.send(id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// In-memory store
// ---------------------------------------------------------------------------------------------

type SegmentMeta = Parameters<CallStore['putSegment']>[0];
type BeginInput = Parameters<CallStore['beginRecording']>[0];

export interface PutRecord {
  meta: SegmentMeta;
  ids: number[];
  /** Order of arrival over the store's life. */
  order: number;
  /** The recording had already been deleted when this segment arrived (a resurrection). */
  afterDelete: boolean;
}

/**
 * A CallStore that keeps, append-only, every segment it was ever handed (what the RecordingStore
 * would have uploaded or spooled), decoded to packet ids, plus a "current" view that deletions
 * empty. The recorder decides what reaches the store; the store is not the subject here.
 */
export class MemoryStore implements CallStore {
  readonly puts: PutRecord[] = [];
  readonly begun = new Map<string, BeginInput>();
  readonly ended = new Set<string>();
  readonly deleted = new Map<string, { reason: string; order: number }>();
  readonly current = new Map<string, PutRecord[]>();
  readonly errors: string[] = [];
  #order = 0;

  beginRecording(input: BeginInput): Promise<void> {
    if (this.begun.has(input.recordingId)) this.errors.push(`recording ${input.recordingId} begun twice`);
    this.begun.set(input.recordingId, input);
    return Promise.resolve();
  }

  putSegment(meta: SegmentMeta, ogg: SegmentBody): Promise<unknown> {
    if (!this.begun.has(meta.recordingId)) this.errors.push(`segment of ${meta.recordingId} before beginRecording`);
    // Recorded when handed over (its order and whether its recording was deleted by then); the
    // packet ids of a segment a media thread holds once it sealed and handed the bytes over, before
    // this put resolves (so before the track counts as settled).
    const rec: PutRecord = { meta: { ...meta }, ids: [], order: this.#order++, afterDelete: this.deleted.has(meta.recordingId) };
    this.puts.push(rec);
    if (!rec.afterDelete) {
      const list = this.current.get(meta.recordingId) ?? [];
      list.push(rec);
      this.current.set(meta.recordingId, list);
    }
    const readIds = (bytes: Buffer): void => {
      try {
        rec.ids = packetIdsInOgg(bytes);
      } catch (err) {
        this.errors.push(`segment ${meta.recordingId}/${meta.participantId}/${meta.segment} is not valid Ogg Opus: ${(err as Error).message}`);
      }
    };
    if (Buffer.isBuffer(ogg)) {
      readIds(ogg);
      return Promise.resolve({ stored: 'uploaded' });
    }
    return oggOfSegment(ogg, meta).then(
      (bytes) => {
        readIds(bytes);
        return { stored: 'uploaded' };
      },
      (err: Error) => {
        this.errors.push(`segment ${meta.recordingId}/${meta.participantId}/${meta.segment} could not be sealed and handed over: ${err.message}`);
        throw err;
      },
    );
  }

  endRecording(recordingId: string): Promise<undefined> {
    this.ended.add(recordingId);
    return Promise.resolve(undefined);
  }

  deleteRecording(recordingId: string, options: { participantId?: string; reason: string; actor: string }): Promise<DeletionReceipt> {
    const found = this.current.get(recordingId)?.length ?? 0;
    this.deleted.set(recordingId, { reason: options.reason, order: this.#order++ });
    this.current.delete(recordingId);
    const at = new Date().toISOString();
    return Promise.resolve({
      receiptId: `mem_${this.#order}`,
      kind: 'deletion',
      recordingId,
      ...(options.participantId === undefined ? {} : { participantId: options.participantId }),
      scope: options.participantId === undefined ? 'recording' : 'participant',
      reason: options.reason,
      actor: options.actor,
      requestedAt: at,
      completedAt: at,
      complete: true,
      nothingLeft: found === 0,
      dataKeys: [],
      mediaObjects: { count: found, objectKeys: [] },
      spool: { itemsRemoved: 0, bytes: 0 },
      manifest: found === 0 ? 'absent' : 'deleted',
    });
  }

  isSpoolFull(): boolean {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting and statistics
// ---------------------------------------------------------------------------------------------

/**
 * Event-driven waiting: `until(cond)` resolves as soon as `cond()` holds after any `poke()`
 * (wire pokes to the events that can change the condition), with a slow fallback poll.
 */
export class Waiter {
  readonly #waiting = new Set<{ cond: () => boolean; resolve: () => void }>();
  readonly #pollMs: number;

  constructor(pollMs = 5) {
    this.#pollMs = pollMs;
  }

  poke = (): void => {
    for (const w of [...this.#waiting]) {
      if (w.cond()) {
        this.#waiting.delete(w);
        w.resolve();
      }
    }
  };

  /** Resolves true when `cond` holds, false after `timeoutMs`. */
  until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const entry = {
        cond,
        resolve: () => {
          clearTimeout(timer);
          clearInterval(poll);
          resolve(true);
        },
      };
      const poll = setInterval(() => {
        if (cond()) {
          this.#waiting.delete(entry);
          entry.resolve();
        }
      }, this.#pollMs);
      const timer = setTimeout(() => {
        clearInterval(poll);
        this.#waiting.delete(entry);
        resolve(false);
      }, timeoutMs);
      this.#waiting.add(entry);
    });
  }
}

/** Lets queued microtasks and one or two macrotask turns run (admission answers, requestEvaluate). */
export async function settleTurns(turns = 2): Promise<void> {
  for (let i = 0; i < turns; i++) await immediate();
}

export function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/** `name: n=…, p50 …, p99 …, max …` in milliseconds. */
export function describeLatencies(name: string, samples: readonly number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `${name}: n=${s.length}, p50 ${quantile(s, 0.5).toFixed(3)} ms, p99 ${quantile(s, 0.99).toFixed(3)} ms, max ${(s[s.length - 1] ?? Number.NaN).toFixed(3)} ms`;
}
