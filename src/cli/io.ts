/** Output sinks for CLI commands, so tests can run commands in-process. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether stderr is a terminal (progress then shows as one updating line). */
  readonly stderrIsTTY?: boolean;
  /** stderr's terminal width, when it is one. */
  readonly stderrColumns?: number;
}

export const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  get stderrIsTTY() {
    return process.stderr.isTTY === true;
  },
  get stderrColumns() {
    return process.stderr.isTTY ? process.stderr.columns : undefined;
  },
};
