/**
 * The calibration text of method `calibrated` in the panel: `factoredKeys.calibration.*`
 * settings; on first use (no text set) the user picks a file, which is remembered in the
 * settings. Statistics are cached by content (src/core/calibration/cache.ts), so later analyses,
 * sweeps and exports with the same text do not run the model again.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CalibrationSpec } from '../core/calibration/moments';
import { FactoredKeysError } from '../core/errors';

async function configVocab(dir: string): Promise<number | undefined> {
  try {
    const v = (JSON.parse(await fsp.readFile(path.join(dir, 'config.json'), 'utf8')) as { vocab_size?: unknown }).vocab_size;
    return typeof v === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** The configured calibration, or (when `ask`) one the user picks now; undefined when none. */
export async function calibrationFor(checkpointDir: string, vocabSize: number | undefined, ask: boolean): Promise<CalibrationSpec | undefined> {
  const c = vscode.workspace.getConfiguration('factoredKeys');
  let text = String(c.get('calibration.textFile') ?? '');
  if (!text) {
    if (!ask) return undefined;
    const picked = await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectFolders: false, canSelectMany: false, openLabel: 'Calibrate on This Text', title: 'Factored Keys: calibration text for the calibrated method (like the training data)', defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri });
    if (!picked?.[0]) throw new FactoredKeysError('calibrated needs a calibration text (set factoredKeys.calibration.textFile)');
    if (picked[0].scheme !== 'file') throw new FactoredKeysError(`${picked[0].toString()}: choose a text file on the file system the extension runs on`);
    text = picked[0].fsPath;
    await c.update('calibration.textFile', text, vscode.ConfigurationTarget.Global);
  }
  const file = path.isAbsolute(text) ? text : path.resolve(vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '.', text);
  const setting = String(c.get('calibration.tokenizer') ?? 'auto') || 'auto';
  let tokenizer = setting;
  if (setting === 'auto') {
    const beside = path.join(checkpointDir, 'tokenizer.json');
    if (await fsp.stat(beside).then((s) => s.isFile(), () => false)) tokenizer = beside;
    else if ((vocabSize ?? (await configVocab(checkpointDir))) === 256) tokenizer = 'bytes';
    else throw new FactoredKeysError(`${checkpointDir}: no tokenizer.json beside the checkpoint; set factoredKeys.calibration.tokenizer to "bytes" or a tokenizer.json path`);
  }
  const tokens = Number(c.get('calibration.tokens') ?? 0);
  return { text: file, tokenizer, tokens: Number.isSafeInteger(tokens) && tokens > 0 ? tokens : undefined };
}
