import { stopCephCluster, stopPgPair } from './clusterHarness.ts';

/**
 * The cluster run's last line of defence (vitest.cluster.config.ts): whatever the test's own
 * afterAll could not stop (a hook that threw, a run interrupted by Ctrl-C) is stopped here, so no
 * Ceph daemon or PostgreSQL server outlives `npm run test:cluster`. Both stops are idempotent and
 * touch only this run's daemons (cluster.sh finds them by its own configuration file).
 */
export async function teardown(): Promise<void> {
  await Promise.all([stopCephCluster().catch((err: Error) => console.error(err.message)), stopPgPair()]);
}
