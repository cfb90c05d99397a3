/**
 * Fuzzing the pure media path with fast-check: random and mutated RTP
 * through parseRtp -> JitterBuffer -> Segmenter. Nothing may throw, the
 * reorder ring may never exceed its bound, every drop is counted, time is
 * conserved between the jitter buffer and the segmenter, and every segment
 * is a well-formed Ogg Opus file.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseRtp } from '../../../src/rtp/RtpPacket.ts';
import { extendTs } from '../../../src/rtp/sequence.ts';
import { readRtpCapture } from '../../../src/rtp/RtpCapture.ts';
import { JitterBuffer, codecTiming, type PushResult } from '../../../src/media/JitterBuffer.ts';
import { Segmenter } from '../../../src/media/Segmenter.ts';
import { readOggOpus } from '../../../src/media/OggOpusReader.ts';
import { seeded } from '../../support/property.ts';

const capture = readRtpCapture(readFileSync(new URL('../../../media-fixtures/rtp/opus-lossy-wrap.rtpcap', import.meta.url)));
const valid = capture.records.map((r) => r.packet);

/** One step of input: a packet (bytes) arriving `dt` ms after the previous step, maybe followed by a tick. */
interface Step {
  bytes: Uint8Array;
  dt: number;
  tick: boolean;
}

type Mutation =
  | { kind: 'same' }
  | { kind: 'flip'; at: number[]; bit: number }
  | { kind: 'cut'; keep: number }
  | { kind: 'field'; field: 0 | 2 | 4 | 8; value: number }
  | { kind: 'grow'; extra: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  // a valid packet, untouched
  fc.constant<Mutation>({ kind: 'same' }),
  // flip some bits anywhere (header or payload)
  fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), bit: fc.integer({ min: 0, max: 7 }) }),
  // truncate
  fc.record({ kind: fc.constant('cut' as const), keep: fc.nat() }),
  // rewrite a header field: first byte (V/P/X/CC), seq, ts, ssrc
  fc.record({ kind: fc.constant('field' as const), field: fc.constantFrom(0 as const, 2 as const, 4 as const, 8 as const), value: fc.nat({ max: 0xffffffff }) }),
  // append garbage
  fc.record({ kind: fc.constant('grow' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
);

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ i: fc.nat(), m: mutation, dt: fc.integer({ min: 0, max: 60 }), tick: fc.boolean() }).map(({ i, m, dt, tick }) => ({ bytes: mutate(valid[i % valid.length]!, m), dt, tick })) },
  { weight: 1, arbitrary: fc.record({ bytes: fc.uint8Array({ maxLength: 120 }), dt: fc.integer({ min: 0, max: 60 }), tick: fc.boolean() }) },
  // a long stall (network outage or a paused process)
  { weight: 1, arbitrary: fc.record({ i: fc.nat(), dt: fc.integer({ min: 100, max: 20_000 }) }).map(({ i, dt }) => ({ bytes: valid[i % valid.length]!, dt, tick: true })) },
);

function mutate(src: Uint8Array, m: Mutation): Uint8Array {
  const b = Buffer.from(src);
  switch (m.kind) {
    case 'flip':
      for (const at of m.at) b[at % b.length] = b[at % b.length]! ^ (1 << m.bit);
      return b;
    case 'cut':
      return b.subarray(0, m.keep % (b.length + 1));
    case 'field':
      if (m.field === 0) b[0] = m.value & 0xff;
      else if (m.field === 2) b.writeUInt16BE(m.value & 0xffff, 2);
      else b.writeUInt32BE(m.value >>> 0, m.field);
      return b;
    case 'grow':
      return Buffer.concat([b, m.extra]);
    case 'same':
      return b;
  }
}

