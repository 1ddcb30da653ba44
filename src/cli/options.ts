/**
 * The one option table of the CLI: every command's positional arguments and flags, with their
 * help. Argument parsing, `factored-keys <command> --help` and the top-level usage are all
 * derived from it, so they cannot drift apart.
 */
import { BACKEND_CHOICES } from '../core/compute/session';

/** One flag of a command. */
export interface OptionSpec {
  /** Flag name without the leading `--`. */
  readonly flag: string;
  /** Placeholder of the value (e.g. `R`); absent for boolean flags. */
  readonly value?: string;
  /** One-line description for `--help`. */
  readonly help: string;
  /** The flag may be given several times; its values accumulate. */
  readonly repeatable?: boolean;
}

/** One command: what it takes and what it does. */
export interface CommandSpec {
  readonly name: string;
  /** Positional arguments as shown in usage, e.g. `<checkpoint> <outdir>`. */
  readonly args: string;
  /** One-line description. */
  readonly summary: string;
  readonly options: readonly OptionSpec[];
  /** Extra lines printed after the option list by `--help`. */
  readonly notes?: readonly string[];
}

const JSON_OPTION: OptionSpec = { flag: 'json', help: 'print one JSON object on stdout instead of text' };
/** Progress on stderr: an updating line on a terminal by default, lines with --progress, none with --quiet. */
const PROGRESS_OPTIONS: readonly OptionSpec[] = [
  { flag: 'progress', help: 'print progress on stderr one line per update, for logs (default: one updating line when stderr is a terminal)' },
  { flag: 'quiet', help: 'no progress output' },
];
const THREADS_OPTION: OptionSpec = { flag: 'threads', value: 'N', help: 'worker threads (1..1024; default: all cores but one)' };
const backendOption = (help: string): OptionSpec => ({ flag: 'backend', value: BACKEND_CHOICES.join('|'), help });

/** The rank-policy flags shared by plan, export and eval. */
const POLICY_OPTIONS: readonly OptionSpec[] = [
  { flag: 'method', value: 'key-svd|qk-svd|calibrated', help: 'factorization: truncated SVD of W_K (the paper), the score-preserving rank-r key map, or that map fitted to a calibration text' },
  { flag: 'rank', value: 'R', help: 'the same rank R (1..head_dim) for every KV head' },
  { flag: 'fraction', value: 'F', help: 'rank = round(F x head_dim) for every KV head, 0 < F <= 1 (0.25 = 75 % smaller keys)' },
  { flag: 'energy', value: 'E', help: 'per head, the smallest rank that keeps a share E of the key energy, 0 < E <= 1' },
  { flag: 'budget-bytes-per-token', value: 'N', help: 'global key-cache budget in bytes per token, spent greedily where energy is largest' },
  { flag: 'plan', value: 'plan.json', help: 'a saved plan (from plan --out or the panel), made for this checkpoint' },
  { flag: 'override', value: 'L:G=R[,L:G=R...]', help: 'pin layer L, KV head G to rank R; each head at most once', repeatable: true },
  { flag: 'calibration', value: 'FILE', help: 'with --method calibrated: the calibration text (like the training data; statistics are cached)' },
  { flag: 'calibration-tokens', value: 'N', help: 'with --method calibrated: use at most N tokens of the calibration text (default 262144)' },
];

/** The calibration text's tokenizer (plan, export; eval's --tokenizer serves both texts). */
const CALIBRATION_TOKENIZER_OPTION: OptionSpec = { flag: 'tokenizer', value: 'bytes|tokenizer.json', help: "with --method calibrated: raw UTF-8 bytes as ids, or a tokenizer.json (default: the checkpoint's)" };

/** The tokenizer of the text a command reads (eval, finetune). */
const TEXT_TOKENIZER_OPTION: OptionSpec = { flag: 'tokenizer', value: 'bytes|tokenizer.json', help: "raw UTF-8 bytes as ids, or a tokenizer.json (default: the checkpoint's)" };

/** How cached values are priced (plan, export, eval: the budget policy and the reported savings). */
const CACHE_OPTIONS: readonly OptionSpec[] = [
  { flag: 'cache-dtype', value: 'f32|f16|bf16|fp8', help: "KV-cache element type (default: the config's torch_dtype when 16-bit, else bf16)" },
  { flag: 'bytes-per-value', value: 'N', help: 'bytes per cached element, instead of --cache-dtype' },
];

