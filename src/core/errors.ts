/**
 * A problem with the user's input or environment that the tool reports as one line
 * (`error: <message>`). Anything else that escapes is a bug and keeps its stack.
 */
export class FactoredKeysError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FactoredKeysError';
  }
}

/** Raised when the user cancels a long operation (CLI signal, VS Code progress cancel). */
export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}

/** Cooperative cancellation shared by the CLI, the extension and worker threads. */
export interface CancelToken {
  readonly cancelled: boolean;
}

export const neverCancelled: CancelToken = { cancelled: false };

export function throwIfCancelled(token: CancelToken | undefined): void {
  if (token?.cancelled) throw new CancelledError();
}

/** Progress callback: `done` of `total` units, with a short human label. */
export type ProgressFn = (done: number, total: number, label: string) => void;
