import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { G711Framer, G711_FRAME_SAMPLES, G711_TAIL_FRAME_SAMPLES, type G711FramerInput, type PcmFrame } from '../../../src/media/G711Framer.ts';
import { decodeAlaw, decodeUlaw, encodeAlaw, encodeUlaw } from '../../../src/media/g711.ts';
import { isOptinError } from '../../../src/errors/OptinError.ts';

const tone = (n: number, phase = 0): number[] => Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * (i + phase)) / 8000)));
const packet = (payload: Uint8Array): G711FramerInput => ({ kind: 'packet', payload, samples: payload.length });
const gap = (samples: number): G711FramerInput => ({ kind: 'gap', samples });
const END: G711FramerInput = { kind: 'end' };

function run(framer: G711Framer, inputs: readonly G711FramerInput[]): PcmFrame[] {
  return inputs.flatMap((i) => [...framer.processInput(i)]);
}

/**
 * The framing TrackRecorder did inline before the framer existed (copied from it): 60 ms frames,
 * the tail in 20 ms frames, the last one padded. The framer must produce the same samples.
 */
function referenceFraming(codec: 'pcmu' | 'pcma', inputs: readonly G711FramerInput[]): Int16Array[] {
  const decode = codec === 'pcmu' ? decodeUlaw : decodeAlaw;
  const out: Int16Array[] = [];
  const pcmBuf = new Int16Array(480);
  let fill = 0;
  const append = (pcm: Int16Array | undefined, count: number): void => {
    let offset = 0;
    while (offset < count) {
      const n = Math.min(480 - fill, count - offset);
      if (pcm) pcmBuf.set(pcm.subarray(offset, offset + n), fill);
      else pcmBuf.fill(0, fill, fill + n);
      fill += n;
      offset += n;
      if (fill === 480) {
        out.push(pcmBuf.slice());
        fill = 0;
      }
    }
  };
  for (const input of inputs) {
    if (input.kind === 'packet') append(decode(input.payload), input.samples);
    else if (input.kind === 'gap') append(undefined, input.samples);
    else {
      for (let off = 0; off < fill; off += 160) {
        const tail = new Int16Array(160);
        tail.set(pcmBuf.subarray(off, Math.min(off + 160, fill)));
        out.push(tail);
      }
      fill = 0;
    }
  }
  return out;
}

