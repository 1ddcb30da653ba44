/**
 * Turning an evaluation text into token ids: the `bytes` tokenizer (id = byte value, what the
 * fixtures were trained with) or a Hugging Face `tokenizer.json` through @huggingface/tokenizers.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { FactoredKeysError } from '../errors';

/** A tokenizer choice: the literal `bytes`, or a path to a tokenizer.json. */
export type TokenizerSpec = 'bytes' | string;

/** Token ids of a text plus a short description of how they were made. */
export interface Tokenized {
  readonly ids: Int32Array;
  /** `bytes` or the tokenizer.json path. */
  readonly tokenizer: string;
}

/** Largest text read for evaluation; perplexity on more than this is not a quick check. */
const MAX_TEXT_BYTES = 256 * 1024 * 1024;

/** Reads a text file for evaluation (bytes), with one-line errors. */
export async function readEvalText(file: string): Promise<Uint8Array> {
  let stat;
  try {
    stat = await fsp.stat(file);
  } catch {
    throw new FactoredKeysError(`${file}: text file not found`);
  }
  if (!stat.isFile()) throw new FactoredKeysError(`${file}: not a regular file`);
  if (stat.size > MAX_TEXT_BYTES) throw new FactoredKeysError(`${file}: ${stat.size} bytes is larger than the ${MAX_TEXT_BYTES}-byte evaluation limit`);
  return new Uint8Array(await fsp.readFile(file));
}

/** `bytes` tokenizer: token id = byte value (0..255). */
export function bytesToIds(text: Uint8Array): Int32Array {
  return Int32Array.from(text);
}

async function readJsonObject(file: string, what: string): Promise<Record<string, unknown>> {
  let raw: string;
  try {
    raw = await fsp.readFile(file, 'utf8');
  } catch {
    throw new FactoredKeysError(`${file}: ${what} not found`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new FactoredKeysError(`${file}: ${what} is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new FactoredKeysError(`${file}: ${what} is not a JSON object`);
  return parsed as Record<string, unknown>;
}

/**
 * Tokenizes `text` with a Hugging Face tokenizer.json. tokenizer_config.json beside it is used
 * when present. Special tokens (BOS etc.) are not added: perplexity is over the text alone.
 */
export async function tokenizeWithJson(tokenizerFile: string, text: Uint8Array): Promise<Int32Array> {
  const json = await readJsonObject(tokenizerFile, 'tokenizer.json');
  if (json.model === undefined) throw new FactoredKeysError(`${tokenizerFile}: has no "model" section, so it is not a Hugging Face tokenizer.json`);
  const configFile = path.join(path.dirname(tokenizerFile), 'tokenizer_config.json');
  const config = await fsp.stat(configFile).then(() => readJsonObject(configFile, 'tokenizer_config.json'), () => ({}));
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
  } catch (e) {
    throw new FactoredKeysError(`${tokenizerFile}: cannot build the tokenizer (${(e as Error).message.split('\n')[0]})`);
  }
  const decoded = new TextDecoder('utf-8', { fatal: false }).decode(text);
  const { ids } = tokenizer.encode(decoded, { add_special_tokens: false });
  return Int32Array.from(ids);
}

/** Tokenizes a text file with `bytes` or a tokenizer.json path. */
export async function tokenizeFile(textFile: string, spec: TokenizerSpec): Promise<Tokenized> {
  const text = await readEvalText(textFile);
  if (spec === 'bytes') return { ids: bytesToIds(text), tokenizer: 'bytes' };
  return { ids: await tokenizeWithJson(spec, text), tokenizer: spec };
}
