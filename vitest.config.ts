import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/globalSetup.ts'],
    reporters: ['default', './test/support/summaryReporter.ts'],
    testTimeout: 60_000,
    // In CI, a failed test is retried once: the integration tests run real-time media through real
    // processes on two shared cores, where a timer can fire tens of ms late. A test that fails
    // twice fails the run; the retry is reported in vitest's output.
    retry: process.env.CI ? 1 : 0,
    hookTimeout: 120_000,
    // Two cores: integration files share one S3 server and start their own mediasoup
    // workers, so a little parallelism helps and more only adds contention.
    maxWorkers: 2,
    pool: 'forks',
  },
});
