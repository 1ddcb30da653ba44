/**
 * `finetune <factored-ckpt> <outdir> --text FILE --tokenizer bytes|<tokenizer.json> [--steps 300]
 * [--lr 0.001] [--batch 32] [--seq 256] [--device auto|cuda|cpu] [--teacher DIR [--lm-weight W]]
 * [--freeze-key-up] [--python PATH] [--force] [--json]`: trains the queries and thin keys in PyTorch (docs/FINETUNE.md). Progress lines
 * (step, loss, tokens/s, ETA) go to stderr; Ctrl-C kills the training and removes the partial
 * output.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { FactoredKeysError } from '../core/errors';
import { finetuneFactored, type FinetuneDevice, type FinetuneEvent } from '../core/finetune/finetune';
import { numberFlag, parseArgs } from './args';
import type { CliIo } from './io';
import { commandSpec, commandUsageLine } from './options';

const SPEC = commandSpec('finetune');

/** `--lr`: a positive decimal, exponent allowed (1e-3). */
function lrFlag(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (!/^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(raw) || !Number.isFinite(v) || v <= 0 || v > 1) throw new FactoredKeysError(`finetune: --lr must be a positive number at most 1 (e.g. 0.001 or 1e-3), got "${raw}"`);
  return v;
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** One progress line per event, for the terminal (stderr). */
export function formatFinetuneEvent(e: FinetuneEvent): string | undefined {
  switch (e.event) {
    case 'phase':
      if (e.phase === 'checking-python') return undefined; // a failure there is the one error line
      return `finetune: ${e.phase.replace('-', ' ')}${e.detail ? ` (${e.detail})` : ''}`;
    case 'start':
      return `finetune: training ${e.trained_parameters.toLocaleString('en-US')} of ${e.total_parameters.toLocaleString('en-US')} parameters (${e.tensors.length} tensors) on ${e.device_name}, torch ${e.torch}, transformers ${e.transformers}; ${e.steps} steps of ${e.batch} x ${e.seq} tokens, held-out slice ${e.heldout_tokens} tokens`;
    case 'eval':
      return `finetune: held-out perplexity ${e.phase} ${e.perplexity.toFixed(4)}${e.kl !== undefined ? `, KL to the teacher ${e.kl.toFixed(5)}` : ''}`;
    case 'step': {
      const parts = e.kl !== undefined ? ` (KL ${e.kl.toFixed(5)}${e.lm !== undefined ? `, LM ${e.lm.toFixed(4)}` : ''})` : '';
      return `finetune: step ${e.step}/${e.steps} loss ${e.loss.toFixed(4)}${parts} ${Math.round(e.tokens_per_s).toLocaleString('en-US')} tokens/s ETA ${duration(e.eta_s)}`;
    }
    case 'saved':
      return `finetune: wrote ${e.file}`;
    default:
      return undefined;
  }
}

/** The `finetune --json` object. */
export interface FinetuneJson {
  output: string;
  kept: 'trained' | 'original';
  heldout_perplexity: { before: number; after: number };
  /** With --teacher: the held-out slice's mean KL to the teacher, which decided `kept`. */
  heldout_kl?: { before: number; after: number };
  criterion: 'lm' | 'kl';
  loss: 'lm' | 'kl' | 'kl+lm';
  lm_weight: number;
  freeze_key_up: boolean;
  teacher?: string;
  steps: number;
  lr: number;
  batch: number;
  seq: number;
  device: string;
  train_seconds: number;
  tokens_per_second: number | null;
  trained_parameters: number;
  python: string;
  torch: string;
  transformers: string;
}

/** `finetune` command. */
export async function runFinetune(argv: string[], io: CliIo): Promise<number> {
  const args = parseArgs(argv, SPEC, 'finetune');
  if (args.positionals.length !== 2) throw new FactoredKeysError(`finetune: expected a factored checkpoint and an output folder (usage: ${commandUsageLine(SPEC)})`);
  const text = args.values.get('text');
  if (!text) throw new FactoredKeysError('finetune: --text FILE is required (training text; its last 5 % is held out for the before/after check)');
  let tokenizer = args.values.get('tokenizer');
  const checkpoint = args.positionals[0];
  if (tokenizer === undefined) {
    const beside = path.join(checkpoint, 'tokenizer.json');
    if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) tokenizer = beside;
    else throw new FactoredKeysError(`finetune: --tokenizer is required (bytes, or a tokenizer.json path); ${checkpoint} has no tokenizer.json`);
  } else if (tokenizer !== 'bytes' && !(await fsp.stat(tokenizer).then((s) => s.isFile(), () => false))) {
    throw new FactoredKeysError(`${tokenizer}: tokenizer file not found (give --tokenizer bytes or a tokenizer.json path)`);
  }
  const device = (args.values.get('device') ?? 'auto') as FinetuneDevice;
  if (!['auto', 'cuda', 'cpu'].includes(device)) throw new FactoredKeysError(`finetune: --device must be auto, cuda or cpu, got "${device}"`);
  const steps = numberFlag(args, 'steps', 'finetune', { integer: true, min: 1, max: 10_000_000 });
  const batch = numberFlag(args, 'batch', 'finetune', { integer: true, min: 1, max: 65536 });
  const seq = numberFlag(args, 'seq', 'finetune', { integer: true, min: 2, max: 1 << 20 });
  const lr = lrFlag(args.values.get('lr'));
  const teacher = args.values.get('teacher');
  const lmWeight = numberFlag(args, 'lm-weight', 'finetune', { min: 0, max: 1 });
  const quiet = args.booleans.has('quiet');
  const json = args.booleans.has('json');
  let cancelNow: (() => void) | undefined;
  const cancel = { cancelled: false };
  const onSignal = () => {
    cancel.cancelled = true;
    cancelNow?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await finetuneFactored({
      source: checkpoint,
      dest: args.positionals[1],
      text,
      tokenizer,
      steps,
      lr,
      batch,
      seq,
      device,
      ...(teacher !== undefined ? { teacher } : {}),
      ...(lmWeight !== undefined ? { lmWeight } : {}),
      freezeKeyUp: args.booleans.has('freeze-key-up'),
      python: args.values.get('python'),
      force: args.booleans.has('force'),
      cancel,
      onCancelHook: (f) => {
        cancelNow = f;
      },
      onEvent: (e) => {
        if (quiet) return;
        const line = formatFinetuneEvent(e);
        if (line) io.stderr(line + '\n');
      },
    });
    if (json) {
      const out: FinetuneJson = {
        output: r.dest,
        kept: r.kept,
        heldout_perplexity: { before: r.heldout.before, after: r.heldout.after },
        ...(r.heldout.klBefore !== undefined && r.heldout.klAfter !== undefined ? { heldout_kl: { before: r.heldout.klBefore, after: r.heldout.klAfter } } : {}),
        criterion: r.criterion,
        loss: r.loss,
        lm_weight: r.lmWeight,
        freeze_key_up: r.freezeKeyUp,
        ...(r.teacher ? { teacher: r.teacher.dir } : {}),
        steps: r.steps,
        lr: r.lr,
        batch: r.batch,
        seq: r.seq,
        device: r.device,
        train_seconds: r.trainSeconds,
        tokens_per_second: r.tokensPerSecond,
        trained_parameters: r.trainedParameters,
        python: r.python.executable,
        torch: r.python.torch,
        transformers: r.python.transformers,
      };
      io.stdout(JSON.stringify(out) + '\n');
    } else {
      const change = (100 * (r.heldout.after / r.heldout.before - 1)).toFixed(2);
      io.stdout(
        [
          `wrote ${r.dest}`,
          `held-out perplexity ${r.heldout.before.toFixed(4)} -> ${r.heldout.after.toFixed(4)} (${change} %)` +
            (r.heldout.klBefore !== undefined && r.heldout.klAfter !== undefined ? `, KL to the teacher ${r.heldout.klBefore.toFixed(5)} -> ${r.heldout.klAfter.toFixed(5)}` : '') +
            `; kept the ${r.kept} weights (by the held-out ${r.criterion === 'kl' ? 'KL' : 'LM loss'})`,
          `${r.steps} steps of ${r.batch} x ${r.seq} tokens at lr ${r.lr} on ${r.device} in ${r.trainSeconds.toFixed(1)} s` +
            (r.tokensPerSecond ? ` (${Math.round(r.tokensPerSecond).toLocaleString('en-US')} tokens/s)` : '') +
            (r.teacher ? `; loss ${r.loss === 'kl+lm' ? `(1 - ${r.lmWeight}) KL + ${r.lmWeight} LM` : r.loss.toUpperCase()}, teacher ${r.teacher.name}` : '') +
            (r.freezeKeyUp ? '; key_up frozen' : ''),
        ].join('\n') + '\n',
      );
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
