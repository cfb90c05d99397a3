/**
 * Ogg Opus demuxer (RFC 3533 pages, RFC 7845 mapping) for single-stream
 * files such as the writer's segments, and `joinOggOpus`, which turns the
 * segment files of one track into one continuous stream (the extract).
 *
 * Strict on purpose: every page's CRC is verified and anything unexpected
 * (a second logical stream, a missing header, a truncated page) throws
 * `OptinError('OGG_MALFORMED')` rather than producing a damaged extract.
 */
import { OptinError } from '../errors/OptinError.ts';
import { oggPageCrc } from './oggCrc.ts';
import { parseOpusHead, parseOpusTags, type OpusHead, type OpusTags } from './opusHeaders.ts';
import { OPUS_MAX_PACKET_SAMPLES, opusFrameSamples, opusPacketSamples } from './opusToc.ts';
import { OggOpusWriter, writeOggGranule } from './OggOpusWriter.ts';

export interface OggPage {
  /** RFC 3533 §6 flags: 0x01 continued packet, 0x02 BOS, 0x04 EOS. */
  headerType: number;
  /** -1 when no packet finishes on the page. */
  granule: number;
  serial: number;
  sequence: number;
  crc: number;
  /** The whole page (header, segment table, body), a view into the input. */
  bytes: Uint8Array;
  lacing: Uint8Array;
  /** Page body (a view into the input). */
  data: Uint8Array;
  /** Byte offset of the page in the input, and its total length. */
  offset: number;
  length: number;
}

function malformed(what: string): OptinError {
  return new OptinError('OGG_MALFORMED', `not a valid Ogg stream: ${what}; re-create the file`);
}

/** Splits a buffer into Ogg pages, verifying capture pattern, version and CRC of each. */
export function readOggPages(buf: Uint8Array): OggPage[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const pages: OggPage[] = [];
  let at = 0;
  while (at < b.length) {
    if (at + 27 > b.length) throw malformed(`truncated page header at byte ${at}`);
    if (b.toString('latin1', at, at + 4) !== 'OggS') throw malformed(`no capture pattern at byte ${at}`);
    if (b[at + 4] !== 0) throw malformed(`unsupported stream structure version at byte ${at}`);
    const nseg = b[at + 26]!;
    const lacing = b.subarray(at + 27, at + 27 + nseg);
    if (lacing.length < nseg) throw malformed(`truncated segment table at byte ${at}`);
    let dataLen = 0;
    for (const v of lacing) dataLen += v;
    const length = 27 + nseg + dataLen;
    if (at + length > b.length) throw malformed(`truncated page body at byte ${at}`);
    const page = b.subarray(at, at + length);
    const crc = b.readUInt32LE(at + 22);
    if (oggPageCrc(page) !== crc) throw malformed(`CRC mismatch in page at byte ${at}`);
    const lo = b.readUInt32LE(at + 6);
    const hi = b.readUInt32LE(at + 10);
    pages.push({
      headerType: b[at + 5]!,
      granule: hi === 0xffffffff && lo === 0xffffffff ? -1 : hi * 0x1_0000_0000 + lo,
      serial: b.readUInt32LE(at + 14),
      sequence: b.readUInt32LE(at + 18),
      crc,
      bytes: page,
      lacing,
      data: page.subarray(27 + nseg),
      offset: at,
      length,
    });
    at += length;
  }
  return pages;
}

export interface OggOpusPacket {
  data: Uint8Array;
  /** Duration from the TOC in 48 kHz samples (-1 if the framing is invalid). */
  samples: number;
  /** Granule of the page this packet completes on, if it is the last packet completed there; else -1. */
  granule: number;
}

export interface OggOpusStream {
  serial: number;
  head: OpusHead;
  tags: OpusTags;
  packets: OggOpusPacket[];
  pages: number;
  /** Granule of the last page (48 kHz samples including pre-skip; decoded length is this minus pre-skip). */
  lastGranule: number;
  /** Whether the last page carries the EOS flag (a complete, properly closed file). */
  complete: boolean;
}

