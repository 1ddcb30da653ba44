/**
 * Checks `eval` makes before any forward pass, on the model description the evaluator itself
 * reads (src/core/arch): the tokenizer's ids must fit the vocabulary and the window must fit the
 * model's positions (config.json's limit as RoPE scaling extends it, rope.ts positionLimit).
 */
import { promises as fsp } from 'node:fs';
import type { ModelDescription } from '../core/arch/description';
import { openCheckpoint } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';
import { readModelSpec } from '../core/eval/model';

/** What the guards read: the description's vocabulary and positions, and its config.json path. */
export interface EvalLimits {
  readonly vocab: ModelDescription['vocab'];
  readonly maxPositions: ModelDescription['maxPositions'];
  readonly maxPositionsSource: ModelDescription['maxPositionsSource'];
  /** `<checkpoint dir>/config.json`, for messages. */
  readonly where: string;
}

/** The limits of the model `eval` will run (a model eval cannot run is refused here already). */
export async function evalLimits(checkpoint: string): Promise<EvalLimits> {
  const ckpt = await openCheckpoint(checkpoint);
  try {
    const { vocab, maxPositions, maxPositionsSource } = readModelSpec(ckpt);
    return { vocab, maxPositions, maxPositionsSource, where: `${ckpt.dir}/config.json` };
  } finally {
    await ckpt.close();
  }
}

/** Refuses `--tokenizer bytes` on a model whose vocabulary is not the 256 byte values. */
export function checkBytesTokenizer(tokenizer: string, limits: EvalLimits): void {
  if (tokenizer === 'bytes' && limits.vocab !== 256) {
    throw new FactoredKeysError(`eval: --tokenizer bytes feeds byte values 0..255, but ${limits.where} has vocab_size ${limits.vocab}; give the model's tokenizer.json`);
  }
}

/** Refuses a window longer than the model's positions. */
export function checkSeq(seq: number, limits: EvalLimits): void {
  if (seq > limits.maxPositions) throw new FactoredKeysError(`eval: --seq ${seq} is longer than the model's ${limits.maxPositions} positions (${limits.where} ${limits.maxPositionsSource})`);
}

/** Refuses token ids outside the vocabulary. */
export function checkIds(ids: Int32Array, tokenizer: string, limits: EvalLimits): void {
  let max = -1;
  for (let i = 0; i < ids.length; i++) if (ids[i] > max) max = ids[i];
  if (max >= limits.vocab) throw new FactoredKeysError(`${tokenizer}: produces token id ${max}, outside the model's vocabulary of ${limits.vocab} (${limits.where} vocab_size); is it this model's tokenizer?`);
}

/** A warning line when a text file for a real tokenizer is not valid UTF-8 (e.g. a binary file). */
export async function utf8Warning(file: string, tokenizer: string): Promise<string | undefined> {
  if (tokenizer === 'bytes') return undefined;
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch {
    return undefined; // tokenizing reports the unreadable file
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return undefined;
  } catch {
    return `${file}: not valid UTF-8 text (a binary file?); invalid bytes are replaced before tokenizing`;
  }
}
