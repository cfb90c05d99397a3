import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { OptinError } from '../errors/OptinError.ts';
import { keyBytesProblem, secretProblem } from '../crypto/secrets.ts';
import { withSecretFiles } from './secretFiles.ts';

/**
 * How every optin process reads its settings (the recorder's src/config/config.ts and the control
 * plane's src/controlplane/config.ts each describe theirs): defaults < a JSON file < OPTIN_*
 * variables (each one mapped to a dotted path) < overrides; `OPTIN_X_FILE=path` sets `OPTIN_X`;
 * then one strict schema. Invalid input fails at startup with one OptinError naming each bad
 * field and the variable that set it, never a secret's value.
 */

/** How a variable's text becomes a value. `list`: comma-separated. */
export type EnvKind = 'string' | 'number' | 'json' | 'list';

/** A shared secret setting: 32+ characters, not a placeholder from the examples, not uniform. */
export const secretSetting = z.string().refine((v) => secretProblem(v) === undefined, { error: (i) => secretProblem(String(i.input)) ?? 'invalid' });
/** An S3 secret key: the store chooses its length (8+), but never a placeholder or uniform. */
export const storeSecretKeySetting = z.string().refine((v) => secretProblem(v, 8) === undefined, { error: (i) => secretProblem(String(i.input), 8) ?? 'invalid' });

export interface EnvConfigSpec<S extends z.ZodType> {
  schema: S;
  /** Variable -> [dotted setting path, kind]. */
  env: Record<string, readonly [string, EnvKind]>;
  /** Variables no longer read: setting one is an error that says why. */
  retired?: Record<string, string>;
  /** Settings that hold secrets: their values are never echoed. */
  secretPaths: readonly string[];
  /** The variable naming the JSON file (OPTIN_CONFIG, OPTIN_CONTROL_CONFIG). */
  fileVariable: string;
  /** How errors name this configuration ("configuration", "control-plane configuration"). */
  title: string;
  /** Where the settings are listed, for an unknown key. */
  listedIn: string;
}

export interface LoadedConfig<T> {
  config: T;
  /** Dotted path -> the variable that set it. */
  origin: Map<string, string>;
}

export function loadEnvConfig<S extends z.ZodType>(spec: EnvConfigSpec<S>, env: NodeJS.ProcessEnv, overrides: Record<string, unknown>): LoadedConfig<z.infer<S>> {
  // OPTIN_X_FILE=path sets OPTIN_X (secretFiles.ts), but for a setting with a file variable of its
  // own (OPTIN_AUDIT_HMAC_KEY_FILE: its reader checks the file's mode). A retired variable given
  // as a file is refused like the variable itself, not ignored.
  const retired = spec.retired ?? {};
  env = withSecretFiles(env, [...Object.keys(spec.env).filter((name) => !(`${name}_FILE` in spec.env)), ...Object.keys(retired)]);
  let raw: Record<string, unknown> = {};
  const file = env[spec.fileVariable];
  if (file) {
    try {
      raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (cause) {
      throw new OptinError('CONFIG_INVALID', `${spec.fileVariable}=${file}: cannot read it as JSON (${(cause as Error).message})`);
    }
  }
  for (const [name, why] of Object.entries(retired)) {
    if (env[name] !== undefined && env[name] !== '') throw new OptinError('CONFIG_INVALID', `${name} is no longer read: ${why}`);
  }
  const origin = new Map<string, string>();
  for (const [name, [dotted, kind]] of Object.entries(spec.env)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    origin.set(dotted, name);
    setPath(raw, dotted, parseEnvValue(name, value, kind));
  }
  for (const [dotted, value] of Object.entries(overrides)) setPath(raw, dotted, value);

  const result = spec.schema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const path = issue.path.map(String);
      // Strict: a key nobody reads (a typo such as "retentionSecond") is named, never ignored.
      if (issue.code === 'unrecognized_keys') path.push(issue.keys.join(', '));
      const dotted = path.join('.');
      const via = origin.get(dotted) ?? [...origin.entries()].find(([p]) => dotted.startsWith(`${p}.`))?.[1];
      const secret = spec.secretPaths.some((p) => dotted === p || dotted.startsWith(`${p}.`));
      const what =
        issue.code === 'unrecognized_keys' ? `unknown setting${issue.keys.length > 1 ? 's' : ''} (check the spelling; ${spec.listedIn} lists every setting)` : issue.message;
      return `${dotted || '(root)'}${via ? ` (from ${via})` : ''}: ${what}${secret ? ' (value not shown)' : ''}`;
    });
    throw new OptinError('CONFIG_INVALID', `invalid ${spec.title}:\n  ${lines.join('\n  ')}`);
  }
  return { config: result.data, origin };
}

/** Each KEK of a keyring: not a placeholder, not uniform (Keyring.fromConfig checks base64 and length). */
export function checkKeyringKeys(keyring: { keys: Record<string, string> } | undefined, title: string, via: string | undefined): void {
  for (const [kid, value] of Object.entries(keyring?.keys ?? {})) {
    const problem = secretProblem(value, 0) ?? keyBytesProblem(Buffer.from(value, 'base64'));
    if (problem !== undefined) throw new OptinError('CONFIG_INVALID', `invalid ${title}:\n  keyring.keys.${kid}${via ? ` (from ${via})` : ''}: ${problem} (value not shown)`);
  }
}

function parseEnvValue(name: string, value: string, kind: EnvKind): unknown {
  switch (kind) {
    case 'string':
      return value;
    case 'number':
      return Number(value);
    case 'list':
      return value.split(',').map((v) => v.trim()).filter((v) => v !== '');
    case 'json':
      try {
        return JSON.parse(value);
      } catch {
        throw new OptinError('CONFIG_INVALID', `${name} is not valid JSON (value not shown: it holds secrets)`);
      }
  }
}

function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    if (typeof node[part] !== 'object' || node[part] === null) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
}
