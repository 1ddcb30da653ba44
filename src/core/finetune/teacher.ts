/**
 * `finetune --teacher`: the checkpoint to distil from is the export's source, the original
 * unfactored model. Checked here before Python starts, each failure one line: a checkpoint folder
 * our reader opens, not itself a factored export, the export's vocabulary and tokenizer files,
 * and, where the export's report records its source, that source's manifest
 * (exportSource's SHA-256 over config.json and the shard headers). The training script repeats
 * these checks (python/train_factored_keys.py, check_teacher) for direct runs.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, type Checkpoint, type ModelConfig } from '../checkpoint/checkpoint';
import { FactoredKeysError } from '../errors';
import { exportSource } from '../export/export';
import { REPORT_FILE } from '../export/format';

/** Files whose bytes fix the token ids; the teacher and the export must agree on each. */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer.model', 'vocab.json', 'merges.txt', 'vocab.txt'] as const;

export interface TeacherInfo {
  /** The folder the script loads (a Hugging Face cache folder resolved to its snapshot). */
  readonly dir: string;
  readonly name: string;
  readonly manifestSha256: string;
  /** Whether the export's report recorded its source and the teacher matched it. */
  readonly matchesReport: boolean;
}

function vocabSize(config: ModelConfig): unknown {
  const text = (config.text_config ?? {}) as Record<string, unknown>;
  return config.vocab_size ?? text.vocab_size;
}

async function readOptional(file: string): Promise<Buffer | undefined> {
  const st = await fsp.stat(file).catch(() => undefined);
  return st?.isFile() ? fsp.readFile(file) : undefined;
}

/** The source's recorded manifest and name, when the export has a report that records them. */
async function recordedSource(exportDir: string): Promise<{ name: string; manifest: string } | undefined> {
  const raw = await readOptional(path.join(exportDir, REPORT_FILE));
  if (!raw) return undefined;
  try {
    const source = (JSON.parse(raw.toString('utf8')) as { source?: { name?: unknown; manifest_sha256?: unknown } }).source;
    return typeof source?.manifest_sha256 === 'string' ? { name: String(source.name ?? '?'), manifest: source.manifest_sha256 } : undefined;
  } catch {
    return undefined;
  }
}

/** Validates `teacher` against the export `source` (see the module comment). */
export async function checkTeacher(teacher: string, source: Checkpoint): Promise<TeacherInfo> {
  const where = `finetune --teacher ${teacher}`;
  const st = await fsp.stat(teacher).catch(() => undefined);
  if (!st) throw new FactoredKeysError(`${where}: no such folder`);
  if (!st.isDirectory()) throw new FactoredKeysError(`${where}: not a folder (give the original checkpoint's folder)`);
  let t: Checkpoint;
  try {
    t = await openCheckpoint(teacher);
  } catch (e) {
    if (e instanceof FactoredKeysError) throw new FactoredKeysError(`${where}: not a checkpoint folder (${e.message})`);
    throw e;
  }
  try {
    if (t.config.factored_keys !== undefined) throw new FactoredKeysError(`${where}: is a factored export; the teacher is the original checkpoint the export was made from`);
    const tv = vocabSize(t.config);
    const sv = vocabSize(source.config);
    if (tv !== sv) throw new FactoredKeysError(`${where}: has a vocabulary of ${String(tv)} tokens, the export ${String(sv)}: the teacher must use the export's tokenizer`);
    for (const name of TOKENIZER_FILES) {
      const a = await readOptional(path.join(t.dir, name));
      const b = await readOptional(path.join(source.dir, name));
      if ((a === undefined) !== (b === undefined)) throw new FactoredKeysError(`${where}: ${a ? 'the teacher' : 'the export'} has ${name} and the other has not: the teacher must use the export's token ids`);
      if (a && b && !a.equals(b)) throw new FactoredKeysError(`${where}: its ${name} differs from the export's: the teacher must use the export's token ids`);
    }
    const own = await exportSource(t);
    const recorded = await recordedSource(source.dir);
    if (recorded && recorded.manifest !== own.manifest_sha256) {
      throw new FactoredKeysError(`${where}: is not the checkpoint this export was made from (${recorded.name}): its config.json and shard headers differ from the ones ${REPORT_FILE} records`);
    }
    return { dir: t.dir, name: own.name, manifestSha256: own.manifest_sha256, matchesReport: recorded !== undefined };
  } finally {
    await t.close();
  }
}
