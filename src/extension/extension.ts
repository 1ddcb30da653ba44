/**
 * Extension entry: commands, the read-only checkpoint editor, the backend picker and the
 * status bar. Heavy work runs in worker threads (see jobs.ts); this file only wires things.
 */
// first: no onnxruntime telemetry (see src/core/compute/noTelemetry.ts)
import '../core/compute/noTelemetry';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { BACKEND_CHOICES } from '../core/compute/session';
import { FactoredKeysError } from '../core/errors';
import { JobError, JobRunner } from './jobs';
import { CheckpointPanel, type PanelServices } from './panel';
import { readSettings } from './settings';
import { finetuneExport } from './finetuneFlow';

const INDEX_FILE = 'model.safetensors.index.json';

/** Whether `dir` looks like a checkpoint folder: config.json plus at least one .safetensors file. */
async function isCheckpointFolder(dir: string): Promise<boolean> {
  try {
    const names = await fsp.readdir(dir);
    return names.includes('config.json') && names.some((n) => n.endsWith('.safetensors'));
  } catch {
    return false;
  }
}

/** What to open for a file the user clicked: its folder when sharded, else the file itself. */
async function inputForFile(file: string): Promise<string> {
  const dir = path.dirname(file);
  if (path.basename(file) === INDEX_FILE) return dir;
  const hasIndex = await fsp.stat(path.join(dir, INDEX_FILE)).then(() => true, () => false);
  return hasIndex ? dir : file;
}

/** Checkpoint folders in the workspace (folders holding config.json and .safetensors files). */
async function workspaceCheckpoints(): Promise<string[]> {
  const configs = await vscode.workspace.findFiles('**/config.json', '**/{node_modules,.git,.cache}/**', 500);
  const dirs = [...new Set(configs.filter((u) => u.scheme === 'file').map((u) => path.dirname(u.fsPath)))];
  const found: string[] = [];
  for (const d of dirs) if (await isCheckpointFolder(d)) found.push(d);
  return found.sort();
}

/** Asks which checkpoint to open: one found in the workspace, or a folder from the dialog. */
async function pickCheckpoint(): Promise<string | undefined> {
  const found = await workspaceCheckpoints();
  const browse = { label: '$(folder-opened) Browse…', description: 'choose a checkpoint folder', dir: '' };
  const items = found.map((dir) => ({ label: path.basename(dir), description: vscode.workspace.asRelativePath(dir, true), dir }));
  const pick = items.length === 0 ? browse : await vscode.window.showQuickPick([...items, browse], { title: 'Factored Keys: Open Checkpoint', placeHolder: 'Checkpoint folder (config.json + safetensors)', matchOnDescription: true });
  if (!pick) return undefined;
  if (pick.dir) return pick.dir;
  const chosen = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, canSelectMany: false, openLabel: 'Open Checkpoint', title: 'Factored Keys: choose a checkpoint folder' });
  if (!chosen?.[0]) return undefined;
  if (chosen[0].scheme !== 'file') throw new FactoredKeysError(`${chosen[0].toString()}: checkpoints on virtual file systems cannot be read; open a local or remote folder`);
  return chosen[0].fsPath;
}

/** The read-only custom editor: clicking a .safetensors file or index.json opens its checkpoint. */
class CheckpointEditorProvider implements vscode.CustomReadonlyEditorProvider {
  constructor(private readonly services: PanelServices) {}

  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => undefined };
  }

  async resolveCustomEditor(document: vscode.CustomDocument, panel: vscode.WebviewPanel): Promise<void> {
    if (document.uri.scheme !== 'file') {
      panel.webview.options = { enableScripts: false, localResourceRoots: [] };
      panel.webview.html = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'"></head><body><p>Factored Keys reads checkpoints with byte-range file reads, which virtual file systems (${document.uri.scheme}:) do not offer. Open the folder from a local or remote (SSH, WSL, container) workspace.</p></body></html>`;
      return;
    }
    CheckpointPanel.attach(this.services, await inputForFile(document.uri.fsPath), panel);
  }
}

