/**
 * `finetune`: trains the queries and thin key factors of a factored checkpoint in PyTorch
 * (python/train_factored_keys.py, a fixed script of this project) and writes a factored
 * checkpoint of the same format (docs/FINETUNE.md).
 *
 * What happens here, around the script:
 * 1. the source is opened and its factored_keys block validated by our reader; the destination
 *    is checked like export's (never inside or over the source, non-empty only with force);
 * 2. with --teacher, the teacher is checked to be the export's source (./teacher.ts); the Python
 *    is found and checked (./python.ts) before anything is written;
 * 3. the text is tokenized by our tokenizer (the same ids `eval` uses) into a temporary file;
 * 4. a hidden temporary sibling folder receives the source's other files, the project's runtime
 *    template, and the shards the script writes; the script's JSON lines are passed on as events;
 * 5. the result is validated by our own reader (every tensor of the source present with its shape
 *    and dtype, the factored_keys block, every layer's slices decoded) and renamed into place.
 * On any error or cancellation the child is killed and the temporary folder removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCheckpoint, type Checkpoint } from '../checkpoint/checkpoint';
import { CancelledError, FactoredKeysError, type CancelToken } from '../errors';
import { checkpointSource } from '../eval/factored';
import { tokenizeFile, type TokenizerSpec } from '../eval/tokenize';
import { checkDestination, commitTempFolder, makeTempFolder, removeStaleTemps } from '../export/destination';
import { readFactoredKeysConfig, loadFactoredLayer } from '../export/load';
import { RUNTIME_FILE, type FactoredKeysConfig } from '../export/format';
import { runtimeTemplatePath } from '../export/runtime';
import { checkPython, trainScriptPath, type PythonInfo } from './python';
import { checkTeacher, type TeacherInfo } from './teacher';

export const FINETUNE_RECORD = 'factored_keys_finetune.json';
export type FinetuneDevice = 'auto' | 'cuda' | 'cpu';
/** The training loss: LM, KL to the teacher, or a mix of both. */
export type FinetuneLoss = 'lm' | 'kl' | 'kl+lm';

export interface FinetuneOptions {
  readonly source: string;
  readonly dest: string;
  readonly text: string;
  readonly tokenizer: TokenizerSpec;
  readonly steps?: number;
  readonly lr?: number;
  readonly batch?: number;
  readonly seq?: number;
  readonly device?: FinetuneDevice;
  /** The export's source checkpoint: distil from it (loss KL(teacher || student), held-out criterion that KL). */
  readonly teacher?: string;
  /** With a teacher: loss = (1 - w) KL + w LM, 0..1 (default 0). */
  readonly lmWeight?: number;
  /** Do not train key_up (latent mode's B). */
  readonly freezeKeyUp?: boolean;
  /** The Python to run (--python, factoredKeys.python); default python3 on PATH. */
  readonly python?: string;
  readonly force?: boolean;
  readonly cancel?: CancelToken;
  /** Every event of the script (and the orchestrator's own `phase` events). */
  readonly onEvent?: (event: FinetuneEvent) => void;
  /** Called with a function that cancels at once (kills the child); the CLI's signal handlers use it. */
  readonly onCancelHook?: (cancelNow: () => void) => void;
}

/** One progress event (the script's JSON lines; see python/train_factored_keys.py). */
export type FinetuneEvent =
  | { event: 'phase'; phase: 'checking-python' | 'tokenizing' | 'loading' | 'validating' | 'renaming'; detail?: string }
  | { event: 'start'; device: string; device_name: string; torch: string; transformers: string; tensors: string[]; trained_parameters: number; total_parameters: number; train_tokens: number; heldout_tokens: number; steps: number; batch: number; seq: number; lr: number; loss?: FinetuneLoss; teacher?: string | null }
  /** `kl`: mean KL(teacher || student) per position, with a teacher. */
  | { event: 'eval'; phase: 'before' | 'after'; loss: number; perplexity: number; kl?: number }
  /** `loss` is the training objective; with a teacher `kl` (and `lm` when it is part of the loss) are its parts. */
  | { event: 'step'; step: number; steps: number; loss: number; lr: number; tokens_per_s: number; elapsed_s: number; eta_s: number; kl?: number; lm?: number }
  | { event: 'saved'; file: string; tensors: number };

