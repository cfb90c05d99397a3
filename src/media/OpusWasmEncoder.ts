/**
 * A thin Opus encoder over opusscript's WebAssembly build of libopus, used
 * inside transcoder threads (never on the main event loop).
 *
 * Why not `new OpusScript(...)`: its wrapper caches typed-array views of
 * the WASM heap when an instance is created, and the heap is replaced when
 * it grows; after a few dozen instances in one thread, older instances
 * throw "detached ArrayBuffer" on encode. Here every call reads the
 * module's current heap views, so any number of streams can share one
 * thread's heap. It also exposes encoder CTLs that read values back
 * (OPUS_GET_LOOKAHEAD for the Ogg pre-skip).
 *
 * Protocol of the native `_encode(inPtr, bytes, outPtr, frameSize)` (see
 * opusscript's opusscript_encoder.cpp): the input buffer holds the PCM as
 * little-endian BYTES, one per 16-bit heap slot, which the C side packs back
 * into samples in place before calling opus_encode().
 */
import { createRequire } from 'node:module';
import { OptinError } from '../errors/OptinError.ts';

/** libopus request codes (opus_defines.h). */
export const OPUS_SET_BITRATE = 4002;
export const OPUS_SET_COMPLEXITY = 4010;
export const OPUS_SET_SIGNAL = 4024;
export const OPUS_GET_LOOKAHEAD = 4027;
export const OPUS_SIGNAL_VOICE = 3001;
export const OPUS_APPLICATION_VOIP = 2048;

/** libopus MAX packet size used by opusscript's native side. */
const MAX_PACKET_BYTES = 1276 * 3;

interface NativeHandler {
  _encode(inPtr: number, bytes: number, outPtr: number, frameSize: number): number;
  _encoder_ctl(request: number, arg: number): number;
}

interface NativeModule {
  HEAPU8: Uint8Array;
  HEAPU16: Uint16Array;
  HEAP32: Int32Array;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  OpusScriptHandler: {
    new (sampleRate: number, channels: number, application: number): NativeHandler;
    destroy_handler(h: NativeHandler): void;
  };
}

let native: NativeModule | undefined;

/** The thread's single libopus instance (synchronous instantiation, one heap per thread). */
function loadNative(): NativeModule {
  if (!native) {
    const require = createRequire(import.meta.url);
    const factory = require('opusscript/build/opusscript_native_wasm.js') as () => NativeModule;
    native = factory();
  }
  return native;
}

export interface OpusWasmEncoderOptions {
  sampleRate: 8000 | 12000 | 16000 | 24000 | 48000;
  channels?: 1 | 2;
  application?: number;
  bitrate?: number;
  complexity?: number;
  /** Longest frame ever passed to `encode`, in samples per channel (default 60 ms). */
  maxFrameSamples?: number;
}

export class OpusWasmEncoder {
  readonly sampleRate: number;
  readonly channels: number;
  readonly #n: NativeModule;
  readonly #h: NativeHandler;
  readonly #inPtr: number;
  readonly #outPtr: number;
  readonly #maxFrameSamples: number;
  #closed = false;

  constructor(o: OpusWasmEncoderOptions) {
    this.#n = loadNative();
    this.sampleRate = o.sampleRate;
    this.channels = o.channels ?? 1;
    this.#maxFrameSamples = o.maxFrameSamples ?? (o.sampleRate * 60) / 1000;
    this.#h = new this.#n.OpusScriptHandler(o.sampleRate, this.channels, o.application ?? OPUS_APPLICATION_VOIP);
    // One 16-bit slot per input byte, and the native loop reads up to twice
    // that many slots (it packs pairs in place), hence 2 bytes x 2 x 2.
    this.#inPtr = this.#n._malloc(this.#maxFrameSamples * this.channels * 8);
    this.#outPtr = this.#n._malloc(MAX_PACKET_BYTES);
    if (o.bitrate !== undefined) this.ctl(OPUS_SET_BITRATE, o.bitrate);
    if (o.complexity !== undefined) this.ctl(OPUS_SET_COMPLEXITY, o.complexity);
    this.ctl(OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE);
  }

  /** Encodes one frame (2.5-60 ms of interleaved samples) into one Opus packet (a fresh Buffer). */
  encode(pcm: Int16Array): Buffer {
    if (this.#closed) throw new OptinError('OPUS_ENCODER_CLOSED', 'Opus encoder used after close()');
    const frame = pcm.length / this.channels;
    if (frame > this.#maxFrameSamples) throw new OptinError('OPUS_FRAME_TOO_LONG', `Opus frame of ${frame} samples exceeds ${this.#maxFrameSamples}`);
    const bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    // Read the heap views now: they are replaced whenever the heap grows.
    this.#n.HEAPU16.set(bytes, this.#inPtr >> 1);
    const len = this.#h._encode(this.#inPtr, bytes.length, this.#outPtr, frame);
    if (len < 0) throw new OptinError('OPUS_ENCODE_FAILED', `libopus encode error ${len} (frame of ${frame} samples at ${this.sampleRate} Hz must be 2.5-60 ms)`);
    return Buffer.from(this.#n.HEAPU8.subarray(this.#outPtr, this.#outPtr + len));
  }

  /** An OPUS_SET_* request with an integer argument. */
  ctl(request: number, value: number): void {
    const r = this.#h._encoder_ctl(request, value);
    if (r < 0) throw new OptinError('OPUS_CTL_FAILED', `libopus encoder ctl ${request} failed with ${r}`);
  }

  /** OPUS_GET_LOOKAHEAD: encoder delay in samples at the input rate (RFC 7845 §4.2 pre-skip source). */
  lookahead(): number {
    const ptr = this.#n._malloc(4);
    try {
      const r = this.#h._encoder_ctl(OPUS_GET_LOOKAHEAD, ptr);
      if (r < 0) throw new OptinError('OPUS_CTL_FAILED', `libopus OPUS_GET_LOOKAHEAD failed with ${r}`);
      return this.#n.HEAP32[ptr >> 2]!;
    } finally {
      this.#n._free(ptr);
    }
  }

  /** Frees the native encoder; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#n.OpusScriptHandler.destroy_handler(this.#h);
    this.#n._free(this.#inPtr);
    this.#n._free(this.#outPtr);
  }
}
