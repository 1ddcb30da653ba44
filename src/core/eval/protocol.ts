/**
 * The perplexity protocol, in one place so the CLI, the panel and the tests agree:
 * consecutive non-overlapping windows of `seq` tokens from token 0; window j feeds
 * ids[j·seq … j·seq+seq−1] and predicts ids[j·seq+1 … j·seq+seq], j = 0 … ⌊(N−1)/seq⌋−1;
 * every window starts from empty context; PPL = exp(mean NLL), accumulated in float64.
 */
import { FactoredKeysError } from '../errors';

/** Number of full windows the protocol takes from `tokens` token ids. */
export function windowCount(tokens: number, seq: number): number {
  if (!Number.isSafeInteger(seq) || seq < 1) throw new FactoredKeysError(`--seq must be a positive integer, got ${seq}`);
  return tokens < 1 ? 0 : Math.floor((tokens - 1) / seq);
}

/**
 * Inputs and targets of windows [first, first + count), as int64 tensors' data ([count, seq]).
 */
export function windowBatch(ids: Int32Array, seq: number, first: number, count: number): { inputs: BigInt64Array; targets: BigInt64Array } {
  const inputs = new BigInt64Array(count * seq);
  const targets = new BigInt64Array(count * seq);
  for (let w = 0; w < count; w++) {
    const start = (first + w) * seq;
    for (let t = 0; t < seq; t++) {
      inputs[w * seq + t] = BigInt(ids[start + t]);
      targets[w * seq + t] = BigInt(ids[start + t + 1]);
    }
  }
  return { inputs, targets };
}

/** Float64 accumulator of per-token negative log-likelihoods. */
export class NllAccumulator {
  private sum = 0;
  private count = 0;
  /** Per-window NLL sums, in window order (kept for tests and diagnostics). */
  readonly windowSums: number[] = [];

  /** Adds the NLLs of `windows` consecutive windows of `seq` tokens each. */
  addWindows(nll: ArrayLike<number>, windows: number, seq: number): void {
    for (let w = 0; w < windows; w++) {
      let s = 0;
      for (let t = 0; t < seq; t++) s += nll[w * seq + t];
      this.windowSums.push(s);
      this.sum += s;
      this.count += seq;
    }
  }

  get tokens(): number {
    return this.count;
  }

  get meanNll(): number {
    return this.count > 0 ? this.sum / this.count : NaN;
  }

  get perplexity(): number {
    return Math.exp(this.meanNll);
  }
}

/** Checks that the text gives at least one window and every id fits the vocabulary. */
export function checkTokens(ids: Int32Array, seq: number, vocab: number, where: string): number {
  const windows = windowCount(ids.length, seq);
  if (windows < 1) throw new FactoredKeysError(`${where}: ${ids.length} tokens is too short for one window of --seq ${seq} (needs ${seq + 1})`);
  const used = windows * seq + 1;
  for (let i = 0; i < used; i++) {
    if (ids[i] < 0 || ids[i] >= vocab) throw new FactoredKeysError(`${where}: token ${i} has id ${ids[i]}, outside the model's vocabulary of ${vocab}`);
  }
  return windows;
}
