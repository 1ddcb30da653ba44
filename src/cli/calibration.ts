/**
 * `--calibration FILE --tokenizer bytes|<tokenizer.json> [--calibration-tokens N]`: the
 * calibration text of `--method calibrated` (plan, export, eval). For eval, --tokenizer serves
 * both the evaluation and the calibration text.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { CalibrationSpec } from '../core/calibration/moments';
import type { BackendChoice } from '../core/compute/session';
import { FactoredKeysError } from '../core/errors';
import type { FactorMethod } from '../core/plan/types';
import { numberFlag, type ParsedArgs } from './args';

/** What the calibration flags need beyond the parsed arguments. */
export interface CalibrationFlagContext {
  readonly command: string;
  readonly method: FactorMethod;
  readonly checkpoint: string;
  /** Whether --tokenizer is this command's own (eval) rather than only the calibration's. */
  readonly sharedTokenizer?: boolean;
  readonly backend?: BackendChoice;
  readonly threads?: number;
}

async function vocabOf(checkpoint: string): Promise<number | undefined> {
  try {
    const config = JSON.parse(await fsp.readFile(path.join(checkpoint, 'config.json'), 'utf8')) as Record<string, unknown>;
    const text = (config.text_config ?? {}) as Record<string, unknown>;
    const v = config.vocab_size ?? text.vocab_size;
    return typeof v === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The calibration spec of the command line, or undefined for another method. One-line errors
 * for flags without `--method calibrated`, a missing or empty text, a missing tokenizer, and
 * `--tokenizer bytes` on a model whose vocabulary is not the 256 byte values.
 */
export async function calibrationFromArgs(args: ParsedArgs, ctx: CalibrationFlagContext): Promise<CalibrationSpec | undefined> {
  const { command } = ctx;
  const file = args.values.get('calibration');
  const tokensGiven = args.values.has('calibration-tokens');
  if (ctx.method !== 'calibrated') {
    if (file !== undefined || tokensGiven) throw new FactoredKeysError(`${command}: --calibration and --calibration-tokens go with --method calibrated`);
    if (!ctx.sharedTokenizer && args.values.has('tokenizer')) throw new FactoredKeysError(`${command}: --tokenizer goes with --method calibrated`);
    return undefined;
  }
  if (file === undefined) throw new FactoredKeysError(`${command}: --method calibrated needs --calibration FILE (a text like the model's training data) and --tokenizer bytes|<tokenizer.json>`);
  const st = await fsp.stat(file).catch(() => undefined);
  if (!st) throw new FactoredKeysError(`${file}: calibration text not found`);
  if (!st.isFile()) throw new FactoredKeysError(`${file}: the calibration text is not a regular file`);
  if (st.size === 0) throw new FactoredKeysError(`${file}: the calibration text is empty`);
  let tokenizer = args.values.get('tokenizer');
  if (tokenizer === undefined) {
    const beside = path.join(ctx.checkpoint, 'tokenizer.json');
    if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) tokenizer = beside;
    else throw new FactoredKeysError(`${command}: --method calibrated needs --tokenizer bytes|<tokenizer.json>; ${ctx.checkpoint} has no tokenizer.json`);
  } else if (tokenizer !== 'bytes') {
    const ts = await fsp.stat(tokenizer).catch(() => undefined);
    if (!ts?.isFile()) throw new FactoredKeysError(`${tokenizer}: tokenizer file not found (give --tokenizer bytes or a tokenizer.json path)`);
  }
  if (tokenizer === 'bytes') {
    const vocab = await vocabOf(ctx.checkpoint);
    if (vocab !== undefined && vocab !== 256) throw new FactoredKeysError(`${command}: --tokenizer bytes feeds byte values 0..255, but ${ctx.checkpoint}/config.json has vocab_size ${vocab}; give the model's tokenizer.json`);
  }
  const tokens = numberFlag(args, 'calibration-tokens', command, { integer: true, min: 1 });
  return { text: file, tokenizer, tokens, backend: ctx.backend, threads: ctx.threads };
}
