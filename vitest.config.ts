import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/globalSetup.ts'],
    reporters: ['default', './test/support/summaryReporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: integration files share one S3 server and start their own mediasoup
    // workers, so a little parallelism helps and more only adds contention.
    maxWorkers: 2,
    pool: 'forks',
  },
});
