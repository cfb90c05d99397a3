/**
 * Summary of a V8 `.cpuprofile` (written by `node --cpu-prof`): self time per function and per
 * source file, the busiest first. Used by `npm run bench:profile`; also runs on its own:
 *
 *     npx tsx bench/profile.ts bench-results/profile-*.cpuprofile
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface HotSpot {
  name: string;
  where: string;
  selfMs: number;
  selfPct: number;
}

export interface ProfileSummary {
  file: string;
  durationMs: number;
  /** Share of samples that were not idle. */
  busyPct: number;
  functions: HotSpot[];
  files: HotSpot[];
  /** Self time inside optin's own source (src/), by folder of the data path. */
  optinByFolder: Record<string, number>;
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  const p = url.startsWith('file://') ? fileURLToPath(url) : url;
  const i = p.indexOf('/node_modules/');
  if (i >= 0) return p.slice(i + 1);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  return p.startsWith(root) ? path.relative(root, p) : p;
}

export function summarizeProfile(file: string, top = 30): ProfileSummary {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  // Sample i lasted timeDeltas[i + 1] (the delta to the next sample), in microseconds.
  const selfUs = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0;
    selfUs.set(prof.samples[i]!, (selfUs.get(prof.samples[i]!) ?? 0) + dt);
  }
  let totalUs = 0;
  let idleUs = 0;
  const fnAgg = new Map<string, { name: string; where: string; us: number }>();
  const fileAgg = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    totalUs += us;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') {
      idleUs += us;
      continue;
    }
    const where = `${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
    const key = `${name} ${where}`;
    const agg = fnAgg.get(key) ?? { name, where, us: 0 };
    agg.us += us;
    fnAgg.set(key, agg);
    const f = n.callFrame.url ? shortUrl(n.callFrame.url) : name;
    fileAgg.set(f, (fileAgg.get(f) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => (busyUs > 0 ? (us / busyUs) * 100 : 0);
  const functions = [...fnAgg.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((a) => ({ name: a.name, where: a.where, selfMs: a.us / 1000, selfPct: pct(a.us) }));
  const files = [...fileAgg.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([f, us]) => ({ name: f, where: '', selfMs: us / 1000, selfPct: pct(us) }));
  const optinByFolder: Record<string, number> = {};
  for (const [f, us] of fileAgg) {
    const m = /^src\/([^/]+)\//.exec(f);
    if (m) optinByFolder[m[1]!] = (optinByFolder[m[1]!] ?? 0) + pct(us);
  }
  return { file, durationMs: (prof.endTime - prof.startTime) / 1000, busyPct: totalUs > 0 ? (busyUs / totalUs) * 100 : 0, functions, files, optinByFolder };
}

export function formatProfile(s: ProfileSummary): string {
  const lines = [`CPU profile ${path.basename(s.file)}: ${(s.durationMs / 1000).toFixed(1)} s, main thread busy ${s.busyPct.toFixed(1)}%`];
  lines.push('  self %   self ms  function (where)');
  for (const f of s.functions) lines.push(`  ${f.selfPct.toFixed(1).padStart(6)} ${f.selfMs.toFixed(0).padStart(9)}  ${f.name} (${f.where})`);
  lines.push('  by file:');
  for (const f of s.files.slice(0, 15)) lines.push(`  ${f.selfPct.toFixed(1).padStart(6)} ${f.selfMs.toFixed(0).padStart(9)}  ${f.name}`);
  lines.push(`  optin src/ by folder (% of busy): ${Object.entries(s.optinByFolder).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  for (const f of process.argv.slice(2)) console.log(formatProfile(summarizeProfile(f)));
}
