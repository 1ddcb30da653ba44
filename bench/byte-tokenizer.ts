/**
 * Writes a Llama-style tokenizer.json with only byte-fallback tokens: <unk>, <s>, </s>, then
 * <0x00>..<0xFF> at ids 3..258 and no merges, so every UTF-8 byte of a text is one token
 * (id = byte + 3). Lets the CLI feed a byte-level calibration text to the synthetic 32000-vocab
 * checkpoints of ./synthetic.ts, whose vocabulary `--tokenizer bytes` does not fit.
 *
 *   node --import tsx bench/byte-tokenizer.ts <out/tokenizer.json>
 */
import { writeFileSync } from 'node:fs';

export function byteFallbackTokenizer(): Record<string, unknown> {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null,
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [] },
  };
}

if (process.argv[1]?.endsWith('byte-tokenizer.ts')) {
  const out = process.argv[2];
  if (!out) throw new Error('usage: byte-tokenizer.ts <out/tokenizer.json>');
  writeFileSync(out, JSON.stringify(byteFallbackTokenizer()));
}
