/**
 * Where a command writes. Its own file so that commands (`extract.ts`) and the dispatcher
 * (`main.ts`) both import it and neither imports the other's module for a type.
 */
export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Whether stderr is a terminal (progress bars redraw in place). */
  errIsTty: boolean;
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  errIsTty: Boolean(process.stderr.isTTY),
};
