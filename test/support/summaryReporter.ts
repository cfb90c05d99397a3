import type { Reporter, TestModule } from 'vitest/node';
import { workerBinaryLine } from './workerBinary.ts';

/**
 * Ends the run with the plain closing line CI reads ("N passed, N failed, N skipped, N retried");
 * vitest's own summary is coloured and spread over several lines. A test that passed only on a
 * retry counts as passed AND retried, and is named above the line: the suite retries nothing by
 * default (vitest.config.ts), so a retried test is one that opted in with `{ retry }` because it
 * measures the machine, and a clean run shows 0 retried. The line before it names the mediasoup
 * worker binary the run used (the official prebuilt or the one built here).
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const retried: string[] = [];
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
        const retries = t.diagnostic()?.retryCount ?? 0;
        if (retries > 0) retried.push(`${m.moduleId.replace(`${process.cwd()}/`, '')} > ${t.fullName} (${retries} retr${retries === 1 ? 'y' : 'ies'}, ${state})`);
      }
      if (m.state() === 'failed' && ![...m.children.allTests()].some((t) => t.result().state === 'failed')) failed++; // a file that failed to load
    }
    for (const r of retried) console.log(`retried: ${r}`);
    console.log(workerBinaryLine());
    console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped, ${retried.length} retried`);
  }
}
