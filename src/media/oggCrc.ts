/**
 * The Ogg page checksum (RFC 3533 §6, libogg `framing.c`): CRC-32 with
 * generator polynomial 0x04C11DB7, initial value 0, no final XOR and, unlike
 * zlib's CRC-32, no bit reflection (MSB first). It is computed over the whole
 * page with the 4 checksum bytes set to zero.
 */

// Signed 32-bit entries: the loop below stays in int32 arithmetic (no
// conversion to unsigned per byte); only the result is made unsigned.
const TABLE: Int32Array = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let bit = 0; bit < 8; bit++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    t[i] = r;
  }
  return t;
})();

/** Continues `crc` over `data[start, end)`; start a new checksum with crc = 0. */
export function oggCrcUpdate(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  let c = crc | 0;
  for (let i = start; i < end; i++) c = (c << 8) ^ TABLE[((c >>> 24) ^ data[i]!) & 0xff]!;
  return c >>> 0;
}

/** CRC of a whole page buffer, treating bytes 22..25 (the checksum field) as zero. */
export function oggPageCrc(page: Uint8Array): number {
  let c = oggCrcUpdate(0, page, 0, 22);
  c = oggCrcUpdate(c, ZERO4);
  return oggCrcUpdate(c, page, 26);
}

const ZERO4 = new Uint8Array(4);
