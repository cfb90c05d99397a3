import { randomBytes } from 'node:crypto';
import { openSegment } from '../../src/crypto/segmentSeal.ts';
import type { SegmentBody } from '../../src/storage/types.ts';

/**
 * The Ogg file of a segment as a sink receives it: the file itself (a track here), or a media
 * thread's handle (HeldSegment), which only gives its bytes sealed. Those are sealed in the thread
 * with a key of the test's, brought over as the spool would get them and opened here: what the
 * thread sealed must open to the Ogg it held.
 */
export async function oggOfSegment(body: SegmentBody, where = { recordingId: 'r_test', participantId: 'p_test', segment: 0 }): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body;
  const key = randomBytes(32);
  const aad = { bucket: 'test-media', objectKey: `${where.recordingId}/${where.participantId}/${where.segment}`, ...where };
  const figures = await body.seal(key, aad);
  const sealed = await body.take();
  if (sealed.length !== figures.sealedBytes) throw new Error(`sealed ${sealed.length} bytes, the thread said ${figures.sealedBytes}`);
  return openSegment(key, sealed, aad);
}
