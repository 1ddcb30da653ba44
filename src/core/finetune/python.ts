/**
 * Finding the Python that runs the fine-tuning script, and checking it before anything is
 * written: `--python` (or the extension's `factoredKeys.python` setting), else `python3` on
 * PATH (`python` on Windows). The check runs the shipped script's `check` command, which imports
 * torch, transformers and safetensors and reports their versions as one JSON line; a Python
 * without them gives one error line saying what is missing and how to get it.
 */
import { spawn } from 'node:child_process';
import { FactoredKeysError } from '../errors';
import { shippedPythonFile } from '../shippedPython';

export const TRAIN_SCRIPT = 'train_factored_keys.py';

/** What the script's `check` command reported. */
export interface PythonInfo {
  /** The command that was run (as given, or the PATH default). */
  readonly command: string;
  readonly executable: string;
  readonly python: string;
  readonly torch: string;
  readonly transformers: string;
  readonly safetensors: string;
  readonly cuda: boolean;
  readonly cudaDevices: number;
  readonly cudaName?: string;
}

/** The shipped training script (`python/` at the project root). */
export function trainScriptPath(): string {
  return shippedPythonFile(TRAIN_SCRIPT, 'finetune: the training script');
}

/** The default interpreter name on PATH. */
export function defaultPython(): string {
  return process.platform === 'win32' ? 'python' : 'python3';
}

const INSTALL_HINT = 'pip install torch transformers safetensors';

function whereToSet(command: string, given: boolean): string {
  return given ? `${command}` : `"${command}" on PATH`;
}

/** Runs a command and collects its output (bounded), with a timeout. */
function runCollect(command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let settled = false;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1', PYTHONDONTWRITEBYTECODE: '1' } });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      if (stdout.length < 1 << 20) stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 1 << 20) stderr += d.toString('utf8');
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr, error });
    });
    child.on('close', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Checks `python` (or the default) for torch, transformers and safetensors. Throws one
 * FactoredKeysError line naming what is missing and how to get it.
 */
export async function checkPython(python: string | undefined, timeoutMs = 120_000): Promise<PythonInfo> {
  const given = python !== undefined && python.trim() !== '';
  const command = given ? python!.trim() : defaultPython();
  const script = trainScriptPath();
  const r = await runCollect(command, [script, 'check'], timeoutMs);
  const how = `install Python 3 with PyTorch and transformers (${INSTALL_HINT}) and pass --python PATH (in VS Code: the factoredKeys.python setting)`;
  if (r.error) {
    if (r.error.code === 'ENOENT') throw new FactoredKeysError(`finetune needs Python 3 with PyTorch and transformers, and ${whereToSet(command, given)} was not found: ${how}`);
    if (r.error.code === 'EACCES') throw new FactoredKeysError(`finetune: ${command} is not executable: ${how}`);
    throw new FactoredKeysError(`finetune: cannot run ${command} (${r.error.code ?? r.error.message}): ${how}`);
  }
  const line = r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('{'))
    .pop();
  let info: Record<string, unknown> | undefined;
  try {
    info = line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
  } catch {
    info = undefined;
  }
  if (!info || info.event !== 'check') {
    const last = r.stderr.trim().split('\n').pop() ?? '';
    throw new FactoredKeysError(`finetune: ${command} did not run the training script's check (exit ${r.code ?? 'killed'}${last ? `: ${last}` : ''}); it must be Python 3.8 or newer: ${how}`);
  }
  const exe = typeof info.executable === 'string' ? info.executable : command;
  const missing = Array.isArray(info.missing) ? (info.missing as string[]) : [];
  const tooOld = Array.isArray(info.too_old) ? (info.too_old as string[]) : [];
  if (missing.length > 0) {
    throw new FactoredKeysError(
      `finetune needs PyTorch and transformers, but ${whereToSet(command, given)} (${exe}, Python ${String(info.python)}) has no ${missing.join(', ')}: ` +
        `install them into it (${exe} -m ${INSTALL_HINT}) or pass --python PATH of a Python that has them (in VS Code: the factoredKeys.python setting)`,
    );
  }
  if (tooOld.length > 0) throw new FactoredKeysError(`finetune: ${exe} has ${tooOld.join(', ')}: upgrade them (${exe} -m pip install -U torch transformers) or pass --python PATH of a newer environment`);
  if (info.ok !== true) throw new FactoredKeysError(`finetune: the runtime template beside ${script} is missing from this installation`);
  return {
    command,
    executable: exe,
    python: String(info.python),
    torch: String(info.torch),
    transformers: String(info.transformers),
    safetensors: String(info.safetensors),
    cuda: info.cuda === true,
    cudaDevices: typeof info.cuda_devices === 'number' ? info.cuda_devices : 0,
    ...(typeof info.cuda_name === 'string' ? { cudaName: info.cuda_name } : {}),
  };
}
