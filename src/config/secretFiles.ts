import { readFileSync } from 'node:fs';
import { OptinError } from '../errors/OptinError.ts';

/**
 * `<NAME>_FILE`: any setting's value read from a file instead of the environment, for secrets
 * mounted as files (Docker and Kubernetes secrets, systemd credentials). A secret then appears in
 * no environment block, compose file, `docker inspect` or /proc/<pid>/environ.
 *
 * Used by both configuration loaders (src/config/config.ts, src/controlplane/config.ts) before
 * they read their variables: `OPTIN_S3_SECRET_KEY_FILE=/run/secrets/s3-secret-key` sets
 * `OPTIN_S3_SECRET_KEY`. Trailing line breaks are dropped (`openssl rand -base64 48 > file`
 * writes one). Setting both NAME and NAME_FILE is an error: which one wins would be a guess.
 * Errors name the variable and the path, never the content.
 */
export function withSecretFiles(env: NodeJS.ProcessEnv, names: Iterable<string>): NodeJS.ProcessEnv {
  let resolved: NodeJS.ProcessEnv | undefined;
  for (const name of names) {
    const file = env[`${name}_FILE`];
    if (file === undefined || file === '') continue;
    if (env[name] !== undefined && env[name] !== '') {
      throw new OptinError('CONFIG_INVALID', `both ${name} and ${name}_FILE are set: keep one (the file, for a secret)`);
    }
    let value: string;
    try {
      value = readFileSync(file, 'utf8');
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code ?? 'error';
      throw new OptinError('SECRET_FILE_UNREADABLE', `${name}_FILE=${file}: cannot read it (${code}); mount the secret there or fix the path`);
    }
    value = value.replace(/[\r\n]+$/, '');
    if (value === '') throw new OptinError('CONFIG_INVALID', `${name}_FILE=${file}: the file is empty`);
    resolved ??= { ...env };
    resolved[name] = value;
    delete resolved[`${name}_FILE`];
  }
  return resolved ?? env;
}