describe('media path fuzz (fast-check)', () => {
  it('random and mutated RTP: no throw, bounded buffer, counted drops, conserved time, valid Ogg', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 400, size: 'max' }), fc.integer({ min: 1, max: 64 }), (steps, maxDepth) => {
        const jb = new JitterBuffer({ ...codecTiming('opus'), maxDepth });
        const seg = new Segmenter({ serial: 1, segmentSamples: 48_000 });
        const results = new Map<PushResult, number>();
        let now = 0;
        let emitted = 0;
        let segSamples = 0;
        let pushes = 0;
        let malformed = 0;
        const consume = (flush: boolean): void => {
          for (const item of jb.pull(now, { flush })) {
            expect(item.samples).toBeGreaterThan(0);
            emitted += item.samples;
            for (const s of seg.push(item)) {
              segSamples += s.samples;
              expect(readOggOpus(s.ogg).packets.length).toBe(s.packets);
            }
          }
        };
        for (const s of steps) {
          now += s.dt;
          const parsed = parseRtp(s.bytes);
          if (!parsed.ok) malformed++;
          else {
            const p = parsed.packet;
            const r = jb.push({ seq: p.sequenceNumber, ts: p.timestamp, ssrc: p.ssrc, marker: p.marker, payload: p.payload }, now);
            pushes++;
            results.set(r, (results.get(r) ?? 0) + 1);
          }
          expect(jb.depth).toBeLessThanOrEqual(maxDepth);
          expect(jb.readyPackets).toBeLessThanOrEqual(2 * 64);
          if (s.tick) consume(false);
        }
        consume(true);
        const last = seg.close();
        if (last) {
          segSamples += last.samples;
          readOggOpus(last.ogg);
        }
        // Every packet is accounted for, and every drop reason matches the push results.
        const st = jb.stats;
        expect(st.received).toBe(pushes);
        expect(st.dropped.duplicate).toBe(results.get('duplicate') ?? 0);
        expect(st.dropped.late).toBe(results.get('late') ?? 0);
        expect(st.dropped.invalid).toBe(results.get('invalid') ?? 0);
        expect(st.dropped['stale-ssrc']).toBe(results.get('stale-ssrc') ?? 0);
        expect(st.dropped.probation).toBeLessThanOrEqual(results.get('probation') ?? 0);
        expect(st.emitted).toBeLessThanOrEqual(pushes);
        expect(malformed + pushes).toBe(steps.length);
        // Time is conserved: what the jitter buffer emitted is in the segments (minus < 2.5 ms of gap carry).
        expect(emitted - segSamples).toBeGreaterThanOrEqual(0);
        expect(emitted - segSamples).toBeLessThan(120);
        expect(seg.position).toBe(segSamples);
      }),
      seeded({ numRuns: Number(process.env.OPTIN_FUZZ_RUNS ?? 250) }),
    );
  });

  it('valid but shuffled, duplicated and thinned streams: the timeline never shrinks below what was sent', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ keep: fc.boolean(), jitter: fc.integer({ min: 0, max: 80 }), dup: fc.boolean() }), { minLength: valid.length, maxLength: valid.length }),
        (plan) => {
          // Rebuild an arrival schedule over the valid capture: drop some, delay some, duplicate some.
          const arrivals: { at: number; bytes: Uint8Array }[] = [];
          capture.records.forEach((r, i) => {
            const p = plan[i]!;
            if (!p.keep && i > 1) return;
            arrivals.push({ at: r.arrivalMs + p.jitter, bytes: r.packet });
            if (p.dup) arrivals.push({ at: r.arrivalMs + p.jitter + 3, bytes: r.packet });
          });
          arrivals.sort((a, b) => a.at - b.at);
          const jb = new JitterBuffer({ ...codecTiming('opus'), maxHoldMs: 100 });
          let total = 0;
          let ref: number | undefined;
          let first: number | undefined;
          let end = 0;
          const eat = (items: ReturnType<JitterBuffer['pull']>): void => {
            for (const it of items) {
              total += it.samples;
              if (it.kind !== 'packet') continue;
              // Extended timestamps: the fixture's timestamps wrap past 2^32.
              const ext = ref === undefined ? it.rtpTs : extendTs(it.rtpTs, ref);
              ref = ext;
              first ??= ext;
              end = ext + it.samples;
            }
          };
          for (const a of arrivals) {
            eat(jb.pull(a.at));
            const p = parseRtp(a.bytes);
            if (!p.ok) throw new Error('fixture packet malformed');
            jb.push({ seq: p.packet.sequenceNumber, ts: p.packet.timestamp, ssrc: p.packet.ssrc, marker: p.packet.marker, payload: p.packet.payload }, a.at);
          }
          eat(jb.pull(1e12, { flush: true }));
          // The timeline spans exactly the sender's time from the first to the last emitted packet.
          expect(total).toBe(end - first!);
          expect(jb.stats.emitted + jb.stats.lost).toBe(jb.stats.expected);
        },
      ),
      seeded({ numRuns: 60 }),
    );
  });
});