export interface FinetuneResult {
  readonly dest: string;
  /** Which weights were written: the trained ones, or the source's when training did not help. */
  readonly kept: 'trained' | 'original';
  /** Perplexity on the held-out slice of the training text (last 5 %), before and after; with a teacher, the mean KL to it too. */
  readonly heldout: { readonly tokens: number; readonly before: number; readonly after: number; readonly klBefore?: number; readonly klAfter?: number };
  /** What decided `kept`: the held-out slice's LM loss, or with a teacher its KL to the teacher. */
  readonly criterion: 'lm' | 'kl';
  readonly loss: FinetuneLoss;
  readonly lmWeight: number;
  readonly freezeKeyUp: boolean;
  readonly teacher?: TeacherInfo;
  readonly steps: number;
  readonly lr: number;
  readonly batch: number;
  readonly seq: number;
  readonly device: string;
  readonly trainSeconds: number;
  readonly tokensPerSecond: number | null;
  readonly trainedParameters: number;
  readonly python: PythonInfo;
}

/**
 * Defaults from the H200 sweep (docs/FINETUNE.md): with the LM loss the lowest rate tried did
 * best on heldout.txt; distilling, 3e-3 had the lowest held-out-slice KL for every export.
 */
const DEFAULTS = { steps: 300, lr: 5e-4, distillLr: 3e-3, batch: 32, seq: 256 };
/** Grace between SIGTERM and SIGKILL when cancelling the child. */
const KILL_GRACE_MS = 3000;

function positiveInt(v: number, flag: string): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new FactoredKeysError(`finetune: --${flag} must be a positive integer (got ${v})`);
  return v;
}

async function sha256File(file: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(file)).digest('hex');
}

/** The source's files other than weights, hidden files, folders and an earlier fine-tune record. */
async function copyOtherFiles(source: string, temp: string): Promise<void> {
  for (const e of await fsp.readdir(source, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name.endsWith('.safetensors') || e.name === FINETUNE_RECORD || e.name === RUNTIME_FILE) continue;
    const from = path.join(source, e.name);
    const st = await fsp.stat(from).catch(() => undefined); // symlinks followed, like export
    if (!st?.isFile()) continue;
    await fsp.copyFile(from, path.join(temp, e.name));
  }
  // the runtime the script trained with (the project's template), not the source folder's copy
  await fsp.copyFile(runtimeTemplatePath(), path.join(temp, RUNTIME_FILE));
}

/** Our reader accepts the result, and it has exactly the source's tensors, shapes and dtypes. */
export async function validateFinetuned(dir: string, source: Checkpoint): Promise<void> {
  const out = await openCheckpoint(dir);
  try {
    const fk: FactoredKeysConfig = readFactoredKeysConfig(out.config, `${dir}/config.json`);
    checkpointSource(out); // the eval path's reader (validates the block against the model)
    for (const [name, t] of source.tensors) {
      const o = out.tensors.get(name);
      if (!o) throw new FactoredKeysError(`finetune: the written checkpoint lacks tensor "${name}"`);
      if (o.dtype !== t.dtype || o.shape.length !== t.shape.length || o.shape.some((x, i) => x !== t.shape[i])) {
        throw new FactoredKeysError(`finetune: the written "${name}" is ${o.dtype} [${o.shape.join(', ')}], the source's ${t.dtype} [${t.shape.join(', ')}]`);
      }
      if (path.basename(o.file) !== path.basename(t.file)) throw new FactoredKeysError(`finetune: the written "${name}" is in ${path.basename(o.file)}, the source's in ${path.basename(t.file)}`);
    }
    if (out.tensors.size !== source.tensors.size) throw new FactoredKeysError(`finetune: the written checkpoint has ${out.tensors.size} tensors, the source ${source.tensors.size}`);
    for (let i = 0; i < fk.layers.length; i++) {
      const layer = await loadFactoredLayer(out, fk, i);
      for (const h of [...layer.query, ...layer.key]) {
        for (const x of h.weight) if (!Number.isFinite(x)) throw new FactoredKeysError(`finetune: layer ${i} has a non-finite trained weight`);
      }
    }
  } finally {
    await out.close();
  }
}