/** Every command, in the order usage lists them. */
export const COMMAND_SPECS: readonly CommandSpec[] = [
  {
    name: 'inspect',
    args: '<checkpoint>',
    summary: 'attention layout of a checkpoint (also of factored exports)',
    options: [JSON_OPTION],
  },
  {
    name: 'analyze',
    args: '<checkpoint>',
    summary: "every key and query head's singular values",
    options: [
      JSON_OPTION,
      backendOption('compute backend; auto uses the provider remembered as fastest for this model shape, else the CPU'),
      { flag: 'calibrate', help: 'with --backend auto: time every usable provider once and remember the fastest' },
      THREADS_OPTION,
      { flag: 'kinds', value: 'key,query', help: 'which projections to analyse (default both)' },
      ...PROGRESS_OPTIONS,
    ],
  },
  {
    name: 'plan',
    args: '<checkpoint>',
    summary: 'per-KV-head ranks from a rank policy, printed and optionally saved',
    options: [
      ...POLICY_OPTIONS,
      CALIBRATION_TOKENIZER_OPTION,
      ...CACHE_OPTIONS,
      { flag: 'out', value: 'plan.json', help: 'also save the plan to this file' },
      { flag: 'force', help: 'with --out: replace an existing file' },
      ...PROGRESS_OPTIONS,
      JSON_OPTION,
    ],
    notes: ['give exactly one of --rank, --fraction, --energy, --budget-bytes-per-token, --plan'],
  },
  {
    name: 'export',
    args: '<checkpoint> <outdir>',
    summary: 'write a factored checkpoint (docs/FORMAT.md)',
    options: [...POLICY_OPTIONS, CALIBRATION_TOKENIZER_OPTION, ...CACHE_OPTIONS, { flag: 'force', help: 'replace a non-empty output folder' }, ...PROGRESS_OPTIONS, JSON_OPTION],
    notes: ['give --method and exactly one of --rank, --fraction, --energy, --budget-bytes-per-token, or --plan alone', 'never writes into or over its source; Ctrl-C removes the partial output'],
  },
  {
    name: 'savings',
    args: '[<checkpoint>]',
    summary: 'KV-cache bytes before and after factoring keys',
    options: [
      { flag: 'layers', value: 'L', help: 'layers (without a checkpoint)' },
      { flag: 'kv-heads', value: 'H', help: 'KV heads per layer (without a checkpoint)' },
      { flag: 'head-dim', value: 'D', help: 'head dimension (without a checkpoint)' },
      { flag: 'key-rank', value: 'R', help: 'the same key rank for every KV head' },
      { flag: 'key-fraction', value: 'F', help: 'key rank = round(F x head_dim), 0 < F <= 1' },
      { flag: 'plan', value: 'plan.json', help: "a saved plan's per-head ranks" },
      { flag: 'context', value: 'N', help: 'tokens per sequence (required)' },
      { flag: 'batch', value: 'B', help: 'sequences held at once (default 1)' },
      { flag: 'cache-dtype', value: 'f32|f16|bf16|fp8', help: "cache element type (default: the checkpoint config's torch_dtype when 16-bit, else bf16)" },
      { flag: 'bytes-per-value', value: 'N', help: 'bytes per cached key and value element, instead of --cache-dtype (whole bytes)' },
      { flag: 'bits-per-value', value: 'N', help: 'bits per cached key element, for sub-byte caches (e.g. 4)' },
      { flag: 'value-bits-per-value', value: 'N', help: 'bits per cached value element, when it differs from the keys' },
      JSON_OPTION,
    ],
    notes: ['give a checkpoint or all of --layers, --kv-heads, --head-dim, and exactly one of --key-rank, --key-fraction, --plan'],
  },
  {
    name: 'eval',
    args: '<checkpoint>',
    summary: 'perplexity of a checkpoint as stored (original or exported), or of a rank plan applied in memory',
    options: [
      { flag: 'text', value: 'FILE', help: 'evaluation text (required)' },
      TEXT_TOKENIZER_OPTION,
      { flag: 'seq', value: 'N', help: 'tokens per window (default 256)' },
      { flag: 'batch', value: 'B', help: 'windows per forward pass' },
      backendOption('compute backend; auto times the usable providers once per model shape and keeps the fastest'),
      THREADS_OPTION,
      ...POLICY_OPTIONS,
      ...CACHE_OPTIONS,
      ...PROGRESS_OPTIONS,
      JSON_OPTION,
    ],
    notes: ['without a policy flag, evaluates the checkpoint as stored'],
  },
  {
    name: 'finetune',
    args: '<checkpoint> <outdir>',
    summary: 'train the queries and thin keys of a factored export in PyTorch (docs/FINETUNE.md)',
    options: [
      { flag: 'text', value: 'FILE', help: 'training text (required); its last 5 % is held out to compare before and after' },
      TEXT_TOKENIZER_OPTION,
      { flag: 'steps', value: 'N', help: 'AdamW steps (default 300)' },
      { flag: 'lr', value: 'LR', help: 'peak learning rate (default 0.0005, or 0.003 with --teacher; warm-up, then cosine to a tenth)' },
      { flag: 'batch', value: 'B', help: 'sequences per step (default 32)' },
      { flag: 'seq', value: 'N', help: 'tokens per sequence (default 256)' },
      { flag: 'device', value: 'auto|cuda|cpu', help: 'where PyTorch trains (default auto: CUDA when it sees one)' },
      { flag: 'teacher', value: 'DIR', help: "the export's source checkpoint: distil from it (loss KL(teacher || student); the held-out check compares that KL)" },
      { flag: 'lm-weight', value: 'W', help: 'with --teacher: loss (1 - W) KL + W LM, 0 <= W <= 1 (default 0)' },
      { flag: 'freeze-key-up', help: "do not train key_up (latent mode's B): only the queries and A" },
      { flag: 'python', value: 'PATH', help: 'Python with torch and transformers (default python3 on PATH)' },
      { flag: 'force', help: 'replace a non-empty output folder' },
      { flag: 'quiet', help: 'no progress lines on stderr' },
      JSON_OPTION,
    ],
    notes: ['trains only the factored_keys query and key tensors (and key_up); writes the better of before and after', 'never writes into or over its source; Ctrl-C stops training and removes the partial output'],
  },
];