/** Reassembles the packets of a single-stream Ogg Opus buffer (RFC 3533 §5, RFC 7845 §3). */
export function readOggOpus(buf: Uint8Array): OggOpusStream {
  const pages = readOggPages(buf);
  const first = pages[0];
  if (!first) throw malformed('empty file');
  if (!(first.headerType & 0x02)) throw malformed('first page lacks the BOS flag');
  const serial = first.serial;

  const raw: { data: Uint8Array; granule: number }[] = [];
  let partial: Uint8Array[] = [];
  let expectedSequence = first.sequence;
  for (const page of pages) {
    if (page.serial !== serial) throw malformed('more than one logical stream (chained or multiplexed files are not supported)');
    if (page.sequence !== expectedSequence) throw malformed(`page sequence gap before page ${page.sequence}`);
    expectedSequence = (expectedSequence + 1) >>> 0;
    const continued = (page.headerType & 0x01) !== 0;
    if (continued !== (partial.length > 0)) throw malformed(`continuation flag mismatch on page ${page.sequence}`);

    let at = 0;
    let lastCompleted = -1;
    let runStart = 0;
    for (let i = 0; i < page.lacing.length; i++) {
      const v = page.lacing[i]!;
      at += v;
      if (v < 255) {
        const piece = page.data.subarray(runStart, at);
        const data = partial.length > 0 ? Buffer.concat([...partial, piece]) : piece;
        partial = [];
        raw.push({ data, granule: -1 });
        lastCompleted = raw.length - 1;
        runStart = at;
      }
    }
    // The page ended inside a packet (its last lacing value was 255): carry it over.
    if (runStart < at) {
      partial.push(page.data.subarray(runStart, at));
    }
    if (lastCompleted >= 0) raw[lastCompleted]!.granule = page.granule;
  }
  if (partial.length > 0) throw malformed('stream ends inside a packet');
  if (raw.length < 2) throw malformed('missing OpusHead/OpusTags header packets');

  const head = parseOpusHead(raw[0]!.data);
  const tags = parseOpusTags(raw[1]!.data);
  const packets = raw.slice(2).map((p) => ({ data: p.data, granule: p.granule, samples: opusPacketSamples(p.data) }));
  const last = pages[pages.length - 1]!;
  return {
    serial,
    head,
    tags,
    packets,
    pages: pages.length,
    lastGranule: last.granule,
    complete: (last.headerType & 0x04) !== 0,
  };
}

export interface JoinOptions {
  /** Serial of the joined stream; default: the first file's. */
  serial?: number;
  /** Comment header; default: the first file's vendor and comments. */
  vendor?: string;
  tags?: Record<string, string>;
}

/**
 * Joins several Ogg Opus files of ONE track (consecutive segments) into one
 * continuous stream: a single OpusHead (the first file's pre-skip and input
 * rate), a single serial, page sequence numbers and granules that keep
 * counting across the joins, EOS only on the last page.
 *
 * It works page by page, not packet by packet: every audio page is checked
 * (CRC, sequence, continuation), copied once into the output, its header
 * fields rewritten and its CRC recomputed. Granules are recomputed from the
 * packets' TOC durations, so they are right even if an input was trimmed.
 * A 30-minute track (180 segments, ~90000 packets) joins in about 100 ms.
 *
 * A later file's own pre-skip cannot be expressed mid-stream (RFC 7845 has
 * no such field), so its first samples play instead of being trimmed; for a
 * transcoded run that is one encoder lookahead (6.5 ms) of near-silence.
 */
export function joinOggOpus(files: readonly Uint8Array[], options: JoinOptions = {}): Buffer {
  if (files.length === 0) throw new OptinError('OGG_JOIN_EMPTY', 'joinOggOpus needs at least one file');
  const inputs = files.map((f, i) => {
    try {
      return splitHeader(f);
    } catch (err) {
      throw new OptinError('OGG_MALFORMED', `segment ${i} of the join is not valid Ogg Opus; re-create it`, { cause: err });
    }
  });
  const first = inputs[0]!;
  const channels = first.head.channels;
  if (channels !== 1 && channels !== 2) throw malformed(`unsupported channel count ${channels}`);
  for (const [i, f] of inputs.entries()) {
    if (f.head.channels !== channels) {
      throw new OptinError('OGG_JOIN_MISMATCH', `segment ${i} has ${f.head.channels} channels, the first has ${channels}: join one track at a time`);
    }
  }
  const serial = (options.serial ?? first.serial) >>> 0;
  const writer = new OggOpusWriter({
    serial,
    channels,
    preSkip: first.head.preSkip,
    inputSampleRate: first.head.inputSampleRate,
    vendor: options.vendor ?? first.tags.vendor,
    tags: options.tags ?? first.tags.comments,
  });
  const header = writer.header();
  writer.discard(); // only its header pages are used: its pool blocks go back now
  const headerPages = readOggPages(header).length;

  let size = header.length;
  for (const f of inputs) for (const p of f.audio) size += p.length;
  const out = Buffer.allocUnsafe(size);
  header.copy(out, 0);
  let at = header.length;
  let sequence = headerPages;
  let granule = 0;
  let lastPageAt = -1;
  for (const [i, f] of inputs.entries()) {
    const walker = new PacketHeadWalker();
    for (const page of f.audio) {
      out.set(page.bytes, at);
      const samples = walker.page(page);
      if (samples < 0) throw new OptinError('OGG_MALFORMED', `segment ${i} holds an invalid Opus packet; re-create it`);
      granule += samples;
      out[at + 5] = page.headerType & 0x01; // keep "continued", drop BOS/EOS
      writeOggGranule(out, at + 6, walker.completedOnPage ? granule : -1);
      out.writeUInt32LE(serial, at + 14);
      out.writeUInt32LE(sequence++ >>> 0, at + 18);
      lastPageAt = at;
      at += page.length;
    }
    if (walker.inPacket) throw new OptinError('OGG_MALFORMED', `segment ${i} ends inside a packet; re-create it`);
  }
  if (lastPageAt < 0) return Buffer.concat([header, writer.finish()]); // no audio at all: an empty EOS page
  out[lastPageAt + 5] = out[lastPageAt + 5]! | 0x04;
  // CRCs last, once every header field is final.
  for (let p = header.length; p < at; ) {
    const len = 27 + out[p + 26]! + sumLacing(out, p);
    const page = out.subarray(p, p + len);
    page.writeUInt32LE(oggPageCrc(page), 22);
    p += len;
  }
  return out;
}

