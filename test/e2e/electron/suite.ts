/**
 * Runs inside desktop VS Code's extension host (via @vscode/test-electron, `npm run
 * test:electron`): activates the extension, opens the Mistral fixture in the panel and checks
 * the commands and the panel tab exist.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as vscode from 'vscode';

/** Entry point called by the test runner. */
export async function run(): Promise<void> {
  const ext = vscode.extensions.getExtension('factored-keys.factored-keys');
  assert.ok(ext, 'extension is installed');
  await ext.activate();
  const commands = await vscode.commands.getCommands(true);
  for (const c of ['openCheckpoint', 'analyzeSpectrum', 'exportCheckpoint', 'showSavings', 'selectBackend']) assert.ok(commands.includes(`factoredKeys.${c}`), c);
  const fixtures = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? path.resolve(ext.extensionPath, '../shared/fixtures');
  await vscode.commands.executeCommand('factoredKeys.openCheckpoint', vscode.Uri.file(path.join(fixtures, 'mistral-bytes')));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const tabs = vscode.window.tabGroups.all.flatMap((g) => g.tabs.map((t) => t.label));
    if (tabs.some((t) => t.includes('mistral-bytes'))) break;
    if (Date.now() > deadline) throw new Error(`no panel tab for mistral-bytes (tabs: ${tabs.join(', ')})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
