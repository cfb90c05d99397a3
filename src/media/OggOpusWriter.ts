/**
 * Ogg Opus muxer (RFC 3533 pages, RFC 7845 mapping) for one logical stream.
 *
 * A whole standalone file is `header()` + every `takePages()` + `finish()`:
 *
 *     const w = new OggOpusWriter({ serial, channels: 1, preSkip: 0, inputSampleRate: 48000 });
 *     for (const p of packets) w.addPacket(p, 960);
 *     const file = Buffer.concat([w.header(), w.finish()]);
 *
 * Layout (RFC 7845 §3): page 0 = OpusHead alone with BOS, then OpusTags on
 * its own page(s), then audio pages. Audio pages close when they hold about
 * `maxPageSamples` of audio or when the next packet's lacing values would
 * not fit the 255-entry segment table. A page is only closed when the next
 * packet arrives (or on `finish()`), so the last page always carries data
 * and gets the EOS flag: no empty trailing page.
 *
 * Packets are copied in as they are added (callers may reuse their memory at once). Closed
 * pages live in pool blocks (BlockPool: out of the allocator's arenas, zeroed when given back) or
 * in the caller's page store (`pageStore`), and the open page's body in a pool block, until
 * `takePages()`/`finish()` copies them out, or `discard()` drops them.
 */
import { OptinError } from '../errors/OptinError.ts';
import { oggPageCrc } from './oggCrc.ts';
import { encodeOpusHead, encodeOpusTags } from './opusHeaders.ts';
import { BlockBytes, BlockPool } from './BlockPool.ts';
import type { PageStore } from './OpenSegmentFiles.ts';

export interface OggOpusWriterOptions {
  /** Ogg bitstream serial number (u32); one per logical stream. */
  serial: number;
  channels?: 1 | 2;
  /** Samples at 48 kHz to drop at the start: the encoder lookahead, 0 for passthrough of a live stream. */
  preSkip: number;
  /** Original input sample rate, informational (48000 for WebRTC Opus, 8000 for transcoded G.711). */
  inputSampleRate: number;
  vendor?: string;
  tags?: Record<string, string>;
  /**
   * Close an audio page once it holds at least this many 48 kHz samples.
   * Default 48000 (1 s): seek granularity for players. Larger pages save
   * 27 bytes of page header per extra second (see the overhead test).
   */
  maxPageSamples?: number;
  /**
   * Where closed audio pages wait until `finish()` (default: this thread's pool blocks). A media
   * thread passes an encrypted file (OpenSegmentFiles) so an open segment does not sit in memory.
   */
  pageStore?: PageStore;
}

// RFC 3533 §6 header_type_flag bits.
const FLAG_CONTINUED = 0x01;
const FLAG_BOS = 0x02;
const FLAG_EOS = 0x04;

const PAGE_HEADER_BYTES = 27;
const MAX_LACING = 255;
/** Granule position -1: "no packet finishes on this page" (RFC 3533 §6). */
const NO_GRANULE = -1;
/**
 * This thread's blocks for every writer's pages and open page body. 16 KB: a page of 255 speech
 * packets is ~12 KB, so a body fits one block (a louder codec's body grows out of the pool).
 */
export const OGG_BLOCKS = new BlockPool(16 * 1024);

/** Scratch for building one page before it is appended (reused: one page is built at a time per thread). */
let pageScratch = Buffer.allocUnsafe(PAGE_HEADER_BYTES + MAX_LACING + OGG_BLOCKS.blockBytes);

/** What a writer holds in the pool; given back on finish/discard, or when a dropped writer is collected. */
interface Held {
  pages: PageStore;
  /** The open page's body while it is a pool block. */
  body: Buffer | undefined;
}
function releaseHeld(held: Held): void {
  held.pages.discard();
  if (held.body !== undefined) OGG_BLOCKS.release(held.body);
  held.body = undefined;
}
// A writer dropped without finish() or discard() (a run torn down by an error) still gives its
// blocks back once it is collected.
const dropped = new FinalizationRegistry<Held>(releaseHeld);

export class OggOpusWriter {
  readonly serial: number;
  readonly preSkip: number;
  readonly #maxPageSamples: number;
  readonly #header: Buffer;

  #pageSequence = 0;
  /** Granule of the last packet added: cumulative 48 kHz samples (RFC 7845 §4). */
  #granule = 0;
  /** Samples added to the open page so far (to decide when to close it). */
  #pageSamples = 0;