function sumLacing(buf: Buffer, pageAt: number): number {
  const n = buf[pageAt + 26]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += buf[pageAt + 27 + i]!;
  return sum;
}

interface SplitFile {
  serial: number;
  head: OpusHead;
  tags: OpusTags;
  audio: OggPage[];
}

/** Pages of one file: the two header packets parsed, the audio pages checked for sequence and continuity. */
function splitHeader(buf: Uint8Array): SplitFile {
  const pages = readOggPages(buf);
  const first = pages[0];
  if (!first) throw malformed('empty file');
  if (!(first.headerType & 0x02)) throw malformed('first page lacks the BOS flag');
  const serial = first.serial;
  const headerPackets: Uint8Array[] = [];
  let partial: Uint8Array[] = [];
  let p = 0;
  // RFC 7845 §3: the ID header is alone on page 0, the comment header ends a page.
  for (; p < pages.length && headerPackets.length < 2; p++) {
    const page = pages[p]!;
    let start = 0;
    let pos = 0;
    for (const v of page.lacing) {
      pos += v;
      if (v < 255) {
        headerPackets.push(Buffer.concat([...partial, page.data.subarray(start, pos)]));
        partial = [];
        start = pos;
      }
    }
    if (start < pos) partial.push(page.data.subarray(start, pos));
    if (headerPackets.length >= 2 && (headerPackets.length > 2 || partial.length > 0)) {
      throw malformed('audio data shares a page with the comment header');
    }
  }
  if (headerPackets.length < 2) throw malformed('missing OpusHead/OpusTags header packets');
  const audio = pages.slice(p);
  let expected = (first.sequence + p) >>> 0;
  for (const page of audio) {
    if (page.serial !== serial) throw malformed('more than one logical stream (chained or multiplexed files are not supported)');
    if (page.sequence !== expected) throw malformed(`page sequence gap before page ${page.sequence}`);
    expected = (expected + 1) >>> 0;
  }
  if (audio[0] && audio[0].headerType & 0x01) throw malformed('first audio page continues a packet');
  return { serial, head: parseOpusHead(headerPackets[0]!), tags: parseOpusTags(headerPackets[1]!), audio };
}

/**
 * Walks the lacing of consecutive pages and sums the durations of the
 * packets completed on each page, reading only each packet's first two
 * bytes (TOC and, for code 3, the frame count: RFC 6716 §3.1, §3.2.5).
 */
class PacketHeadWalker {
  inPacket = false;
  completedOnPage = false;
  #head = 0;
  #b0 = 0;
  #b1 = 0;

  /** Samples of the packets completed on `page`, -1 for an invalid TOC. */
  page(page: OggPage): number {
    if (((page.headerType & 0x01) !== 0) !== this.inPacket) throw malformed(`continuation flag mismatch on page ${page.sequence}`);
    let samples = 0;
    let pos = 0;
    this.completedOnPage = false;
    for (const v of page.lacing) {
      for (let k = 0; k < v && this.#head < 2; k++) {
        if (this.#head === 0) this.#b0 = page.data[pos + k]!;
        else this.#b1 = page.data[pos + k]!;
        this.#head++;
      }
      pos += v;
      this.inPacket = v === 255;
      if (v < 255) {
        const d = this.#duration();
        if (d < 0) return -1;
        samples += d;
        this.completedOnPage = true;
        this.#head = 0;
      }
    }
    return samples;
  }

  #duration(): number {
    if (this.#head === 0) return 0; // zero-length packet: a lost frame for the decoder (RFC 7845 §3)
    const frame = opusFrameSamples(this.#b0);
    const code = this.#b0 & 3;
    if (code === 0) return frame;
    if (code < 3) return 2 * frame;
    const count = this.#head > 1 ? this.#b1 & 0x3f : 0;
    return count === 0 || count * frame > OPUS_MAX_PACKET_SAMPLES ? -1 : count * frame;
  }
}
