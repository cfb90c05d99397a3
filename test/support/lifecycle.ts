import { afterAll, beforeAll } from 'vitest';

/**
 * Something a whole test file shares (a stack, a softphone host), in the manner of mediasoup's
 * test fixtures: started in a beforeAll, closed in an afterAll. The handle returned at once reads
 * through to the started value, so files declare `const stack = useStack(...)` at the top and use
 * it in hooks and tests; touching it before the beforeAll ran throws, naming `what`.
 *
 * Call it before the file's own hooks: its beforeAll then runs first and its afterAll last
 * (vitest runs after-hooks in reverse order), so what depends on it starts after and closes before.
 */
export function useForFile<T extends object>(what: string, start: () => Promise<T>, close: (value: T) => Promise<void>): T {
  let running: T | undefined;
  beforeAll(async () => {
    running = await start();
  });
  afterAll(async () => {
    if (running !== undefined) await close(running);
    running = undefined;
  });
  return new Proxy({} as T, {
    get(_, prop) {
      if (running === undefined) throw new Error(`${what} starts in beforeAll: use it inside hooks and tests`);
      const value: unknown = Reflect.get(running, prop, running);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(running) : value;
    },
  });
}
