import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The control plane's metrics (/metrics). Labels are bounded sets (operation, result, frame
 * type, reason): never a call, participant, agent or worker id.
 */
export function createControlPlaneMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const r = [registry];
  return {
    registry,
    factsIngested: new Counter({
      name: 'optin_control_facts_ingested_total',
      help: 'API writes by operation and result (accepted, replayed, or the refusal code)',
      labelNames: ['operation', 'result'],
      registers: r,
    }),
    streamConnections: new Gauge({ name: 'optin_control_stream_connections', help: 'Policy-stream sessions on this replica', registers: r }),
    streamRefused: new Counter({ name: 'optin_control_stream_refused_total', help: 'Refused stream upgrades by reason', labelNames: ['reason'], registers: r }),
    deltasSent: new Counter({ name: 'optin_control_deltas_sent_total', help: 'Delta frames sent to workers', registers: r }),
    heartbeatsSent: new Counter({ name: 'optin_control_heartbeats_sent_total', help: 'Heartbeat frames sent to workers', registers: r }),
    workerFrames: new Counter({ name: 'optin_control_worker_frames_total', help: 'Frames received from workers by type and result', labelNames: ['type', 'result'], registers: r }),
    frameMacFailures: new Counter({ name: 'optin_control_frame_mac_failures_total', help: 'Worker frames whose MAC did not verify (session closed)', registers: r }),
    snapshotSeconds: new Histogram({
      name: 'optin_control_snapshot_build_seconds',
      help: 'Time to build one snapshot from the database',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }),
    dbQuerySeconds: new Histogram({
      name: 'optin_control_db_query_seconds',
      help: 'Database statement time by outcome',
      labelNames: ['ok'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: r,
    }),
    dbUp: new Gauge({ name: 'optin_control_db_up', help: '1 when the last follower poll reached the database', registers: r }),
    streamHeadSeq: new Gauge({ name: 'optin_control_stream_seq', help: 'Last fact sequence number this replica has read', registers: r }),
    pendingErasures: new Gauge({ name: 'optin_control_pending_erasures', help: 'Erasures accepted and not yet completed', registers: r }),
    pendingDeletions: new Gauge({ name: 'optin_control_pending_deletions', help: 'Deletions accepted and not yet completed', registers: r }),
    ledgerCompletions: new Counter({ name: 'optin_control_ledger_completions_total', help: 'Completed erasures and deletions', labelNames: ['kind'], registers: r }),
    capDecisions: new Counter({ name: 'optin_control_cap_decisions_total', help: 'Cap admissions by result', labelNames: ['result'], registers: r }),
    catalogueReports: new Counter({ name: 'optin_control_catalogue_reports_total', help: 'Recording reports applied to the catalogue by event', labelNames: ['event'], registers: r }),
    purgedRows: new Counter({ name: 'optin_control_purged_rows_total', help: 'Rows removed by retention purges', labelNames: ['table'], registers: r }),
  };
}

export type ControlPlaneMetrics = ReturnType<typeof createControlPlaneMetrics>;
