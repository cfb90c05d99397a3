/**
 * Body of one transcoder worker thread (see TranscoderPool): holds one Opus
 * encoder per stream pinned to this thread, so each stream's encoder state
 * (and thus its audio) is continuous. Requests arrive batched (all frames
 * the pool collected in one event-loop turn) to keep message overhead per
 * frame small.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { OpusWasmEncoder } from './OpusWasmEncoder.ts';

export interface TranscoderThreadConfig {
  sampleRate: 8000 | 16000 | 48000;
  bitrate: number;
  complexity: number;
}

export type ToThread =
  | {
      type: 'encode';
      ids: number[];
      streams: string[];
      /** Samples of each frame, in order; the frames are concatenated in `pcm`. */
      frames: number[];
      pcm: Int16Array;
    }
  | { type: 'close'; streamId: string }
  | { type: 'lookahead'; id: number }
  | { type: 'stats'; id: number };

export type FromThread =
  | {
      type: 'encoded';
      ids: number[];
      /** Packet size per id, or -1 when that frame failed (see `errors`). */
      sizes: Int32Array;
      data: Uint8Array;
      errors: Record<number, string>;
    }
  | { type: 'lookahead'; id: number; samples: number }
  | { type: 'stats'; id: number; streams: number; frames: number; encodeMs: number };

const config = workerData as TranscoderThreadConfig;
const encoders = new Map<string, OpusWasmEncoder>();
let framesEncoded = 0;
let encodeMs = 0;

function encoderFor(streamId: string): OpusWasmEncoder {
  let enc = encoders.get(streamId);
  if (!enc) {
    enc = new OpusWasmEncoder({ sampleRate: config.sampleRate, bitrate: config.bitrate, complexity: config.complexity });
    encoders.set(streamId, enc);
  }
  return enc;
}

function post(msg: FromThread, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer);
}

parentPort!.on('message', (m: ToThread) => {
  switch (m.type) {
    case 'encode': {
      const t0 = performance.now();
      const sizes = new Int32Array(m.ids.length);
      const packets: Buffer[] = [];
      const errors: Record<number, string> = {};
      let total = 0;
      let offset = 0;
      for (let i = 0; i < m.ids.length; i++) {
        const n = m.frames[i]!;
        const pcm = m.pcm.subarray(offset, offset + n);
        offset += n;
        try {
          const packet = encoderFor(m.streams[i]!).encode(pcm);
          packets.push(packet);
          sizes[i] = packet.length;
          total += packet.length;
        } catch (err) {
          sizes[i] = -1;
          errors[m.ids[i]!] = err instanceof Error ? err.message : String(err);
        }
      }
      // A dedicated buffer (not Node's shared pool) so it can be transferred.
      const data = new Uint8Array(total);
      let at = 0;
      for (const p of packets) {
        data.set(p, at);
        at += p.length;
      }
      framesEncoded += m.ids.length;
      encodeMs += performance.now() - t0;
      post({ type: 'encoded', ids: m.ids, sizes, data, errors }, [data.buffer as ArrayBuffer, sizes.buffer as ArrayBuffer]);
      break;
    }
    case 'close': {
      encoders.get(m.streamId)?.close();
      encoders.delete(m.streamId);
      break;
    }
    case 'lookahead': {
      const probe = new OpusWasmEncoder({ sampleRate: config.sampleRate, bitrate: config.bitrate, complexity: config.complexity });
      const samples = (probe.lookahead() * 48_000) / config.sampleRate;
      probe.close();
      post({ type: 'lookahead', id: m.id, samples });
      break;
    }
    case 'stats':
      post({ type: 'stats', id: m.id, streams: encoders.size, frames: framesEncoded, encodeMs });
      break;
  }
});
