/** Paths to the shared, read-only Hugging Face fixtures, and temp-folder helpers for tests. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../..');
export const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures');
export const CLI = path.join(REPO_ROOT, 'dist/cli.js');

export const fixture = (name: string): string => path.join(FIXTURES, name);

/** Every fixture checkpoint folder with the config values the tests expect. */
export const ALL_FIXTURES = [
  'gpt2-bytes',
  'mistral-bytes',
  'stories260K',
  'layouts/llama',
  'layouts/qwen2',
  'layouts/phi3',
  'layouts/gpt_neox',
  'layouts/falcon',
  'layouts/gemma',
] as const;

/** A fresh temp folder, removed by the returned cleanup. */
export function tempDir(prefix = 'fk-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
