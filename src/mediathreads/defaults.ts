/**
 * The media threads' defaults, in one place: the recorder's configuration (config/config.ts) and a
 * pool started directly (tests, the bench) take the same values. Measured with `npm run bench`:
 * see the README's performance section and docs/architecture.md §3.2.
 */

/** Receive coalescing: ms between drains of a thread's sockets (config mediaBatchMs). */
export const DEFAULT_BATCH_MS = 8;
/** V8 semi-space of each media thread's young generation, MB (config mediaThreadSemiSpaceMb). */
export const DEFAULT_SEMI_SPACE_MB = 2;
/** Each media thread's old generation limit, MB (config mediaThreadOldSpaceMb). */
export const DEFAULT_OLD_SPACE_MB = 512;
/** Where finished segments are sealed and PUT (config segmentSealing). */
export const DEFAULT_SEALING: 'thread' | 'main' = 'thread';
