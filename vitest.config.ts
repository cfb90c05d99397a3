import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/globalSetup.ts'],
    reporters: ['default', './test/support/summaryReporter.ts'],
    testTimeout: 60_000,
    // No retries: a test that fails fails the run, in CI as anywhere (gate, consent, deletion and
    // audit tests above all). A test that measures the machine itself (timing on two shared cores)
    // may opt in with `it(name, { retry: 1 }, fn)` and a comment saying why; the closing line
    // (test/support/summaryReporter.ts) counts and names every retried test.
    retry: 0,
    hookTimeout: 120_000,
    // Two cores: integration files share one S3 server and start their own mediasoup
    // workers, so a little parallelism helps and more only adds contention.
    maxWorkers: 2,
    pool: 'forks',
  },
});
