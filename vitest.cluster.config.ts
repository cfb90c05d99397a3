import { defineConfig } from 'vitest/config';

/**
 * `npm run test:cluster` (CI runs it after `npm test`): the cluster test, which starts its own
 * replicated Ceph cluster, PostgreSQL pair and control-plane replicas (test/integration/cluster/).
 * Its files end in `.cluster.ts`, so the main run (`*.test.ts`) never picks them up: the cluster
 * holds the machine's two cores for a few minutes and must not run beside the other files.
 */
export default defineConfig({
  test: {
    include: ['test/integration/cluster/**/*.cluster.ts'],
    globalSetup: ['test/support/clusterGlobalSetup.ts'],
    testTimeout: 300_000,
    hookTimeout: 400_000,
    maxWorkers: 1,
    pool: 'forks',
    reporters: ['default'],
  },
});
