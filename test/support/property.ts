import { randomInt } from 'node:crypto';
import path from 'node:path';
import type fc from 'fast-check';
import { expect } from 'vitest';

/**
 * Seeds for fast-check properties, so that any failure can be replayed: every `fc.assert` takes
 * its parameters from `seeded(...)`, which uses OPTIN_PROPERTY_SEED when it is set and otherwise
 * a seed drawn once per test file, and prints the seed with the command that replays it.
 * (fast-check's own failure message adds the `path` of the shrunk counterexample.)
 */

const SEED_ENV = 'OPTIN_PROPERTY_SEED';

let fileSeed: number | undefined;

/** The seed of this test file's properties: OPTIN_PROPERTY_SEED, else one drawn for the file. */
export function propertySeed(): number {
  if (fileSeed === undefined) {
    const given = process.env[SEED_ENV];
    if (given !== undefined && given !== '') {
      const n = Number(given);
      if (!Number.isSafeInteger(n)) throw new Error(`${SEED_ENV}=${given} is not an integer: set it to the seed a property run printed`);
      fileSeed = n | 0; // fast-check seeds are 32-bit integers
    } else {
      fileSeed = randomInt(-(2 ** 31), 2 ** 31);
    }
  }
  return fileSeed;
}

/** `params` with this file's seed, printed with the current test's name and the replay command. */
export function seeded<T>(params: fc.Parameters<T> = {}): fc.Parameters<T> {
  const seed = propertySeed();
  const { currentTestName, testPath } = expect.getState();
  const file = testPath === undefined ? '' : ` ${path.relative(process.cwd(), testPath)}`;
  console.log(`[property] ${currentTestName ?? ''}: seed ${seed} (replay: ${SEED_ENV}=${seed} npx vitest run${file})`);
  return { ...params, seed };
}
