/**
 * RIFF/WAVE header for 16-bit PCM. ffmpeg writing WAV to a pipe cannot seek back to fill in the
 * sizes, so it leaves placeholders some players reject; we know the size, so we write the header.
 */
export function wavHeader(dataBytes: number, channels: number, sampleRate: number): Buffer {
  const bitsPerSample = 16;
  const blockAlign = (channels * bitsPerSample) / 8;
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(16, 16); // fmt chunk size
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * blockAlign, 28);
  h.writeUInt16LE(blockAlign, 32);
  h.writeUInt16LE(bitsPerSample, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}

/** Largest PCM payload a WAV file can describe (32-bit RIFF sizes). */
export const WAV_MAX_DATA_BYTES = 0xffff_ffff - 36;

/** A complete WAV file from interleaved s16le PCM. */
export function toWav(pcm: Buffer, channels: number, sampleRate: number): Buffer {
  if (pcm.length > WAV_MAX_DATA_BYTES) throw new RangeError('PCM too long for a WAV file (4 GiB RIFF limit)');
  return Buffer.concat([wavHeader(pcm.length, channels, sampleRate), pcm]);
}
