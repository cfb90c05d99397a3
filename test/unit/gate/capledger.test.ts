import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CapLedger, type CapStore } from '../../../src/gate/CapLedger.ts';
import { monthKey } from '../../../src/gate/month.ts';
import { PolicyState } from '../../../src/gate/PolicyState.ts';
import { decideGate } from '../../../src/gate/decideGate.ts';
import { seeded } from '../../support/property.ts';

/**
 * The cap ledger's admission protocol against an in-memory, strongly
 * consistent object store whose every operation completes when a fast-check
 * scheduler says so: many workers admitting at once, in every interleaving,
 * with skewed clocks, never admit more than the cap.
 * (test/integration/gate/capledger-s3.test.ts runs the same ledger against the real S3 server.)
 */

class MemoryStore {
  readonly objects = new Set<string>();
  constructor(private readonly wrap: <T>(label: string, f: () => T) => Promise<T> = async (_l, f) => f()) {}

  asStore(): CapStore {
    const store: Pick<CapStore, 'putObject' | 'removeObject'> & { listObjectsV2: (b: string, prefix?: string) => Readable } = {
      putObject: ((_bucket: string, name: string) => this.wrap(`put ${name}`, () => {
        this.objects.add(name);
        return { etag: 'x', versionId: null };
      })) as unknown as CapStore['putObject'],
      removeObject: ((_bucket: string, name: string) => this.wrap(`delete ${name}`, () => {
        this.objects.delete(name);
      })) as unknown as CapStore['removeObject'],
      // The listing is taken when the scheduler lets the LIST complete, as a strongly consistent store would.
      listObjectsV2: (_bucket: string, prefix = '') => {
        const listing = this.wrap(`list ${prefix}`, () => [...this.objects].filter((n) => n.startsWith(prefix)).map((name) => ({ name })));
        return Readable.from((async function* () {
          yield* await listing;
        })());
      },
    };
    return store as unknown as CapStore;
  }
}

const T = Date.UTC(2025, 5, 10, 12, 0, 0);
const noDelay = { retryDelayMs: 0 };