describe('G711Framer', () => {
  it('turns 20 ms packets into 60 ms frames of decoded PCM, with their positions', () => {
    const framer = new G711Framer('pcmu');
    const samples = tone(960);
    const packets = [0, 1, 2, 3, 4, 5].map((k) => encodeUlaw(samples.slice(k * 160, (k + 1) * 160)));
    expect(framer.processInput(packet(packets[0]!))).toEqual([]);
    expect(framer.processInput(packet(packets[1]!))).toEqual([]);
    const [first, ...more] = framer.processInput(packet(packets[2]!));
    expect(more).toEqual([]);
    expect(first!.startSample).toBe(0);
    expect(first!.tail).toBe(false);
    expect(first!.pcm).toEqual(decodeUlaw(encodeUlaw(samples.slice(0, 480))));
    const rest = run(framer, packets.slice(3).map(packet));
    expect(rest.map((f) => [f.startSample, f.pcm.length, f.tail])).toEqual([[480, G711_FRAME_SAMPLES, false]]);
    expect(framer.buffered).toBe(0);
  });

  it('decodes A-law too', () => {
    const samples = tone(480, 17);
    const frames = run(new G711Framer('pcma'), [packet(encodeAlaw(samples))]);
    expect(frames[0]!.pcm).toEqual(decodeAlaw(encodeAlaw(samples)));
  });

  it('turns gaps into silence of the same length; a long gap completes several frames', () => {
    const framer = new G711Framer('pcmu');
    const speech = encodeUlaw(tone(160));
    const frames = run(framer, [packet(speech), gap(1000), packet(speech)]);
    // 160 + 1000 + 160 = 1320 samples: two full frames (960), 360 waiting.
    expect(frames.map((f) => f.startSample)).toEqual([0, 480]);
    expect(frames[0]!.pcm.subarray(0, 160)).toEqual(decodeUlaw(speech));
    expect(frames[0]!.pcm.subarray(160).every((v) => v === 0)).toBe(true);
    expect(frames[1]!.pcm.every((v) => v === 0)).toBe(true);
    expect(framer.buffered).toBe(360);
  });

  it('flushes the tail at end in 20 ms frames, padding only the last one', () => {
    const framer = new G711Framer('pcmu');
    const speech = encodeUlaw(tone(200));
    expect(run(framer, [packet(speech)])).toEqual([]);
    const tail = framer.processInput(END);
    expect(tail.map((f) => [f.startSample, f.pcm.length, f.tail])).toEqual([
      [0, G711_TAIL_FRAME_SAMPLES, true],
      [160, G711_TAIL_FRAME_SAMPLES, true],
    ]);
    expect(tail[1]!.pcm.subarray(0, 40)).toEqual(decodeUlaw(speech).subarray(160));
    expect(tail[1]!.pcm.subarray(40).every((v) => v === 0)).toBe(true);
    expect(framer.processInput(END)).toEqual([]); // nothing left
    // The framer goes on after an end: positions continue on the output timeline.
    expect(run(framer, [gap(480)]).map((f) => f.startSample)).toEqual([320]);
    expect(framer.toJSON()).toEqual({
      codec: 'pcmu',
      packets: 1,
      gaps: 1,
      inputSamples: 680,
      silenceSamples: 480,
      frames: 1,
      tailFrames: 2,
      paddingSamples: 120,
      bufferedSamples: 0,
      position: 800,
    });
  });

  it('hands every frame over as its own buffer', () => {
    const framer = new G711Framer('pcmu');
    const frames = run(framer, [packet(encodeUlaw(tone(960))), gap(100), END]);
    const buffers = new Set(frames.map((f) => f.pcm.buffer));
    expect(buffers.size).toBe(frames.length);
  });

  it('a packet shorter than its duration is completed with silence', () => {
    const framer = new G711Framer('pcmu');
    const [frame] = run(framer, [{ kind: 'packet', payload: encodeUlaw(tone(100)), samples: 480 }]);
    expect(frame!.pcm.subarray(100).every((v) => v === 0)).toBe(true);
  });

  it('refuses frame sizes that are not positive integers', () => {
    for (const o of [{ frameSamples: 0 }, { tailFrameSamples: 2.5 }, { frameSamples: -160 }]) {
      let caught: unknown;
      try {
        new G711Framer('pcmu', o);
      } catch (err) {
        caught = err;
      }
      expect(isOptinError(caught, 'TRANSCODER_INVALID_OPTIONS')).toBe(true);
    }
  });

  it('frames exactly as the recorder did inline (any packets, gaps and run ends)', () => {
    const input = fc.oneof(
      fc.integer({ min: 1, max: 400 }).map((n): G711FramerInput => packet(encodeUlaw(tone(n, n)))),
      fc.integer({ min: 0, max: 2000 }).map(gap),
      fc.constant(END),
    );
    fc.assert(
      fc.property(fc.constantFrom('pcmu' as const, 'pcma' as const), fc.array(input, { maxLength: 60 }), (codec, inputs) => {
        const framer = new G711Framer(codec);
        const frames = run(framer, inputs);
        const want = referenceFraming(codec, inputs);
        expect(frames.map((f) => f.pcm)).toEqual(want);
        // Positions are the running sum of the frames before.
        let at = 0;
        for (const f of frames) {
          expect(f.startSample).toBe(at);
          at += f.pcm.length;
        }
        expect(framer.toJSON().position).toBe(at);
      }),
      { numRuns: 300 },
    );
  });
});
