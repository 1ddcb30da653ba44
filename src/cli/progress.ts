import type { ProgressFn } from '../core/errors';
import type { CliIo } from './io';

/** A progress callback that prints `label NN%` on stderr whenever the whole percentage changes. */
export function percentProgress(io: CliIo): ProgressFn {
  let lastPct = -1;
  return (done, total, label) => {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
    if (pct !== lastPct) io.stderr(`${label} ${pct}%\n`);
    lastPct = pct;
  };
}
