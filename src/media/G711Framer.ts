/**
 * A G.711 track's timeline cut into the PCM frames the Opus encoder is fed.
 *
 * Pure, in the style of werift's processors: `processInput(input)` returns what the input
 * completed, with no I/O, no timers and no clock; `toJSON()` gives its counters. Input is the
 * jitter buffer's timeline at 8 kHz (RFC 3551 §4.5.14: one G.711 byte per sample): packets are
 * decoded to 16-bit linear PCM (µ-law or A-law, ITU-T G.711), gaps become PCM silence of the
 * same length, so time never shrinks. Output frames are exactly `frameSamples` long; `end`
 * flushes what is left in `tailFrameSamples` frames, the last one padded with silence.
 */
import { OptinError } from '../errors/OptinError.ts';
import { decodeAlaw, decodeUlaw } from './g711.ts';

/**
 * 60 ms at 8 kHz: the frame handed to the Opus encoder. Recording has no latency budget to spend
 * on short frames, and 60 ms frames cost a quarter to half less CPU and a third of the Ogg lacing
 * overhead of 20 ms ones (measured by src/media/benchTranscode.ts and test/unit/media/ogg.test.ts).
 */
export const G711_FRAME_SAMPLES = 480;
/** The tail of a run is encoded in 20 ms frames, so padding never adds more than 20 ms. */
export const G711_TAIL_FRAME_SAMPLES = 160;

export type G711Codec = 'pcmu' | 'pcma';

export type G711FramerInput =
  /** Decoded G.711 payload; `samples` is its duration (the payload length). */
  | { readonly kind: 'packet'; readonly payload: Uint8Array; readonly samples: number }
  /** Missing media time (loss, silence suppression, a re-anchor): becomes PCM silence. */
  | { readonly kind: 'gap'; readonly samples: number }
  /** The end of the run: flush what waits as tail frames. */
  | { readonly kind: 'end' };

export interface PcmFrame {
  /** 8 kHz 16-bit PCM, the caller's to keep (never reused by the framer). */
  readonly pcm: Int16Array;
  /** Position of the frame's first sample on the framer's output timeline (8 kHz samples). */
  readonly startSample: number;
  /** One of the short frames that flush a run's tail at `end`. */
  readonly tail: boolean;
}

export interface G711FramerStats {
  codec: G711Codec;
  packets: number;
  gaps: number;
  /** Timeline samples taken in (packets and gaps). */
  inputSamples: number;
  /** Of `inputSamples`: gap time turned into silence. */
  silenceSamples: number;
  frames: number;
  tailFrames: number;
  /** Silence added to complete the last tail frame of each `end`. */
  paddingSamples: number;
  /** Samples waiting for a full frame. */
  bufferedSamples: number;
  /** Samples emitted in frames so far (the next frame's `startSample`). */
  position: number;
}

export interface G711FramerOptions {
  frameSamples?: number;
  tailFrameSamples?: number;
}

const NO_FRAMES: readonly PcmFrame[] = Object.freeze([]);

export class G711Framer {
  readonly codec: G711Codec;
  readonly frameSamples: number;
  readonly tailFrameSamples: number;
  readonly #decode: (src: Uint8Array, out: Int16Array) => Int16Array;
  #buf: Int16Array;
  #fill = 0;
  #out: PcmFrame[] = [];
  readonly #stats = { packets: 0, gaps: 0, inputSamples: 0, silenceSamples: 0, frames: 0, tailFrames: 0, paddingSamples: 0, position: 0 };

  constructor(codec: G711Codec, options: G711FramerOptions = {}) {
    const frameSamples = options.frameSamples ?? G711_FRAME_SAMPLES;
    const tailFrameSamples = options.tailFrameSamples ?? G711_TAIL_FRAME_SAMPLES;
    if (!Number.isInteger(frameSamples) || frameSamples <= 0 || !Number.isInteger(tailFrameSamples) || tailFrameSamples <= 0) {
      throw new OptinError('TRANSCODER_INVALID_OPTIONS', `G.711 frame sizes must be positive integers, got ${frameSamples} and ${tailFrameSamples}`);
    }
    this.codec = codec;
    this.frameSamples = frameSamples;
    this.tailFrameSamples = tailFrameSamples;
    this.#decode = codec === 'pcmu' ? decodeUlaw : decodeAlaw;
    this.#buf = new Int16Array(frameSamples);
  }

  /**
   * Takes one timeline item (or `end`); returns the frames it completed, in order: usually none
   * or one, several for a long gap. The returned array is the caller's (or a shared empty one).
   */
  processInput(input: G711FramerInput): readonly PcmFrame[] {
    const s = this.#stats;
    if (input.kind === 'packet') {
      s.packets++;
      s.inputSamples += input.samples;
      this.#append(input.payload, input.samples);
    } else if (input.kind === 'gap') {
      s.gaps++;
      s.inputSamples += input.samples;
      s.silenceSamples += input.samples;
      this.#append(undefined, input.samples);
    } else {
      this.#flushTail();
    }
    if (this.#out.length === 0) return NO_FRAMES;
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /** Samples waiting for a full frame (flushed by `end`). */
  get buffered(): number {
    return this.#fill;
  }

  toJSON(): G711FramerStats {
    return { codec: this.codec, ...this.#stats, bufferedSamples: this.#fill };
  }

  /**
   * Appends `count` samples: `payload` decoded (any samples it lacks are silence), or silence
   * when it is undefined. Decodes straight into the frame being filled: no per-packet buffer.
   */
  #append(payload: Uint8Array | undefined, count: number): void {
    let offset = 0;
    while (offset < count) {
      const n = Math.min(this.frameSamples - this.#fill, count - offset);
      const dst = this.#buf.subarray(this.#fill, this.#fill + n);
      const have = payload === undefined ? 0 : Math.max(0, Math.min(n, payload.length - offset));
      if (have > 0) this.#decode(payload!.subarray(offset, offset + have), dst);
      if (have < n) dst.fill(0, have);
      this.#fill += n;
      offset += n;
      if (this.#fill === this.frameSamples) {
        // Hand the full buffer over and start a new one (one allocation per frame, no copy).
        this.#emit(this.#buf, false);
        this.#buf = new Int16Array(this.frameSamples);
        this.#fill = 0;
      }
    }
  }

  #flushTail(): void {
    for (let off = 0; off < this.#fill; off += this.tailFrameSamples) {
      const tail = new Int16Array(this.tailFrameSamples);
      const end = Math.min(off + this.tailFrameSamples, this.#fill);
      tail.set(this.#buf.subarray(off, end));
      this.#stats.paddingSamples += this.tailFrameSamples - (end - off);
      this.#emit(tail, true);
    }
    this.#fill = 0;
  }

  #emit(pcm: Int16Array, tail: boolean): void {
    this.#out.push({ pcm, startSample: this.#stats.position, tail });
    this.#stats.position += pcm.length;
    if (tail) this.#stats.tailFrames++;
    else this.#stats.frames++;
  }
}
