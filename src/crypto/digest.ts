import { createHash } from 'node:crypto';

/** Hex SHA-256 (FIPS 180-4) of `data`: the digests of sealed objects in manifests and spool sidecars. */
export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}
