/**
 * Monitoring as operators run it (docker/prometheus, docker/grafana): the alert rules pass
 * `promtool check rules` and their unit tests (`promtool test rules`: every alert firing and not
 * firing), the Prometheus configuration passes `promtool check config`, and every metric an alert
 * or a dashboard panel names is one the code registers. Debian's `prometheus` package ships
 * promtool (/usr/bin/promtool); without it these tests fail.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { createMetrics } from '../../../src/metrics/metrics.ts';
import { createControlPlaneMetrics } from '../../../src/metrics/controlPlaneMetrics.ts';
import { createSiprecMetrics } from '../../../src/siprec/siprecMetrics.ts';

const ALERTS = 'docker/prometheus/alerts.yml';
const ALERT_TESTS = 'docker/prometheus/alerts.test.yml';
const DASHBOARD = 'docker/grafana/dashboards/optin.json';

function promtool(...args: string[]): string {
  return execFileSync('promtool', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Every series name the code can export: recorder, control plane, SIP/SIPREC registries. */
async function codeMetricNames(): Promise<Set<string>> {
  const siprec = new Registry();
  createSiprecMetrics(siprec);
  const registries = [createMetrics({ defaultMetrics: false }).registry, createControlPlaneMetrics({ defaultMetrics: false }).registry, siprec];
  const names = new Set<string>();
  for (const registry of registries) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m.name}${suffix}`);
    }
  }
  return names;
}

const metricRefs = (text: string): string[] => [...new Set([...text.matchAll(/\b(optin_[a-z0-9_]+)/g)].map((m) => m[1]!))];

describe('Prometheus alert rules', () => {
  it('pass promtool check rules and promtool test rules', () => {
    expect(promtool('check', 'rules', ALERTS)).toContain('SUCCESS: 12 rules found');
    expect(promtool('test', 'rules', ALERT_TESTS)).toContain('SUCCESS');
  });

  it('the Prometheus configuration passes promtool check config (with the rules it loads)', () => {
    expect(promtool('check', 'config', 'docker/prometheus/prometheus.yml')).toContain('is valid prometheus config file syntax');
  });

  it('cover what an operator must act on, and each alert is unit-tested firing and not firing', () => {
    const rules = readFileSync(ALERTS, 'utf8');
    const alerts = [...rules.matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]!);
    expect(alerts.sort()).toEqual(
      [
        'OptinAdmissionRefusals',
        'OptinControlPlaneDatabaseDown',
        'OptinControlPlaneDown',
        'OptinEventLoopLag',
        'OptinMediaWorkerDied',
        'OptinPolicyStreamStale',
        'OptinRecorderDown',
        'OptinSegmentsFailed',
        'OptinSegmentsSpooled',
        'OptinSip503',
        'OptinSpoolGrowing',
        'OptinTrackLossHigh',
      ].sort(),
    );
    const tests = readFileSync(ALERT_TESTS, 'utf8');
    for (const alert of alerts) {
      const cases = [...tests.matchAll(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:( \\[\\])?`, 'g'))];
      expect(cases.some((c) => c[1] === ' []'), `${alert}: a case where it does not fire`).toBe(true);
      expect(cases.some((c) => c[1] === undefined), `${alert}: a case where it fires`).toBe(true);
    }
    // The thresholds the runbook states.
    expect(rules).toContain('optin_event_loop_lag_p99_seconds > 0.05');
    expect(rules).toMatch(/histogram_quantile\(0\.95, .*optin_track_loss_ratio_bucket.*\) > 0\.05/);
    expect(rules).toContain('optin_control_fresh == 0');
    expect(rules).toContain('optin_control_db_up == 0');
  });

  it('name only metrics the code registers', async () => {
    const known = await codeMetricNames();
    const unknown = metricRefs(readFileSync(ALERTS, 'utf8')).filter((n) => !known.has(n));
    expect(unknown).toEqual([]);
  });
});

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
}

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { query: { query: string } }[] } };
  const datasource = /uid: (\S+)/.exec(readFileSync('docker/grafana/provisioning/datasources/prometheus.yml', 'utf8'))![1]!;
  const graphs = dashboard.panels.filter((p) => p.type !== 'row');

  it('parses, with unique panel ids, every query on the provisioned Prometheus data source', () => {
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    for (const p of graphs) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      expect(p.datasource?.uid, p.title).toBe(datasource);
      for (const t of p.targets!) expect(t.datasource?.uid, p.title).toBe(datasource);
    }
  });

  it('shows per-track loss and jitter over time, gate states, the upload backlog and worker load', () => {
    const exprs = graphs.flatMap((p) => p.targets!.map((t) => t.expr)).join('\n');
    for (const metric of ['optin_track_loss_ratio_bucket', 'optin_track_jitter_seconds_bucket', 'optin_gates', 'optin_spool_bytes', 'optin_segments_total', 'optin_mediasoup_worker_cpu_seconds', 'optin_calls_active', 'optin_event_loop_lag_p99_seconds']) {
      expect(exprs, metric).toContain(metric);
    }
  });

  it('every expression names only metrics the code registers', async () => {
    const known = await codeMetricNames();
    const text = [...graphs.flatMap((p) => p.targets!.map((t) => t.expr)), ...dashboard.templating.list.map((v) => v.query.query)].join('\n');
    const refs = metricRefs(text);
    expect(refs.length).toBeGreaterThan(20);
    expect(refs.filter((n) => !known.has(n))).toEqual([]);
  });
});
