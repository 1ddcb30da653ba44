/**
 * Export from the editor: trust check, the user picks the destination (the webview never
 * supplies a path), a cancellable job writes it, then the user can reveal or open the result.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { FactoredKeysError } from '../core/errors';
import type { RankPlan } from '../core/plan';
import type { CheckpointSummary } from '../protocol';
import { JobError } from './jobs';
import type { PanelServices } from './panel';
import { calibrationFor } from './calibrationFlow';
import { readSettings } from './settings';
import { finetuneExport } from './finetuneFlow';

/**
 * Test hook: when FACTORED_KEYS_TEST_MODE=1, FACTORED_KEYS_TEST_EXPORT_DIR replaces the save
 * dialog. Both come from the environment of the process hosting the extension (only the test
 * harness sets them); nothing from the webview can reach this.
 */
function testDestination(): string | undefined {
  if (process.env.FACTORED_KEYS_TEST_MODE !== '1') return undefined;
  const dir = process.env.FACTORED_KEYS_TEST_EXPORT_DIR;
  return dir && path.isAbsolute(dir) ? dir : undefined;
}

/** Asks where to write the factored checkpoint; undefined if the user declined. */
export async function chooseDestination(summary: CheckpointSummary): Promise<string | undefined> {
  const forced = testDestination();
  if (forced) return forced;
  const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(path.dirname(summary.dir));
  const uri = await vscode.window.showSaveDialog({
    title: `Export factored ${summary.name} to a new folder`,
    saveLabel: 'Export Here',
    defaultUri: vscode.Uri.joinPath(base, `${summary.name}-factored`),
  });
  if (!uri) return undefined;
  if (uri.scheme !== 'file') throw new FactoredKeysError(`${uri.toString()}: export writes to the file system the extension runs on; choose a folder there`);
  return uri.fsPath;
}

/** Runs the export of `plan`; resolves to the folder written, or null if the user declined. */
export async function exportPlan(services: PanelServices, summary: CheckpointSummary, input: string, plan: RankPlan, token: vscode.CancellationToken, onProgress: (done: number, total: number, label: string) => void): Promise<string | null> {
  if (!vscode.workspace.isTrusted) {
    void vscode.window.showWarningMessage('Factored Keys: exporting writes files, so it needs a trusted workspace.', 'Manage Workspace Trust').then((pick) => pick && vscode.commands.executeCommand('workbench.trust.manage'));
    throw new FactoredKeysError('export needs a trusted workspace');
  }
  const dest = await chooseDestination(summary);
  if (!dest) return null;
  if (path.resolve(dest) === path.resolve(summary.dir)) throw new FactoredKeysError(`${dest}: is the checkpoint itself; choose a new folder`);
  const settings = readSettings();
  const result = await services.jobs.withProgress(
    { kind: 'export', dir: input, dest, plan, backend: settings.backend, threads: settings.threads, calibration: plan.method === 'calibrated' ? await calibrationFor(summary.dir, undefined, true) : undefined },
    `Exporting ${summary.name} → ${path.basename(dest)}`,
    `exporting ${summary.name}`,
    onProgress,
    token,
  ).catch((e: JobError) => {
    if (!e.cancelled) void vscode.window.showErrorMessage(`Factored Keys: export failed: ${e.message}`);
    throw e;
  });
  result.notes.forEach((n) => services.log.appendLine(`export: ${n}`));
  services.log.appendLine(`exported ${summary.name} to ${dest}: ${result.files.join(', ')}`);
  void offerReveal(dest, services, summary.dir);
  return dest;
}

/** Offers to reveal the exported folder (Explorer when it is in the workspace) or to copy its path. */
async function offerReveal(dest: string, services: PanelServices, source: string): Promise<void> {
  const uri = vscode.Uri.file(dest);
  const inWorkspace = vscode.workspace.getWorkspaceFolder(uri) !== undefined;
  // Outside the workspace there is nothing to reveal in a remote window (SSH, code-server); copy the path instead.
  const action = inWorkspace ? 'Reveal in Explorer' : vscode.env.remoteName ? 'Copy Path' : 'Reveal in File Manager';
  const pick = await vscode.window.showInformationMessage(`Factored Keys: exported to ${dest}`, action, 'Fine-tune…');
  if (pick === 'Fine-tune…') {
    await finetuneExport(dest, services.log, source).catch((e: Error) => void vscode.window.showErrorMessage(`Factored Keys: fine-tuning failed: ${e.message}`));
    return;
  }
  if (pick === 'Reveal in Explorer') await vscode.commands.executeCommand('revealInExplorer', uri);
  else if (pick === 'Reveal in File Manager') await vscode.commands.executeCommand('revealFileInOS', uri);
  else if (pick === 'Copy Path') await vscode.env.clipboard.writeText(dest);
}