  // The open page: its packet bytes, copied in as they are added, and their lacing values (at most
  // 255). Copied, not kept as views: a view would keep each packet's whole receive buffer alive
  // until the page closes (5 s of packets per track), many times the payload's own size.
  #body: Buffer;
  #lacing = new Uint8Array(MAX_LACING);
  #lacingCount = 0;
  #dataBytes = 0;
  /** Granule of the last packet that ends on the open page, -1 if none ends there yet. */
  #pageGranule = NO_GRANULE;
  /** The open page starts with the tail of a packet begun on the previous page. */
  #pageContinued = false;

  readonly #held: Held;
  #finished = false;

  #packets = 0;
  #payloadBytes = 0;

  constructor(o: OggOpusWriterOptions) {
    const channels = o.channels ?? 1;
    if (!Number.isInteger(o.preSkip) || o.preSkip < 0 || o.preSkip > 0xffff) {
      throw new OptinError('OGG_INVALID_OPTIONS', `Ogg Opus pre-skip must be 0..65535 samples, got ${o.preSkip}`);
    }
    if (channels !== 1 && channels !== 2) {
      throw new OptinError('OGG_INVALID_OPTIONS', 'Ogg Opus writer supports 1 or 2 channels (mapping family 0)');
    }
    this.serial = o.serial >>> 0;
    this.preSkip = o.preSkip;
    this.#maxPageSamples = o.maxPageSamples ?? 48_000;
    this.#body = OGG_BLOCKS.take();
    this.#held = { pages: new BlockBytes(OGG_BLOCKS), body: this.#body };
    dropped.register(this, this.#held, this.#held);

    // RFC 7845 §3: the ID header is alone on the BOS page and the comment
    // header ends its own page, so the first audio packet starts a fresh page.
    // Both header pages have granule position 0 (§4).
    const head = encodeOpusHead({ channels, preSkip: o.preSkip, inputSampleRate: o.inputSampleRate });
    const tags = encodeOpusTags(o.vendor ?? 'optin', o.tags);
    this.#appendPacket(head);
    this.#pageGranule = 0;
    this.#closePage(FLAG_BOS);
    this.#appendPacket(tags);
    this.#pageGranule = 0;
    this.#closePage(0);
    this.#header = this.#held.pages.take();
    if (o.pageStore !== undefined) this.#held.pages = o.pageStore;
  }

  /** The header pages (OpusHead + OpusTags): the first bytes of the file. */
  header(): Buffer {
    return this.#header;
  }

  /** Granule position after the last added packet (48 kHz samples including pre-skip). */
  get granule(): number {
    return this.#granule;
  }

  get packets(): number {
    return this.#packets;
  }

  /** Sum of the Opus packet sizes added (to measure container overhead). */
  get payloadBytes(): number {
    return this.#payloadBytes;
  }

  /**
   * Adds one Opus packet lasting `samples48k` (from its TOC, see opusToc).
   * Zero-length packets are legal in Ogg Opus (RFC 7845 §3: a decoder treats
   * them as lost) but nothing here produces them.
   */
  addPacket(packet: Uint8Array, samples48k: number): void {
    if (this.#finished) throw new OptinError('OGG_WRITER_FINISHED', 'OggOpusWriter.addPacket after finish(): create a new writer');
    if (!Number.isInteger(samples48k) || samples48k < 0) {
      throw new OptinError('OGG_BAD_DURATION', `Opus packet duration must be a whole number of 48 kHz samples, got ${samples48k}`);
    }
    const lacingNeeded = Math.floor(packet.length / 255) + 1;
    // Close the open page before this packet when it already holds enough
    // audio, or when the packet's lacing values would not fit (a packet that
    // needs more than a whole page is split below; it then starts a fresh page).
    if (
      this.#lacingCount > 0 &&
      (this.#pageSamples >= this.#maxPageSamples || this.#lacingCount + lacingNeeded > MAX_LACING)
    ) {
      this.#closePage(0);
    }
    this.#granule += samples48k;
    this.#packets++;
    this.#payloadBytes += packet.length;
    this.#pageSamples += samples48k;
    this.#appendPacket(packet);
    this.#pageGranule = this.#granule;
  }

  /** Completed pages since the last call (not including the header), concatenated; may be empty. */
  takePages(): Buffer {
    return this.#held.pages.take();
  }

  /**
   * Closes the stream: every page not yet taken, the last one flagged EOS
   * (RFC 3533 §6). With no audio at all the EOS page is an empty page.
   * Idempotent: later calls return an empty buffer.
   */
  finish(): Buffer {
    return this.#finish(undefined);
  }

  /** `finish()` with the header pages in front: the whole file in one copy (nothing taken before). */
  finishFile(): Buffer {
    return this.#finish(this.#header);
  }

  #finish(prefix: Uint8Array | undefined): Buffer {
    if (this.#finished) return Buffer.alloc(0);
    this.#finished = true;
    if (this.#lacingCount === 0) this.#pageGranule = this.#granule;
    this.#closePage(FLAG_EOS);
    const out = this.#held.pages.take(prefix);
    this.#releaseAll();
    return out;
  }

  /**
   * Drops everything not yet taken (a run discarded on erasure): its pool blocks are zeroed and
   * given back now. Idempotent; the writer takes nothing afterwards.
   */
  discard(): void {
    this.#finished = true;
    this.#releaseAll();
  }

  #releaseAll(): void {
    releaseHeld(this.#held);
    dropped.unregister(this.#held);
    this.#body = EMPTY;
    this.#dataBytes = 0;
  }

  /** Appends lacing values for a packet, closing full pages for packets longer than a page. */
  #appendPacket(packet: Uint8Array): void {
    let offset = 0;
    let remaining = packet.length;
    for (;;) {
      // RFC 3533 §5: a packet is a run of 255s ended by one value < 255; a
      // length that is a multiple of 255 (including 0) needs a trailing 0.
      while (remaining >= 255 && this.#lacingCount < MAX_LACING) {
        this.#lacing[this.#lacingCount++] = 255;
        remaining -= 255;
      }
      if (this.#lacingCount < MAX_LACING) {
        this.#lacing[this.#lacingCount++] = remaining;
        this.#pushPiece(packet, offset, packet.length);
        return;
      }
      // Segment table full in the middle of the packet: close this page
      // (granule -1 unless an earlier packet ended on it) and continue on the next.
      const end = packet.length - remaining;
      this.#pushPiece(packet, offset, end);
      offset = end;
      this.#closePage(0);
      this.#pageContinued = true;
    }
  }

  #pushPiece(packet: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n <= 0) return;
    if (this.#dataBytes + n > this.#body.length) {
      // Out of the pool block (a louder codec than speech Opus): an ordinary Buffer from here on.
      const grown = Buffer.allocUnsafe(Math.max(this.#body.length * 2, this.#dataBytes + n));
      this.#body.copy(grown, 0, 0, this.#dataBytes);
      if (this.#held.body !== undefined) OGG_BLOCKS.release(this.#held.body);
      this.#held.body = undefined;
      this.#body = grown;
    }
    this.#body.set(start === 0 && end === packet.length ? packet : packet.subarray(start, end), this.#dataBytes);
    this.#dataBytes += n;
  }

  #closePage(flags: number): void {
    const nseg = this.#lacingCount;
    const size = PAGE_HEADER_BYTES + nseg + this.#dataBytes;
    if (size > pageScratch.length) pageScratch = Buffer.allocUnsafe(size);
    const page = pageScratch.subarray(0, size);
    page.write('OggS', 0, 'latin1'); // capture pattern
    page[4] = 0; // stream structure version
    page[5] = flags | (this.#pageContinued ? FLAG_CONTINUED : 0);
    writeOggGranule(page, 6, this.#pageGranule);
    page.writeUInt32LE(this.serial, 14);
    page.writeUInt32LE(this.#pageSequence++ >>> 0, 18);
    page.writeUInt32LE(0, 22); // CRC placeholder, computed over the page with this field zero
    page[26] = nseg;
    page.set(this.#lacing.subarray(0, nseg), PAGE_HEADER_BYTES);
    this.#body.copy(page, PAGE_HEADER_BYTES + nseg, 0, this.#dataBytes);
    page.writeUInt32LE(oggPageCrc(page), 22);

    this.#held.pages.append(page);
    this.#lacingCount = 0;
    this.#dataBytes = 0;
    this.#pageSamples = 0;
    this.#pageGranule = NO_GRANULE;
    this.#pageContinued = false;
  }
}

const EMPTY = Buffer.alloc(0);

/** Writes a signed 64-bit little-endian granule position from a JS number (-1 or 0..2^53). */
export function writeOggGranule(buf: Buffer, at: number, granule: number): void {
  if (granule < 0) {
    buf.writeUInt32LE(0xffffffff, at);
    buf.writeUInt32LE(0xffffffff, at + 4);
    return;
  }
  buf.writeUInt32LE(granule % 0x1_0000_0000, at);
  buf.writeUInt32LE(Math.floor(granule / 0x1_0000_0000), at + 4);
}
