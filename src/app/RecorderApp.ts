import { readFileSync } from 'node:fs';
import path from 'node:path';
import { auditCredentials, type OptinConfig } from '../config/config.ts';
import { OptinError } from '../errors/OptinError.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { createMetrics, type Metrics } from '../metrics/metrics.ts';
import { WorkerPool } from '../sfu/WorkerPool.ts';
import { CallRoom } from '../sfu/CallRoom.ts';
import { ControlClient, checkControlUrl } from '../control/ControlClient.ts';
import { PolicyState } from '../gate/PolicyState.ts';
import { ControlAdmitter } from '../recorder/ControlAdmitter.ts';
import { Keyring } from '../crypto/Keyring.ts';
import { RecordingStore } from '../storage/RecordingStore.ts';
import { bucketNames } from '../storage/layout.ts';
import { assertS3Reachable, createS3Client } from '../storage/s3Endpoint.ts';
import { AuditTrail } from '../audit/AuditTrail.ts';
import { AuditSpool } from '../audit/AuditSpool.ts';
import { requireAuditKey } from '../audit/auditKey.ts';
import { TranscoderPool } from '../media/TranscoderPool.ts';
import { Recorder } from '../recorder/Recorder.ts';
import { startSiprec, type SiprecFrontDoor } from './siprecFrontDoor.ts';
import { MediaThreadPool } from '../mediathreads/MediaThreadPool.ts';
import { MediaThreadTaps } from '../mediathreads/ThreadTap.ts';
import type { Client } from 'minio';

export interface RecorderApp {
  config: OptinConfig;
  logger: Logger;
  metrics: Metrics;
  pool: WorkerPool;
  state: PolicyState;
  control: ControlClient;
  store: RecordingStore;
  audit: AuditTrail;
  /** The system's own audit entries go through this durable queue (store outages lose none). */
  auditSpool: AuditSpool;
  recorder: Recorder;
  /** The media threads receiving and recording direct streams, when SIPREC is on and `mediaThreads` > 0. */
  mediaThreads: MediaThreadPool | undefined;
  /** The SIPREC recording server and its direct media plane, when `siprec.enabled`. */
  siprec: SiprecFrontDoor | undefined;
  s3: Client;
  transcoder: TranscoderPool;
  /** Creates a call's Router and puts it under the recorder. */
  openCall(callId: string): Promise<CallRoom>;
  /**
   * Stops everything in order (recorder, transcoder, store, control stream, audit, media).
   * `clean` is true only when every step succeeded and the store holds everything durably (no
   * manifest unwritten, nothing left in the spool): the caller must not claim a clean stop otherwise.
   */
  close(): Promise<AppCloseResult>;
}

export interface AppCloseResult {
  clean: boolean;
  /** What was not done (for the log line): failed steps, unwritten manifests, spool items left. */
  problems: string[];
}

