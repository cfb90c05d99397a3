import { randomBytes } from 'node:crypto';
import { OptinError } from '../errors/OptinError.ts';
import { newDataKey, type Keyring, type WrapAlg } from '../crypto/Keyring.ts';

/**
 * Data-key documents: the JSON object in the keys bucket (`keys/<recordingId>/<participantId>.json`,
 * src/storage/layout.ts) that holds one track's data key wrapped by a KEK of the keyring. The
 * plaintext key never leaves memory; destroying this document crypto-shreds the track (R9).
 *
 * The wrap is bound to the track: the context names recording, participant and key id, so a
 * document copied onto another track does not unwrap there.
 */

export const DATA_KEY_FORMAT = 'optin-datakey/1';

export interface DataKeyDoc {
  format: typeof DATA_KEY_FORMAT;
  recordingId: string;
  participantId: string;
  dataKeyId: string;
  kekId: string;
  alg: WrapAlg;
  wrapped: string;
  createdAtMs: number;
}

export interface NewDataKey {
  /** Plaintext: zero it when the track ends. */
  dataKey: Buffer;
  doc: DataKeyDoc;
  /** The document as stored. */
  body: Buffer;
}

function keyContext(doc: { recordingId: string; participantId: string; dataKeyId: string }): string {
  return `optin/datakey/${doc.recordingId}/${doc.participantId}/${doc.dataKeyId}`;
}

/** A fresh random data key for one track and its wrapped document (the key is zeroed if wrapping fails). */
export function newDataKeyDocument(keyring: Keyring, alg: WrapAlg, track: { recordingId: string; participantId: string }, nowMs: number): NewDataKey {
  const dataKey = newDataKey();
  try {
    const dataKeyId = `dk_${randomBytes(8).toString('hex')}`;
    const docBase = { format: DATA_KEY_FORMAT, recordingId: track.recordingId, participantId: track.participantId, dataKeyId } as const;
    const wrapped = keyring.wrap(dataKey, { alg, context: keyContext(docBase) });
    const doc: DataKeyDoc = { ...docBase, ...wrapped, createdAtMs: nowMs };
    return { dataKey, doc, body: Buffer.from(JSON.stringify(doc)) };
  } catch (err) {
    dataKey.fill(0);
    throw err;
  }
}

/** The stored document of `recordingId/participantId`, checked to belong there (DATA_KEY_INVALID otherwise). */
export function parseDataKeyDocument(body: Buffer, recordingId: string, participantId: string): DataKeyDoc {
  let doc: DataKeyDoc;
  try {
    doc = JSON.parse(body.toString('utf8')) as DataKeyDoc;
  } catch {
    throw new OptinError('DATA_KEY_INVALID', `the stored data key of ${recordingId}/${participantId} is not JSON`);
  }
  if (doc.format !== DATA_KEY_FORMAT || doc.recordingId !== recordingId || doc.participantId !== participantId || typeof doc.dataKeyId !== 'string') {
    throw new OptinError('DATA_KEY_INVALID', `the stored data key of ${recordingId}/${participantId} belongs elsewhere or is malformed`);
  }
  return doc;
}

/** The plaintext data key of a stored document; the caller zeroes it when done. */
export function unwrapDataKey(keyring: Keyring, body: Buffer, recordingId: string, participantId: string): Buffer {
  const doc = parseDataKeyDocument(body, recordingId, participantId);
  return keyring.unwrap(doc, { context: keyContext(doc) });
}
