/**
 * CPU and memory of processes, read from /proc (Linux): the benchmark measures every process
 * it cares about from the outside, the same way for ours, the floor, ffmpeg and the load
 * generator, so none of them can flatter itself.
 *
 * - CPU: utime + stime of /proc/<pid>/stat (and per thread from /proc/<pid>/task/<tid>/stat),
 *   in clock ticks (USER_HZ, 100 on Linux), turned into seconds. Two samples make a rate.
 * - Memory: VmRSS from /proc/<pid>/status and Private_Clean + Private_Dirty from
 *   /proc/<pid>/smaps_rollup: what the process alone holds (shared libraries excluded), the
 *   fair figure to sum over many processes.
 * - The machine: /proc/stat's aggregate line, to tell how busy everyone else kept the cores.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

function clockTicks(): number {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return v > 0 ? v : 100;
  } catch {
    return 100;
  }
}

export const CLK_TCK = clockTicks();

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** utime + stime in seconds from a /proc stat line (the command name may contain spaces or parentheses). */
function statCpuSeconds(stat: string): number {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** CPU seconds (user + system) a live process has used; undefined when it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : statCpuSeconds(stat);
}

/** CPU seconds of a process split into its main thread (tid = pid) and all its other threads. */
export function threadCpuSeconds(pid: number): { main: number; others: number } | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let main = 0;
  let others = 0;
  for (const tid of tids) {
    const stat = readText(`/proc/${pid}/task/${tid}/stat`);
    if (stat === undefined) continue; // thread ended between readdir and read
    if (Number(tid) === pid) main = statCpuSeconds(stat);
    else others += statCpuSeconds(stat);
  }
  // Threads that already ended are in the process total but in no task: count them as "others".
  const total = processCpuSeconds(pid);
  if (total !== undefined && total > main + others) others = total - main;
  return { main, others };
}

export interface MemorySample {
  /** Resident set size, bytes. */
  rss: number;
  /** Private_Clean + Private_Dirty, bytes (memory no other process shares). */
  private: number;
}

export function processMemory(pid: number): MemorySample | undefined {
  const status = readText(`/proc/${pid}/status`);
  if (status === undefined) return undefined;
  const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  const rollup = readText(`/proc/${pid}/smaps_rollup`) ?? '';
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? 0);
  return { rss: rssKb * 1024, private: (field('Private_Clean') + field('Private_Dirty')) * 1024 };
}

/** Sums memory over processes (gone ones count zero). */
export function sumMemory(pids: readonly number[]): MemorySample {
  const out = { rss: 0, private: 0 };
  for (const pid of pids) {
    const m = processMemory(pid);
    if (m) {
      out.rss += m.rss;
      out.private += m.private;
    }
  }
  return out;
}

export interface MachineSample {
  /** Jiffies of all CPUs: busy (everything but idle and iowait) and total. */
  busy: number;
  total: number;
  cores: number;
}

export function machineSample(): MachineSample {
  const text = readText('/proc/stat') ?? '';
  const line = text.split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const cores = text.split('\n').filter((l) => /^cpu\d+ /.test(l)).length || 1;
  return { busy: total - idle, total, cores };
}

/** Percent of one core the machine as a whole was busy between two samples (200 = two cores). */
export function machineBusyPercent(a: MachineSample, b: MachineSample): number {
  const dt = b.total - a.total;
  return dt > 0 ? ((b.busy - a.busy) / dt) * 100 * b.cores : 0;
}

/**
 * One snapshot of a named group of processes: per-role CPU seconds and memory, taken at one
 * instant (plus the wall clock), so that two snapshots give CPU % per role over the interval.
 */
export interface GroupSnapshot {
  atMs: number;
  cpu: Record<string, number>;
  memory: Record<string, MemorySample>;
  machine: MachineSample;
}

export interface ProcessGroup {
  /** Role name -> pids (e.g. node: [recorder pid], workers: [mediasoup pids], ffmpeg: [...]). */
  [role: string]: readonly number[];
}

/**
 * Snapshot of a process group. A role whose pid list holds exactly the Node process gets its
 * CPU split as `<role>.main` and `<role>.threads` as well.
 */
export function snapshot(group: ProcessGroup, splitThreads: readonly string[] = []): GroupSnapshot {
  const cpu: Record<string, number> = {};
  const memory: Record<string, MemorySample> = {};
  for (const [role, pids] of Object.entries(group)) {
    let sum = 0;
    for (const pid of pids) sum += processCpuSeconds(pid) ?? 0;
    cpu[role] = sum;
    memory[role] = sumMemory(pids);
    if (splitThreads.includes(role) && pids.length === 1) {
      const t = threadCpuSeconds(pids[0]!);
      cpu[`${role}.main`] = t?.main ?? 0;
      cpu[`${role}.threads`] = t?.others ?? 0;
    }
  }
  return { atMs: performance.now(), cpu, memory, machine: machineSample() };
}

/** CPU % of one core per role between two snapshots (a role absent at either end counts 0). */
export function cpuPercent(a: GroupSnapshot, b: GroupSnapshot): Record<string, number> {
  const seconds = (b.atMs - a.atMs) / 1000;
  const out: Record<string, number> = {};
  for (const role of Object.keys(b.cpu)) out[role] = seconds > 0 ? ((b.cpu[role]! - (a.cpu[role] ?? 0)) / seconds) * 100 : 0;
  return out;
}

/**
 * The local S3 server's processes (Ceph RGW and its daemons, or MinIO), and PostgreSQL's: found by
 * command line, so the bench can report every core's use (issue 16), the store's included.
 */
export function pidsByCommand(pattern: RegExp): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = readText(`/proc/${name}/cmdline`)?.replace(/\0/g, ' ');
    if (cmd !== undefined && pattern.test(cmd)) out.push(Number(name));
  }
  return out;
}

export const S3_SERVER_COMMANDS = /^(\S*\/)?(radosgw|ceph-osd|ceph-mon|ceph-mgr|minio) /;
export const POSTGRES_COMMANDS = /^postgres[: ]|\/postgres /;
