import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

/**
 * Every metric optin exports, in one place. Labels are bounded sets (reason, codec, result, kind):
 * never a call, participant or subject id, so cardinality stays fixed however many calls run.
 */
export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  const r = [registry];
  return {
    registry,
    callsActive: new Gauge({ name: 'optin_calls_active', help: 'Calls with a Router on this worker', registers: r }),
    tracksActive: new Gauge({ name: 'optin_tracks_active', help: 'Participant tracks tapped by the recorder', labelNames: ['codec'], registers: r }),
    gates: new Gauge({ name: 'optin_gates', help: 'Calls by gate state and first reason', labelNames: ['state', 'reason'], registers: r }),
    gateTransitions: new Counter({ name: 'optin_gate_transitions_total', help: 'Gate openings and closings', labelNames: ['to', 'reason'], registers: r }),
    packetsReceived: new Counter({ name: 'optin_packets_received_total', help: 'RTP packets delivered to the recorder', labelNames: ['codec'], registers: r }),
    packetsWritten: new Counter({ name: 'optin_packets_written_total', help: 'RTP packets written into segments', labelNames: ['codec'], registers: r }),
    packetsDropped: new Counter({
      name: 'optin_packets_dropped_total',
      help: 'RTP packets not written, by reason (gate-closed, pre-opening, late, duplicate, malformed, overflow)',
      labelNames: ['reason'],
      registers: r,
    }),
    rtpSsrcChanges: new Counter({ name: 'optin_rtp_ssrc_changes_total', help: 'SSRC changes on plain (SIP/PSTN) legs, followed and mapped onto the leg\'s stream', registers: r }),
    rtpIngressDropped: new Counter({
      name: 'optin_rtp_ingress_dropped_total',
      help: 'Datagrams a plain leg\'s ingress did not pass on, by reason (foreign-source, oversize, malformed, payload-type)',
      labelNames: ['reason'],
      registers: r,
    }),
    packetsLost: new Counter({ name: 'optin_packets_lost_total', help: 'RTP packets missing at the recorder (sequence gaps)', registers: r }),
    concealedSeconds: new Counter({ name: 'optin_concealed_seconds_total', help: 'Audio seconds filled with silence (loss and DTX)', labelNames: ['cause'], registers: r }),
    trackLossRatio: new Histogram({
      name: 'optin_track_loss_ratio',
      help: 'Per-segment packet loss ratio of recorded tracks',
      buckets: [0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1],
      registers: r,
    }),
    trackJitterSeconds: new Histogram({
      name: 'optin_track_jitter_seconds',
      help: 'Per-segment interarrival jitter of recorded tracks (RFC 3550 A.8)',
      buckets: [0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32],
      registers: r,
    }),
    segments: new Counter({ name: 'optin_segments_total', help: 'Segments by outcome (sealed, uploaded, spooled, failed)', labelNames: ['result'], registers: r }),
    uploadSeconds: new Histogram({
      name: 'optin_upload_seconds',
      help: 'Time to store one sealed segment in the object store',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    }),
    spoolBytes: new Gauge({ name: 'optin_spool_bytes', help: 'Sealed bytes waiting in the local spool', registers: r }),
    controlFresh: new Gauge({ name: 'optin_control_fresh', help: '1 when the policy stream is fresh, 0 when stale', registers: r }),
    controlLagSeconds: new Gauge({ name: 'optin_control_lag_seconds', help: 'Age of the last policy-stream message', registers: r }),
    eventLoopLagSeconds: new Gauge({ name: 'optin_event_loop_lag_p99_seconds', help: 'Event-loop delay p99 over the last interval', registers: r }),
    mediaWorkerCpuSeconds: new Gauge({ name: 'optin_mediasoup_worker_cpu_seconds', help: 'CPU time of each mediasoup worker', labelNames: ['worker'], registers: r }),
    mediaThreadLagSeconds: new Gauge({ name: 'optin_media_thread_event_loop_lag_p99_seconds', help: 'Event-loop delay p99 of each media thread over its last second (its receive coalescing sleep included)', labelNames: ['thread'], registers: r }),
    mediaThreadCpuRatio: new Gauge({ name: 'optin_media_thread_cpu_ratio', help: 'CPU of each media thread over its last second, as a fraction of one core', labelNames: ['thread'], registers: r }),
    mediaThreadTracks: new Gauge({ name: 'optin_media_thread_tracks', help: 'Tracks held by each media thread', labelNames: ['thread'], registers: r }),
    heldSegments: new Gauge({ name: 'optin_media_thread_held_segments', help: 'Finished segments a media thread holds until the store has them (sealing, PUT, or the spool)', labelNames: ['thread'], registers: r }),
    mediaThreadHeapBytes: new Gauge({ name: 'optin_media_thread_heap_bytes', help: "Each media thread's own V8 heap: committed (total), live (used), and memory outside it its objects keep (external)", labelNames: ['thread', 'kind'], registers: r }),
    openSegmentFiles: new Gauge({ name: 'optin_open_segment_files', help: 'Open segments whose closed pages wait in an encrypted file, per media thread', labelNames: ['thread'], registers: r }),
    openSegmentFallbacks: new Counter({ name: 'optin_open_segment_fallbacks_total', help: 'Open segments moved to memory because the disk refused a page, per media thread', labelNames: ['thread'], registers: r }),
    mediaWorkerMaxRssBytes: new Gauge({ name: 'optin_mediasoup_worker_max_rss_bytes', help: 'Peak RSS of each mediasoup worker', labelNames: ['worker'], registers: r }),
    mediaWorkerDeaths: new Counter({ name: 'optin_mediasoup_worker_deaths_total', help: 'mediasoup workers that died and were replaced', registers: r }),
    admissionRejections: new Counter({ name: 'optin_admission_rejections_total', help: 'Calls not recorded because of load', labelNames: ['limit'], registers: r }),
    admissionReadmissions: new Counter({ name: 'optin_admission_readmissions_total', help: 'Calls refused as overloaded and admitted once the load fell', registers: r }),
    erasures: new Counter({ name: 'optin_erasures_total', help: 'Recordings or parts erased on request or withdrawal', labelNames: ['cause'], registers: r }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
