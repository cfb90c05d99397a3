import { processIo, type CliIo } from './io.ts';

/**
 * Dispatches `optin <command>`. Every command returns its exit status instead of exiting, so
 * tests run them in-process and the stub in bin/optin.mjs only sets process.exitCode. Commands
 * are imported when chosen: `optin help` should not load the store, ffmpeg glue and crypto.
 */

export const USAGE = `usage: optin <command> [options]

Commands:
  extract --subject ID --case REF --out DIR [--format ogg|wav] [--operator ID]
                       subject-access extract: the subject's own voice tracks and a manifest (R12)
  audit verify [--bucket NAME] [--stream WRITER_ID] [--json]
                       proves the audit trail unbroken (R11)
  facts [--url URL] [--token-file F] [--file F | --fact JSON ...]
                       posts facts (calls, consent, schedules, teams) to the control plane
  catalogue rebuild [--dry-run] [--json]
                       rebuilds the catalogue of recordings from the store, lists differences
  integrations add|token|disable --name ID [--scopes ivr,wfm,hr,ops]
                       credentials of the systems that post facts
  help                 this text

Configuration comes from the environment, as for the worker (OPTIN_S3_*, OPTIN_KEYRING, ...).
Run "optin <command> --help" for a command's options.`;

export async function main(argv: string[], env: NodeJS.ProcessEnv, io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'extract': {
      const { runExtract } = await import('./extract.ts');
      return runExtract(rest, env, io);
    }
    case 'audit':
      if (rest[0] === 'verify') {
        const { runAuditVerify } = await import('../audit/verifyCommand.ts');
        return runAuditVerify(rest.slice(1), env, { out: (l) => io.out(`${l}\n`), err: (l) => io.err(`${l}\n`) });
      }
      io.err(`optin audit: unknown subcommand ${JSON.stringify(rest[0] ?? '')}\n${USAGE}\n`);
      return 2;
    case 'facts': {
      const { runFacts } = await import('./facts.ts');
      return runFacts(rest, env, io);
    }
    case 'catalogue': {
      const { runCatalogue } = await import('./catalogue.ts');
      return runCatalogue(rest, env, io);
    }
    case 'integrations': {
      const { runIntegrations } = await import('./integrations.ts');
      return runIntegrations(rest, env, io);
    }
    case 'help':
    case '--help':
    case '-h':
      io.out(`${USAGE}\n`);
      return 0;
    default:
      io.err(`optin: unknown command ${JSON.stringify(command ?? '')}\n${USAGE}\n`);
      return 2;
  }
}