/** Runs the training script, passing its events on; rejects with its error line. */
function runScript(
  python: string,
  args: string[],
  onEvent: (e: Record<string, unknown>) => void,
  register: (child: ChildProcess) => void,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1', PYTHONDONTWRITEBYTECODE: '1' } });
    register(child);
    let buf = '';
    let done: Record<string, unknown> | undefined;
    let error: string | undefined;
    const stderrTail: string[] = [];
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (e.event === 'done') done = e;
        else if (e.event === 'error') error = String(e.message);
        else onEvent(e);
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      for (const l of d.toString('utf8').split('\n')) {
        if (l.trim()) stderrTail.push(l.trim());
      }
      if (stderrTail.length > 20) stderrTail.splice(0, stderrTail.length - 20);
    });
    child.on('error', (e) => reject(new FactoredKeysError(`finetune: cannot run ${python} (${(e as NodeJS.ErrnoException).code ?? e.message})`)));
    child.on('close', (code, signal) => {
      if (code === 0 && done) resolve(done);
      else if (error) reject(new FactoredKeysError(`finetune: ${error}`));
      else reject(new FactoredKeysError(`finetune: the training script ${signal ? `was killed (${signal})` : `exited with ${code}`}${stderrTail.length ? `: ${stderrTail[stderrTail.length - 1]}` : ''}`));
    });
  });
}

