import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * SIP and SIPREC metrics. Labels are bounded sets (outcome, status class, reason, codec, method
 * from a fixed list): never a Call-ID, an AoR, an address or an id.
 */
export function createSiprecMetrics(registry: Registry) {
  const r = [registry];
  return {
    dialogs: new Gauge({ name: 'optin_sip_dialogs', help: 'SIP dialogs (SIPREC sessions and plain legs) in progress', registers: r }),
    invites: new Counter({ name: 'optin_sip_invites_total', help: 'Initial INVITEs by outcome (accepted, rejected, busy, cancelled, error, timeout)', labelNames: ['outcome'], registers: r }),
    unavailable: new Counter({
      name: 'optin_sip_503_total',
      help: '503 answers (the SBC fails over) by reason: streams, dialogs, not-ready, draining, ports',
      labelNames: ['reason'],
      registers: r,
    }),
    inviteSeconds: new Histogram({
      name: 'optin_sip_invite_seconds',
      help: 'Time from an initial INVITE to its final response',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: r,
    }),
    requests: new Counter({ name: 'optin_sip_requests_total', help: 'SIP requests received by method', labelNames: ['method'], registers: r }),
    malformed: new Counter({ name: 'optin_sip_malformed_total', help: 'Malformed SIP messages by reason and whether they were answered', labelNames: ['reason', 'answered'], registers: r }),
    dropped: new Counter({ name: 'optin_sip_dropped_total', help: 'SIP requests dropped or refused before processing (limits, no dialog)', labelNames: ['why'], registers: r }),
    sessionsEnded: new Counter({ name: 'optin_sip_sessions_ended_total', help: 'Sessions ended by reason (bye, ack-timeout, media-timeout, shutdown...)', labelNames: ['reason'], registers: r }),
    streams: new Gauge({ name: 'optin_siprec_streams', help: 'Receive streams open, by codec', labelNames: ['codec'], registers: r }),
    streamsOpened: new Counter({ name: 'optin_siprec_streams_opened_total', help: 'Receive streams opened, by codec', labelNames: ['codec'], registers: r }),
    linesRefused: new Counter({
      name: 'optin_siprec_lines_refused_total',
      help: 'Offered m-lines answered with port 0, by why (not-audio, no-codec, crypto, protocol, unmapped...)',
      labelNames: ['why'],
      registers: r,
    }),
    metadataErrors: new Counter({ name: 'optin_siprec_metadata_errors_total', help: 'rs-metadata documents refused', registers: r }),
    assignments: new Counter({ name: 'optin_siprec_assignments_total', help: 'How stream speakers were found (send, recv-inference, position, rules-only)', labelNames: ['via'], registers: r }),
    transfers: new Counter({ name: 'optin_siprec_reassignments_total', help: 'Streams whose speaker changed (transfers)', registers: r }),
  };
}

export type SiprecMetrics = ReturnType<typeof createSiprecMetrics>;
