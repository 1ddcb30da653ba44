/**
 * Checks `eval` makes before any forward pass, from the checkpoint's config.json: the
 * tokenizer's ids must fit the vocabulary and the window must fit the model's positions.
 */
import { promises as fsp } from 'node:fs';
import type { ModelConfig } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';

function intField(config: ModelConfig | undefined, keys: readonly string[]): { key: string; value: number } | undefined {
  const sources = [config, config?.text_config as ModelConfig | undefined];
  for (const src of sources) {
    if (!src || typeof src !== 'object') continue;
    for (const key of keys) {
      const v = src[key];
      if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return { key, value: v };
    }
  }
  return undefined;
}

/** The vocabulary size a config declares. */
export function configVocab(config: ModelConfig | undefined): { key: string; value: number } | undefined {
  return intField(config, ['vocab_size']);
}

/** The longest sequence a config's positions allow. */
export function configPositions(config: ModelConfig | undefined): { key: string; value: number } | undefined {
  return intField(config, ['max_position_embeddings', 'n_positions', 'n_ctx', 'max_sequence_length', 'seq_length']);
}

/** Refuses `--tokenizer bytes` on a model whose vocabulary is not the 256 byte values. */
export function checkBytesTokenizer(tokenizer: string, config: ModelConfig | undefined, checkpoint: string): void {
  const vocab = configVocab(config);
  if (tokenizer === 'bytes' && vocab && vocab.value !== 256) {
    throw new FactoredKeysError(`eval: --tokenizer bytes feeds byte values 0..255, but ${checkpoint}/config.json has ${vocab.key} ${vocab.value}; give the model's tokenizer.json`);
  }
}

/** Refuses a window longer than the model's positions. */
export function checkSeq(seq: number, config: ModelConfig | undefined, checkpoint: string): void {
  const pos = configPositions(config);
  if (pos && seq > pos.value) throw new FactoredKeysError(`eval: --seq ${seq} is longer than the model's ${pos.value} positions (${checkpoint}/config.json ${pos.key})`);
}

/** Refuses token ids outside the vocabulary. */
export function checkIds(ids: Int32Array, tokenizer: string, config: ModelConfig | undefined, checkpoint: string): void {
  const vocab = configVocab(config);
  if (!vocab) return;
  let max = -1;
  for (let i = 0; i < ids.length; i++) if (ids[i] > max) max = ids[i];
  if (max >= vocab.value) throw new FactoredKeysError(`${tokenizer}: produces token id ${max}, outside the model's vocabulary of ${vocab.value} (${checkpoint}/config.json ${vocab.key}); is it this model's tokenizer?`);
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