/** Shows the backend picker (with what this machine can run) and saves the choice. */
async function selectBackend(jobs: JobRunner): Promise<string> {
  const current = readSettings().backend;
  const probes = await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Factored Keys: probing compute backends' }, () => jobs.run({ kind: 'probe' }, 'probing backends').then((r) => r.probes, () => []));
  const items = BACKEND_CHOICES.map((name) => {
    const probe = probes.find((p) => p.name === name);
    const detail = name === 'auto' ? 'the fastest usable provider, measured on the first layers' : !probe ? 'not probed' : probe.usable ? 'usable on this machine' : `not usable here: ${probe.reason ?? (probe.listed ? 'failed to start' : 'not in this onnxruntime build')}`;
    return { label: name, description: name === current ? '(current)' : undefined, detail, picked: name === current };
  });
  const pick = await vscode.window.showQuickPick(items, { title: 'Factored Keys: Select Compute Backend', placeHolder: `current: ${current}` });
  if (!pick) return current;
  await vscode.workspace.getConfiguration('factoredKeys').update('backend', pick.label, vscode.ConfigurationTarget.Global);
  return pick.label;
}

/** Extension activation: registers everything; opens the workspace checkpoint when asked to (demo). */
export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Factored Keys');
  const jobs = new JobRunner(context.extensionPath, log);
  const services: PanelServices = { extensionUri: context.extensionUri, jobs, log, selectBackend: () => selectBackend(jobs) };
  const reportError = (e: unknown) => {
    if (e instanceof JobError && e.cancelled) return;
    const message = e instanceof FactoredKeysError || e instanceof JobError ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`;
    if (!(e instanceof FactoredKeysError || e instanceof JobError)) log.appendLine(String((e as Error)?.stack ?? e));
    void vscode.window.showErrorMessage(`Factored Keys: ${message}`);
  };
  const command = (id: string, fn: (...args: unknown[]) => unknown) => vscode.commands.registerCommand(id, (...args: unknown[]) => Promise.resolve().then(() => fn(...args)).catch(reportError));
  const activeOrOpen = async (): Promise<CheckpointPanel | undefined> => {
    const active = CheckpointPanel.active();
    if (active) return active;
    const input = await pickCheckpoint();
    return input ? CheckpointPanel.show(services, input) : undefined;
  };

  context.subscriptions.push(
    log,
    jobs,
    vscode.window.registerCustomEditorProvider('factoredKeys.checkpoint', new CheckpointEditorProvider(services), { webviewOptions: { retainContextWhenHidden: true }, supportsMultipleEditorsPerDocument: false }),
    command('factoredKeys.openCheckpoint', async (arg) => {
      let input: string | undefined;
      if (arg instanceof vscode.Uri) {
        if (arg.scheme !== 'file') throw new FactoredKeysError(`${arg.toString()}: checkpoints on virtual file systems cannot be read`);
        const stat = await fsp.stat(arg.fsPath);
        input = stat.isDirectory() ? arg.fsPath : await inputForFile(arg.fsPath);
      } else input = await pickCheckpoint();
      if (input) CheckpointPanel.show(services, input);
    }),
    command('factoredKeys.analyzeSpectrum', async () => {
      const panel = await activeOrOpen();
      if (panel) {
        panel.reveal('heatmaps');
        await panel.analyze();
      }
    }),
    command('factoredKeys.exportCheckpoint', async () => {
      const panel = await activeOrOpen();
      if (panel) await panel.export();
    }),
    command('factoredKeys.showSavings', async () => {
      const panel = await activeOrOpen();
      if (!panel) return;
      panel.reveal('savings');
      const line = panel.savingsSummary();
      if (line) void vscode.window.showInformationMessage(line);
    }),
    command('factoredKeys.sweep', async () => {
      const panel = await activeOrOpen();
      if (panel) await panel.sweepFromCommand();
    }),
    command('factoredKeys.selectBackend', () => selectBackend(jobs)),
    command('factoredKeys.finetuneExport', async (arg) => {
      let dir = arg instanceof vscode.Uri && arg.scheme === 'file' ? arg.fsPath : undefined;
      if (!dir) {
        const picked = await vscode.window.showOpenDialog({ title: 'Fine-tune a factored export', canSelectFolders: true, canSelectFiles: false, openLabel: 'Fine-tune' });
        dir = picked?.[0]?.scheme === 'file' ? picked[0].fsPath : undefined;
      }
      if (dir) await finetuneExport(dir, log);
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('factoredKeys.backend')) CheckpointPanel.backendChanged(readSettings().backend);
    }),
  );

  const settings = readSettings();
  const root = vscode.workspace.workspaceFolders?.[0];
  if (settings.openWorkspaceCheckpointOnStartup && root?.uri.scheme === 'file') {
    void isCheckpointFolder(root.uri.fsPath).then((yes) => yes && CheckpointPanel.show(services, root.uri.fsPath));
  }
}

/** Nothing to release beyond the subscriptions. */
export function deactivate(): void {}