/** Reads a PEM file named by a setting, or fails naming the setting. */
function readPem(file: string | undefined, setting: string): Buffer | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new OptinError('CONFIG_INVALID', `${setting}=${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/**
 * Assembles a recorder worker from its configuration: checks every dependency first and fails
 * fast with one message naming the fix (no S3, wrong keys, missing worker binary, no secret, a
 * plain ws:// control URL off loopback), then starts the mediasoup workers, the store (buckets,
 * lifecycle, spool recovery, sweeper; its writes guarded by the policy state's tombstones), the
 * audit trail, the policy stream to the control plane and the recorder.
 */
export async function startRecorderApp(config: OptinConfig, opts: { logger?: Logger; metrics?: Metrics } = {}): Promise<RecorderApp> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const metrics = opts.metrics ?? createMetrics();
  const { s3 } = config;
  if (!s3.endpoint || !s3.accessKey || !s3.secretKey) {
    throw new OptinError(
      'CONFIG_INVALID',
      'no object store configured: set OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY and OPTIN_S3_SECRET_KEY ' +
        '(for a local test server run `npm run s3:start` then eval "$(bash scripts/s3/rgw.sh env)")',
    );
  }
  if (!config.keyring) {
    throw new OptinError('CONFIG_INVALID', 'no key-encryption keyring: set OPTIN_KEYRING to {"activeKeyId":"k1","keys":{"k1":"<base64 of 32 random bytes>"}}');
  }
  if (!config.control.secret) {
    throw new OptinError('CONFIG_INVALID', 'no control-stream secret: set OPTIN_CONTROL_SECRET (at least 32 characters, shared with the control plane)');
  }
  checkControlUrl(config.control.url);
  const controlTls = {
    ca: readPem(config.control.caFile, 'OPTIN_CONTROL_CA_FILE'),
    cert: readPem(config.control.clientCertFile, 'OPTIN_CONTROL_CLIENT_CERT'),
    key: readPem(config.control.clientKeyFile, 'OPTIN_CONTROL_CLIENT_KEY'),
  };
  if ((controlTls.cert === undefined) !== (controlTls.key === undefined)) {
    throw new OptinError('CONFIG_INVALID', 'mutual TLS needs both OPTIN_CONTROL_CLIENT_CERT and OPTIN_CONTROL_CLIENT_KEY (or neither)');
  }
  // No audit key, no recorder: an unkeyed trail could be rewritten by anyone with store access (R11).
  const auditKey = requireAuditKey(config.audit);
  const keyring = Keyring.fromConfig(config.keyring);
  const s3cfg = { endpoint: s3.endpoint, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region };
  await assertS3Reachable(s3cfg);
  const client = createS3Client(s3cfg);
  const buckets = bucketNames({ prefix: s3.bucketPrefix, media: s3.mediaBucket, keys: s3.keysBucket, audit: s3.auditBucket });

  const pool = await WorkerPool.create({
    size: config.mediasoup.workers,
    workerBin: config.mediasoup.workerBin,
    rtcMinPort: config.mediasoup.rtcMinPort,
    rtcMaxPort: config.mediasoup.rtcMaxPort,
    logger,
  });
  pool.on('workerdied', () => metrics.mediaWorkerDeaths.inc());

  const cleanups: (() => Promise<unknown>)[] = [async () => pool.close()];
  const problems: string[] = [];
  try {
    const audit = await AuditTrail.open({
      client: createS3Client({ ...s3cfg, ...auditCredentials(config) }),
      bucket: buckets.audit,
      writerId: config.workerId,
      logger,
      createBucket: true,
      hmacKey: auditKey,
      retention: { mode: config.audit.lockMode, days: config.audit.lockDays },
    });
    const auditSpool = new AuditSpool(audit, path.join(path.resolve(config.spool.dir), 'audit'), logger);
    cleanups.push(async () => {
      // Last: give queued entries a moment to land; what does not stays on disk for the next start.
      await auditSpool.flushed(5000);
      await auditSpool.close();
    });
    // The policy state exists before the store: the store asks it before every write (tombstones)
    // and uploads nothing while it is stale.
    const state = new PolicyState();
    const control = new ControlClient({
      url: config.control.url,
      workerId: config.workerId,
      secret: config.control.secret,
      heartbeatTimeoutMs: config.control.heartbeatTimeoutMs,
      capTimeoutMs: config.control.capTimeoutMs,
      ...(controlTls.ca === undefined ? {} : { ca: controlTls.ca }),
      ...(controlTls.cert === undefined ? {} : { cert: controlTls.cert, key: controlTls.key }),
      state,
      logger,
    });
    control.on('stale', () => metrics.controlFresh.set(0));
    control.on('fresh', () => metrics.controlFresh.set(1));
    metrics.controlFresh.set(0);
    // Closed after the store (below: cleanups run first to last): the store's last manifests
    // and spool drain need a fresh stream.
    cleanups.unshift(async () => control.close());

    const store = await RecordingStore.open({
      client,
      mediaPut: s3.mediaPut,
      manifestFlushMs: config.manifestFlushSeconds * 1000,
      buckets,
      keyring,
      retentionSeconds: config.retentionSeconds,
      spoolDir: path.resolve(config.spool.dir),
      spoolMaxBytes: config.spool.maxBytes,
      logger,
      audit: auditSpool,
      nodeId: config.workerId,
      region: s3.region,
      writeGuard: { isDeleted: (recordingId, participantId) => state.isTombstoned(recordingId, participantId), mayUpload: () => state.fresh },
    });
    cleanups.unshift(async () => {
      const r = await store.close();
      if (r.manifestsNotSaved > 0) problems.push(`${r.manifestsNotSaved} manifest(s) not written (crash repair rebuilds them at the next start)`);
      if (!r.drained) problems.push(`spool not drained: ${r.spoolItemsLeft} item(s) left (the next start uploads them)`);
    });
    store.on('spoolchange', (s) => metrics.spoolBytes.set(s.bytes));
    control.on('fresh', () => store.writeGuardChanged());

    const transcoder = new TranscoderPool({ threads: config.transcoderThreads });
    cleanups.unshift(() => transcoder.close());

    // The media threads (issue 16) receive and record the direct streams (SIPREC) and the SFU legs' taps; started before
    // the recorder so they stop after it: the recorder's close seals the runs they hold.
    const sc = config.siprec;
    const mediaThreads =
      config.mediaThreads > 0 && (sc.enabled || config.sfuTap === 'thread')
        ? await MediaThreadPool.start({
            threads: config.mediaThreads,
            maxTracks: Math.max(64, config.admission.maxStreams * 2),
            portMin: sc.media.portMin,
            portMax: sc.media.portMax,
            bindAddress: sc.media.bindAddress ?? sc.bindAddress,
            advertisedAddress: sc.media.advertisedAddress,
            strictSourcePort: sc.media.strictSourcePort,
            batchMs: config.mediaBatchMs,
            semiSpaceMb: config.mediaThreadSemiSpaceMb,
            oldSpaceMb: config.mediaThreadOldSpaceMb,
            openSegmentDir: config.openSegments === 'disk' ? path.join(config.spool.dir, 'open-segments') : undefined,
            // Sealing in the threads: each PUTs its own segments on the lean path (the store keeps the
            // books); through the minio client the sealed bytes come here for the store's PUT. The
            // store's keys reach the threads only then.
            sealing: config.segmentSealing,
            s3: config.segmentSealing === 'thread' && s3.mediaPut === 'lean' ? s3cfg : undefined,
            logLevel: config.logLevel,
            logger,
            metrics,
          })
        : undefined;
    if (mediaThreads) cleanups.unshift(() => mediaThreads.close());

    const recorder = new Recorder({
      control,
      state,
      store,
      admitter: new ControlAdmitter(control),
      encoder: transcoder,
      ...(mediaThreads ? { directTracks: mediaThreads } : {}),
      ...(mediaThreads && config.sfuTap === 'thread' ? { threadTaps: new MediaThreadTaps(mediaThreads) } : {}),
      audit: auditSpool,
      logger,
      metrics,
      segmentSeconds: config.segmentSeconds,
      maxStreams: config.admission.maxStreams,
      maxEventLoopLagMs: config.admission.maxEventLoopLagMs,
    });
    cleanups.unshift(() => recorder.close());
    control.start();

    const siprec = config.siprec.enabled ? await startSiprec(config, { recorder, control, store, metrics, logger, mediaThreads }) : undefined;
    // Closed first: no new SIP session or stream while the recorder seals what it holds.
    if (siprec) cleanups.unshift(() => siprec.close());

    const mediaUsage = setInterval(() => {
      pool.resourceUsage().then(
        (usage) =>
          usage.forEach((u, i) => {
            metrics.mediaWorkerCpuSeconds.set({ worker: String(i) }, u.cpuMs / 1000);
            metrics.mediaWorkerMaxRssBytes.set({ worker: String(i) }, u.maxRssKb * 1024);
          }),
        () => undefined,
      );
    }, 5000);
    mediaUsage.unref();

    let closed = false;
    return {
      config,
      logger,
      metrics,
      pool,
      state,
      control,
      store,
      audit,
      auditSpool,
      recorder,
      siprec,
      mediaThreads,
      s3: client,
      transcoder,
      async openCall(callId: string) {
        const room = await CallRoom.create(pool, callId, {
          listenIp: config.mediasoup.listenIp,
          ...(config.mediasoup.announcedAddress ? { announcedAddress: config.mediasoup.announcedAddress } : {}),
          metrics,
          // Plain legs' RTP read by the media threads' sockets (issue 16 item 2), not this thread's.
          ...(mediaThreads ? { ingress: mediaThreads } : {}),
        });
        await recorder.attachCall(room);
        return room;
      },
      async close() {
        if (closed) return { clean: problems.length === 0, problems: [...problems] };
        closed = true;
        clearInterval(mediaUsage);
        // Order matters: the recorder seals and hands over its segments before the store closes.
        for (const fn of cleanups) {
          await fn().catch((err: Error) => {
            problems.push(`a shutdown step failed: ${err.message}`);
            logger.error({ err: err.message }, 'shutdown step failed');
          });
        }
        return { clean: problems.length === 0, problems: [...problems] };
      },
    };
  } catch (err) {
    for (const fn of cleanups) await fn().catch(() => undefined);
    throw err;
  }
}
