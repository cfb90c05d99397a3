import { z } from 'zod';
import { MappingSchema } from './mapping.ts';

const port = z.number().int().min(0).max(65535);

/**
 * The `siprec` section of the configuration (docs/siprec.md lists every field): SIP listeners,
 * bounds, timers, media ports, codecs and the id mapping rules. Defaults in one place.
 */
export const SiprecConfigSchema = z.object({
  enabled: z.boolean().default(false),
  /** Address the SIP listeners bind. */
  bindAddress: z.string().default('127.0.0.1'),
  /** Host in our Via/Contact (what the SBC reaches us at); defaults to bindAddress. */
  advertisedHost: z.string().optional(),
  /** null turns a transport off. */
  udpPort: port.nullable().default(5060),
  tcpPort: port.nullable().default(5060),
  tlsPort: port.nullable().default(null),
  tls: z.object({ keyFile: z.string(), certFile: z.string(), caFile: z.string().optional() }).optional(),
  limits: z
    .object({
      maxMessageBytes: z.number().int().min(4096).max(1_048_576).default(65_535),
      maxHeaderBytes: z.number().int().min(1024).max(262_144).default(32_768),
      maxHeaders: z.number().int().min(16).max(1024).default(128),
    })
    .prefault({}),
  /** RFC 3261 §17.1.1.1 / Table 4; shorter only in tests. */
  timers: z
    .object({ t1: z.number().int().min(10).default(500), t2: z.number().int().min(10).default(4000), t4: z.number().int().min(10).default(5000) })
    .prefault({}),
  maxDialogs: z.number().int().min(1).default(2000),
  maxTransactions: z.number().int().min(16).default(50_000),
  /**
   * Live transactions per source address. An SBC is one source for all its sessions, and a
   * completed UDP transaction lives 32 s (Timer J): ~60 per second of new sessions stay live.
   */
  maxTransactionsPerSource: z.number().int().min(4).default(5000),
  maxConnections: z.number().int().min(1).default(1024),
  connectionIdleSeconds: z.number().int().min(5).default(600),
  handlerTimeoutMs: z.number().int().min(100).default(5000),
  retryAfterSeconds: z.number().int().min(1).max(3600).default(30),
  /** Codecs we record, in our order of preference (G.722 only once the recorder decodes it). */
  codecs: z.array(z.enum(['PCMU', 'PCMA', 'opus', 'G722'])).min(1).default(['PCMU', 'PCMA', 'opus']),
  /** Accept RTP/SAVP offers keyed by SDES (RFC 4568). */
  sdes: z.boolean().default(true),
  media: z
    .object({
      bindAddress: z.string().optional(),
      advertisedAddress: z.string().optional(),
      portMin: z.number().int().min(1024).max(65535).default(30000),
      portMax: z.number().int().min(1024).max(65535).default(34999),
      maxStreams: z.number().int().min(1).default(1500),
      strictSourcePort: z.boolean().default(false),
    })
    .prefault({}),
  /** A session whose live (not held) streams have been silent this long is ended with a BYE; 0 = never. */
  mediaTimeoutSeconds: z.number().int().min(0).default(60),
  /** A session entirely on hold this long is ended with a BYE; 0 = never. */
  holdTimeoutSeconds: z.number().int().min(0).default(4 * 3600),
  mapping: MappingSchema.prefault({}),
});

export type SiprecConfig = z.infer<typeof SiprecConfigSchema>;