/** Options every command accepts, handled before the command runs. */
export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { flag: 'help', help: "print the command's usage and options (also -h)" },
  { flag: 'debug', help: 'add a stack trace to errors' },
];

/** The spec of a command; throws for an unknown name (a programming error). */
export function commandSpec(name: string): CommandSpec {
  const spec = COMMAND_SPECS.find((c) => c.name === name);
  if (!spec) throw new Error(`no command spec for ${name}`);
  return spec;
}

/** `--flag VALUE` or `--flag`. */
function optionSynopsis(o: OptionSpec): string {
  return o.value ? `--${o.flag} ${o.value}` : `--${o.flag}`;
}

/** The usage line of one command. */
export function commandUsageLine(spec: CommandSpec): string {
  return `factored-keys ${spec.name} ${spec.args}${spec.options.length ? ' [options]' : ''}`;
}

/** `factored-keys <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const all = [...spec.options, ...GLOBAL_OPTIONS];
  const left = all.map((o) => `  ${optionSynopsis(o)}${o.repeatable ? ' (repeatable)' : ''}`);
  const width = Math.max(...left.map((l) => l.length)) + 2;
  const lines = [`usage: ${commandUsageLine(spec)}`, '', spec.summary, '', 'options:', ...all.map((o, i) => `${left[i].padEnd(width)}${o.help}`)];
  if (spec.notes?.length) lines.push('', ...spec.notes);
  return lines.join('\n') + '\n';
}

/** `factored-keys --help`: every command with every flag it takes. */
export function topLevelUsage(): string {
  const lines = ['usage: factored-keys <command> [options]', '', 'commands:'];
  for (const spec of COMMAND_SPECS) {
    lines.push(`  ${spec.name} ${spec.args}`.padEnd(34) + spec.summary);
    if (spec.options.length) lines.push(`      ${spec.options.map((o) => `[${optionSynopsis(o)}]`).join(' ')}`);
  }
  lines.push('', "run 'factored-keys <command> --help' for what each option means; --debug adds stack traces to errors");
  return lines.join('\n') + '\n';
}
