import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const GENERATED = fileURLToPath(new URL('../../media-fixtures/generated/', import.meta.url));

/** A fixture made by media-fixtures/generate.sh (run by `npm run setup`). */
export function fixturePath(name: string): string {
  const p = GENERATED + name;
  if (!existsSync(p)) throw new Error(`fixture ${name} missing: run \`npm run fixtures\``);
  return p;
}
