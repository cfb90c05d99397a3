/**
 * Zeroes a buffer and, where it owns its whole memory, gives that memory back at once.
 *
 * Why: a segment's Ogg and sealed bytes (~140 KB at a minute of speech) live for seconds, across
 * many young-generation collections, so V8 promotes them and frees their memory only at its next
 * full collection, which it starts once tens of MB of such memory have piled up. At 25 finished
 * segments a second a media thread's private memory then grows by that much, and the allocator
 * keeps the high-water mark (README, performance: memory). Detaching the ArrayBuffer
 * (`transfer(0)`) frees its backing store now; the view is left empty (length 0).
 *
 * Only for buffers nothing else will read: never while a socket may still be writing from it. A
 * buffer that shares its ArrayBuffer (Node's pool for small buffers, a view into a larger one) or
 * cannot be detached is only zeroed, and freed by the collector as before.
 */
export function discardBytes(bytes: Uint8Array): void {
  if (bytes.buffer instanceof ArrayBuffer && bytes.buffer.detached) return; // freed already
  bytes.fill(0);
  if (!ownsItsMemory(bytes)) return;
  try {
    (bytes.buffer as ArrayBuffer).transfer(0);
  } catch {
    // Not detachable (an ArrayBuffer some native code keeps): zeroed, left to the collector.
  }
}

/** True when the view spans the whole of a (non-shared, attached) ArrayBuffer: it can be moved or freed alone. */
export function ownsItsMemory(bytes: Uint8Array): boolean {
  const ab = bytes.buffer;
  return ab instanceof ArrayBuffer && !ab.detached && bytes.byteOffset === 0 && bytes.byteLength === ab.byteLength;
}
