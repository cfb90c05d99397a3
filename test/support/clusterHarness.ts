import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from './controlProcess.ts';
import { TcpBalancer } from './tcpBalancer.ts';

/**
 * The distributed pieces of the cluster test (test/integration/cluster/), each killable:
 * the replicated Ceph cluster of scripts/ceph/cluster.sh (three OSDs, two gateways) behind a
 * balancer, and a PostgreSQL primary with a synchronous hot standby (scripts/pg/pg.sh) behind a
 * proxy that is pointed at the standby once it is promoted.
 */

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CEPH = path.join(ROOT, 'scripts/ceph/cluster.sh');
const PG = path.join(ROOT, 'scripts/pg/pg.sh');

async function sh(script: string, args: string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await run('bash', [script, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${path.relative(ROOT, script)} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

export interface CephCluster {
  /** The gateways' endpoints (two). */
  gateways: string[];
  /** One S3 endpoint for clients: the balancer in front of the gateways. */
  balancer: TcpBalancer;
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** The audit principal: a second RGW user (it owns the object-locked audit bucket). */
  auditAccessKey: string;
  auditSecretKey: string;
  /** SIGKILL one daemon: `osd 1`, `rgw a`. */
  kill(kind: 'osd' | 'rgw' | 'mon', id: string): Promise<void>;
  /** Resolves when exactly `n` OSDs are up (a killed one has been marked down). */
  waitOsdsUp(n: number): Promise<void>;
  /** Resolves when a write to every placement group of a probe pool returns. */
  waitIo(): Promise<void>;
  stop(): Promise<void>;
}

/** Stops every daemon of scripts/ceph/cluster.sh's cluster (a last resort after a failed run). */
export async function stopCephCluster(): Promise<void> {
  await sh(CEPH, ['stop'], 60_000);
}

export async function startCephCluster(): Promise<CephCluster> {
  // cluster.sh stops what it started when its start fails or is timed out.
  const out = await sh(CEPH, ['start'], 300_000);
  const env = Object.fromEntries([...out.matchAll(/^export (\w+)="?([^"\n]*)"?$/gm)].map((m) => [m[1]!, m[2]!]));
  const gateways = (env.OPTIN_CEPH_RGW_ENDPOINTS ?? '').split(' ').filter(Boolean);
  if (gateways.length !== 2) throw new Error(`scripts/ceph/cluster.sh start printed no two gateways:\n${out}`);
  const balancer = await TcpBalancer.start(gateways.map((g) => ({ host: new URL(g).hostname, port: Number(new URL(g).port) })));
  return {
    gateways,
    balancer,
    endpoint: balancer.url(),
    accessKey: env.OPTIN_S3_ACCESS_KEY!,
    secretKey: env.OPTIN_S3_SECRET_KEY!,
    auditAccessKey: env.OPTIN_S3_AUDIT_ACCESS_KEY!,
    auditSecretKey: env.OPTIN_S3_AUDIT_SECRET_KEY!,
    kill: async (kind, id) => void (await sh(CEPH, ['kill', kind, id], 30_000)),
    waitOsdsUp: async (n) => void (await sh(CEPH, ['wait-osds', String(n)], 120_000)),
    waitIo: async () => void (await sh(CEPH, ['wait-io'], 180_000)),
    stop: async () => {
      await balancer.close();
      await sh(CEPH, ['stop'], 60_000);
    },
  };
}

export interface PgPair {
  /** The database URL clients use: through the proxy, whichever node is primary. */
  url(database?: string): string;
  proxy: TcpBalancer;
  primaryPort: number;
  standbyPort: number;
  /** Direct admin URLs, for checks that must name one node. */
  primaryUrl: string;
  standbyUrl: string;
  /** SIGKILL the primary's postmaster. */
  crashPrimary(): Promise<void>;
  /** `pg_ctl promote` on the standby, then the proxy points at it. Returns the promotion's ms. */
  promoteStandby(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * The pair's one place on this machine (not under /root: the postgres user must reach it), so a
 * run that died before its clean-up is cleaned up by the next one, or by the global teardown.
 */
const PG_PAIR_BASE = path.join(os.tmpdir(), `optin-cluster-pg-${process.getuid?.() ?? 0}`);

/** Stops and removes the pair's clusters, whatever state a previous run left them in. */
export async function stopPgPair(): Promise<void> {
  for (const node of ['standby', 'primary']) {
    await sh(PG, ['stop', '--dir', path.join(PG_PAIR_BASE, node), '--remove'], 60_000).catch(() => undefined);
  }
  rmSync(PG_PAIR_BASE, { recursive: true, force: true });
}

/** A primary whose commits wait for the standby's flush, and a hot standby, both throwaway. */
export async function startPgPair(): Promise<PgPair> {
  await stopPgPair();
  mkdirSync(PG_PAIR_BASE, { recursive: true });
  chmodSync(PG_PAIR_BASE, 0o755); // run as root, pg.sh hands each data directory to the postgres user
  const primaryDir = path.join(PG_PAIR_BASE, 'primary');
  const standbyDir = path.join(PG_PAIR_BASE, 'standby');
  const primaryPort = await freePort();
  const standbyPort = await freePort();
  try {
    // --fast: no fsync (throwaway data); synchronous replication stays on (pg.sh keeps it for
    // --sync-standby), so an acknowledged commit is on the standby.
    await sh(PG, ['start', '--dir', primaryDir, '--port', String(primaryPort), '--fast', '--sync-standby', 'standby1'], 60_000);
    await sh(PG, ['standby', '--dir', standbyDir, '--port', String(standbyPort), '--primary-port', String(primaryPort), '--name', 'standby1', '--fast'], 120_000);
  } catch (err) {
    await stopPgPair();
    throw err;
  }
  const proxy = await TcpBalancer.start([{ host: '127.0.0.1', port: primaryPort }]);
  return {
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${proxy.port}/${database}`,
    proxy,
    primaryPort,
    standbyPort,
    primaryUrl: `postgres://postgres@127.0.0.1:${primaryPort}/postgres`,
    standbyUrl: `postgres://postgres@127.0.0.1:${standbyPort}/postgres`,
    crashPrimary: async () => void (await sh(PG, ['crash', '--dir', primaryDir], 30_000)),
    promoteStandby: async () => {
      const t = Date.now();
      await sh(PG, ['promote', '--dir', standbyDir], 90_000);
      proxy.setTargets([{ host: '127.0.0.1', port: standbyPort }]);
      return Date.now() - t;
    },
    stop: async () => {
      await proxy.close();
      await stopPgPair();
    },
  };
}
