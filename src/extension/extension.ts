import type * as vscode from 'vscode';

export function activate(_context: vscode.ExtensionContext): void {
  // Commands, the custom editor and the panel register here (see issue 5).
}

export function deactivate(): void {}