describe('CapLedger', () => {
  it('admits up to the cap, then refuses; counts per agent and month; is idempotent', async () => {
    const mem = new MemoryStore();
    const ledger = new CapLedger({ client: mem.asStore(), bucket: 'keys', capFor: () => 2, ...noDelay });
    expect(await ledger.admit('agent-1', 'r_1', T)).toBe(true);
    expect(await ledger.admit('agent-1', 'r_1', T)).toBe(true); // same recording again: no new slot
    expect(await ledger.admit('agent-1', 'r_2', T + 1)).toBe(true);
    expect(await ledger.admit('agent-1', 'r_3', T + 2)).toBe(false);
    expect(await ledger.admit('agent-2', 'r_4', T)).toBe(true);
    expect(await ledger.admit('agent-1', 'r_5', Date.UTC(2025, 6, 1))).toBe(true); // a new month
    expect(await ledger.count('agent-1', monthKey(T))).toBe(2);
    expect([...mem.objects].sort()).toEqual([
      `caps/agent-1/2025-06/${String(T).padStart(15, '0')}-r_1`,
      `caps/agent-1/2025-06/${String(T + 1).padStart(15, '0')}-r_2`,
      `caps/agent-1/2025-07/${String(Date.UTC(2025, 6, 1)).padStart(15, '0')}-r_5`,
      `caps/agent-2/2025-06/${String(T).padStart(15, '0')}-r_4`,
    ]);
    await ledger.release('agent-1', 'r_2', T);
    expect(await ledger.admit('agent-1', 'r_3', T + 3)).toBe(true);
  });

  it('refuses without a schedule or with a cap of zero, and rejects bad ids', async () => {
    const ledger = new CapLedger({ client: new MemoryStore().asStore(), bucket: 'keys', capFor: (a) => (a === 'zero' ? 0 : undefined) });
    expect(await ledger.admit('nobody', 'r_1', T)).toBe(false);
    expect(await ledger.admit('zero', 'r_1', T)).toBe(false);
    await expect(ledger.admit('../etc', 'r_1', T)).rejects.toThrow(/agentId must match/);
  });

  it('turns store failures into a retryable error and leaves no marker behind', async () => {
    const mem = new MemoryStore(async (label, f) => {
      if (label.startsWith('list') && mem.objects.size > 0) throw new Error('connection reset');
      return f();
    });
    const ledger = new CapLedger({ client: mem.asStore(), bucket: 'keys', capFor: () => 5 });
    await expect(ledger.admit('agent-1', 'r_1', T)).rejects.toMatchObject({ code: 'CAP_LEDGER_UNAVAILABLE', retryable: true });
    expect(mem.objects.size).toBe(0);
  });

  it('admitCall admits every agent or none, and feeds the PolicyState', async () => {
    const mem = new MemoryStore();
    const state = new PolicyState();
    const window = { start: T - 1000, end: T + 3_600_000 };
    state.applySnapshot([], [
      { agentId: 'A', windows: [window], monthlyCap: 1 },
      { agentId: 'B', windows: [window], monthlyCap: 5 },
    ]);
    const ledger = new CapLedger({ client: mem.asStore(), bucket: 'keys', capFor: (a) => state.schedule(a)?.monthlyCap, ...noDelay });
    const call = (callId: string, agents: string[]): void => {
      state.applyFact({
        type: 'call.started',
        callId,
        participants: [...agents.map((a, i) => ({ participantId: `${callId}-a${i}`, role: 'agent' as const, subjectId: a })), { participantId: `${callId}-k`, role: 'customer', subjectId: 'K' }],
      });
      state.applyFact({ type: 'consent.granted', callId, participantId: `${callId}-k`, evidence: { method: 'dtmf', at: T, infoVersion: 'v1' } });
    };
    call('c1', ['A']);
    expect(decideGate(state, 'c1', T)).toMatchObject({ open: true, needsAdmission: true });
    expect(await ledger.admitCall(state, 'c1', 'r_c1', T)).toBe(true);
    expect(decideGate(state, 'c1', T)).toMatchObject({ open: true, needsAdmission: false });

    call('c2', ['B', 'A']); // A is at its cap: B's admission must be given back
    state.setMonthlyCount('A', monthKey(T), 0); // pretend our local count is stale: the ledger decides
    expect(await ledger.admitCall(state, 'c2', 'r_c2', T)).toBe(false);
    expect(decideGate(state, 'c2', T).reasons).toEqual(['cap-reached']);
    expect(await ledger.count('B', monthKey(T))).toBe(0);
  });

  it('never admits more than the cap, whatever the interleaving and clock skew', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.integer({ min: -50, max: 50 }), { minLength: 1, maxLength: 7 }),
        async (s, cap, existing, skews) => {
          const mem = new MemoryStore((label, f) => s.schedule(Promise.resolve(label)).then(() => f()));
          for (let i = 0; i < existing; i++) mem.objects.add(`caps/agent-1/2025-06/${String(T - 1000 + i).padStart(15, '0')}-r_old${i}`);
          const ledgers = skews.map(() => new CapLedger({ client: mem.asStore(), bucket: 'keys', capFor: () => cap, retries: 2, retryDelayMs: 0 }));
          const results = ledgers.map((ledger, i) => ledger.admit('agent-1', `r_${i}`, T + skews[i]!));
          const admitted = (await s.waitFor(Promise.all(results))).filter(Boolean).length;
          const total = existing + admitted;
          // Safety: never beyond the cap (existing markers already count).
          expect(total).toBeLessThanOrEqual(Math.max(cap, existing));
          // Every refused contender cleaned up after itself.
          expect(mem.objects.size).toBe(total);
        },
      ),
      seeded({ numRuns: 300 }),
    );
  });

  it('without contention, admits exactly up to the cap', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 8 }), async (cap, n) => {
        const ledger = new CapLedger({ client: new MemoryStore().asStore(), bucket: 'keys', capFor: () => cap, ...noDelay });
        let admitted = 0;
        for (let i = 0; i < n; i++) if (await ledger.admit('agent-1', `r_${i}`, T + i)) admitted++;
        expect(admitted).toBe(Math.min(cap, n));
      }),
      seeded(),
    );
  });
});
