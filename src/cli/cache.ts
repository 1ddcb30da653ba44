/** `--cache-dtype` / `--bytes-per-value`: the one choice of how many bytes a cached value takes. */
import type { ModelConfig } from '../core/checkpoint/checkpoint';
import { FactoredKeysError } from '../core/errors';
import { defaultCacheDtype, explicitCacheDtype, parseCacheDtype, type CacheDtypeChoice } from '../core/savings/cacheDtype';
import { parseStrictNumber, type ParsedArgs } from './args';

/**
 * The cache dtype of a command: `--cache-dtype`, else `--bytes-per-value`, else the config's
 * 16-bit `torch_dtype`, else bf16. `subByteHint` names the flag to suggest for fractions.
 */
export function cacheChoiceFromArgs(args: ParsedArgs, command: string, config: ModelConfig | undefined, subByteHint?: string): CacheDtypeChoice {
  const dtypeRaw = args.values.get('cache-dtype');
  const bytesRaw = args.values.get('bytes-per-value');
  if (dtypeRaw !== undefined && bytesRaw !== undefined) throw new FactoredKeysError(`${command}: give --cache-dtype or --bytes-per-value, not both`);
  if (dtypeRaw !== undefined) return explicitCacheDtype(parseCacheDtype(dtypeRaw, `${command}: --cache-dtype`));
  if (bytesRaw !== undefined) {
    if (/^\d*\.\d+$/.test(bytesRaw) && Number(bytesRaw) > 0 && Number.isInteger(Number(bytesRaw) * 8)) {
      throw new FactoredKeysError(`${command}: --bytes-per-value takes whole bytes, got ${bytesRaw}${subByteHint ? `; for sub-byte caches give ${subByteHint} ${Number(bytesRaw) * 8}` : ''}`);
    }
    const n = parseStrictNumber(bytesRaw, `${command}: --bytes-per-value`, { integer: true, min: 1, max: 64 });
    return { bytesPerValue: n, source: 'flag', why: '--bytes-per-value' };
  }
  return defaultCacheDtype(config);
}

/** Checks the flags alone (before a checkpoint is open), so bad values fail before any work. */
export function checkCacheFlags(args: ParsedArgs, command: string, subByteHint?: string): void {
  cacheChoiceFromArgs(args, command, undefined, subByteHint);
}