/** Fine-tunes a factored checkpoint into `dest` (see the module comment). */
export async function finetuneFactored(o: FinetuneOptions): Promise<FinetuneResult> {
  const steps = positiveInt(o.steps ?? DEFAULTS.steps, 'steps');
  const batch = positiveInt(o.batch ?? DEFAULTS.batch, 'batch');
  const seq = positiveInt(o.seq ?? DEFAULTS.seq, 'seq');
  const lr = o.lr ?? (o.teacher === undefined ? DEFAULTS.lr : DEFAULTS.distillLr);
  if (!(Number.isFinite(lr) && lr > 0)) throw new FactoredKeysError(`finetune: --lr must be a positive number (got ${lr})`);
  const device = o.device ?? 'auto';
  if (o.lmWeight !== undefined && o.teacher === undefined) throw new FactoredKeysError('finetune: --lm-weight needs --teacher (without a teacher the loss is the LM loss)');
  const lmWeight = o.teacher === undefined ? 1 : (o.lmWeight ?? 0);
  if (!(lmWeight >= 0 && lmWeight <= 1)) throw new FactoredKeysError(`finetune: --lm-weight must be between 0 and 1 (got ${lmWeight})`);
  const loss: FinetuneLoss = lmWeight === 1 ? 'lm' : lmWeight === 0 ? 'kl' : 'kl+lm';
  const emit = (e: FinetuneEvent) => o.onEvent?.(e);
  const source = await openCheckpoint(o.source);
  try {
    if (source.config.factored_keys === undefined) throw new FactoredKeysError(`${source.dir}: not a factored-keys checkpoint (config.json has no factored_keys block); export it first (factored-keys export)`);
    readFactoredKeysConfig(source.config, `${source.dir}/config.json`);
    checkpointSource(source);
    const d = await checkDestination(source.dir, source.files.map((f) => f.file), o.dest, o.force ?? false);
    const teacher = o.teacher === undefined ? undefined : await checkTeacher(o.teacher, source);
    emit({ event: 'phase', phase: 'checking-python' });
    const py = await checkPython(o.python);
    if (device === 'cuda' && !py.cuda) throw new FactoredKeysError(`finetune --device cuda: ${py.executable}'s PyTorch ${py.torch} sees no CUDA device`);
    emit({ event: 'phase', phase: 'tokenizing', detail: o.text });
    const tokens = await tokenizeFile(o.text, o.tokenizer);
    if (o.cancel?.cancelled) throw new CancelledError();

    await removeStaleTemps(d);
    const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'fk-finetune-'));
    let temp: string | undefined;
    let child: ChildProcess | undefined;
    let cancelled = false;
    const kill = () => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const c = child;
      setTimeout(() => {
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      }, KILL_GRACE_MS).unref();
    };
    const poll = setInterval(() => {
      if (o.cancel?.cancelled && !cancelled) {
        cancelled = true;
        kill();
      }
    }, 100);
    o.onCancelHook?.(() => {
      cancelled = true;
      kill();
    });
    try {
      const tokFile = path.join(work, 'tokens.i32');
      const le = Buffer.alloc(tokens.ids.length * 4);
      tokens.ids.forEach((id, i) => le.writeInt32LE(id, i * 4));
      await fsp.writeFile(tokFile, le);
      temp = await makeTempFolder(d);
      await copyOtherFiles(source.dir, temp);
      emit({ event: 'phase', phase: 'loading', detail: py.executable });
      const args = [trainScriptPath(), 'train', '--checkpoint', source.dir, '--tokens', tokFile, '--out', temp, '--steps', String(steps), '--lr', String(lr), '--batch', String(batch), '--seq', String(seq), '--device', device];
      if (teacher) args.push('--teacher', teacher.dir, '--lm-weight', String(lmWeight));
      if (o.freezeKeyUp) args.push('--freeze-key-up');
      let heldoutTokens = 0;
      const done = await runScript(py.command, args, (e) => {
        if (e.event === 'start' && typeof e.heldout_tokens === 'number') heldoutTokens = e.heldout_tokens;
        emit(e as unknown as FinetuneEvent);
      }, (c) => {
        child = c;
        if (cancelled || o.cancel?.cancelled) kill();
      });
      if (cancelled || o.cancel?.cancelled) throw new CancelledError();
      emit({ event: 'phase', phase: 'validating' });
      await validateFinetuned(temp, source);
      const num = (k: string) => (typeof done[k] === 'number' ? (done[k] as number) : NaN);
      const result: FinetuneResult = {
        dest: d.dest,
        kept: done.kept === 'original' ? 'original' : 'trained',
        heldout: { tokens: heldoutTokens, before: num('before_perplexity'), after: num('after_perplexity'), ...(teacher ? { klBefore: num('before_kl'), klAfter: num('after_kl') } : {}) },
        criterion: teacher ? 'kl' : 'lm',
        loss,
        lmWeight,
        freezeKeyUp: o.freezeKeyUp ?? false,
        ...(teacher ? { teacher } : {}),
        steps,
        lr,
        batch,
        seq,
        device: String(done.device),
        trainSeconds: num('train_s'),
        tokensPerSecond: typeof done.tokens_per_s === 'number' ? done.tokens_per_s : null,
        trainedParameters: num('trained_parameters'),
        python: py,
      };
      const record = {
        format_version: 1,
        source: { name: path.basename(source.dir) },
        text: { name: path.basename(o.text), sha256: await sha256File(o.text), tokens: tokens.ids.length },
        tokenizer: o.tokenizer === 'bytes' ? 'bytes' : path.basename(o.tokenizer),
        trained: o.freezeKeyUp
          ? 'query and thin key factors (factored_keys query/key slices and their biases; key_up frozen), everything else bit for bit the source'
          : 'query and thin key factors (factored_keys query/key slices, their biases, key_up), everything else bit for bit the source',
        loss: teacher ? { kind: loss, lm_weight: lmWeight, kl: 'KL(teacher || student) of next-token distributions, temperature 1' } : { kind: 'lm' },
        ...(teacher ? { teacher: { name: teacher.name, manifest_sha256: teacher.manifestSha256, matches_report: teacher.matchesReport } } : {}),
        steps,
        lr,
        batch,
        seq,
        device: result.device,
        kept: result.kept,
        heldout_slice: {
          fraction: 0.05,
          tokens: heldoutTokens,
          criterion: result.criterion,
          before_perplexity: result.heldout.before,
          after_perplexity: result.heldout.after,
          ...(teacher ? { before_kl: result.heldout.klBefore, after_kl: result.heldout.klAfter } : {}),
        },
        train_seconds: result.trainSeconds,
        torch: py.torch,
        transformers: py.transformers,
      };
      await fsp.writeFile(path.join(temp, FINETUNE_RECORD), JSON.stringify(record, null, 2) + '\n');
      if (cancelled || o.cancel?.cancelled) throw new CancelledError();
      emit({ event: 'phase', phase: 'renaming' });
      await commitTempFolder(temp, d, o.force ?? false);
      temp = undefined;
      return result;
    } catch (e) {
      if (cancelled || o.cancel?.cancelled) throw new CancelledError();
      throw e;
    } finally {
      clearInterval(poll);
      kill();
      if (child && (child as ChildProcess).exitCode === null && (child as ChildProcess).signalCode === null) {
        await new Promise<void>((r) => (child as ChildProcess).once('close', () => r()));
      }
      if (temp) await fsp.rm(temp, { recursive: true, force: true });
      await fsp.rm(work, { recursive: true, force: true });
    }
  } finally {
    await source.close();
  }
}
