// Bundles the extension host, the CLI and the webview with esbuild.
// onnxruntime-node stays external: its native binding is loaded from node_modules at run time.
import * as esbuild from 'esbuild';
import { readFileSync } from 'node:fs';
import { writeRegistry } from './docs/familyRegistry.mjs';

// the family list is generated from src/core/arch/models/ (a new family is one file)
writeRegistry();

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');

const common = {
  bundle: true,
  sourcemap: !production,
  minify: production,
  logLevel: 'warning',
  define: { __FK_VERSION__: JSON.stringify(pkg.version) },
};

const nodeTargets = [
  { entryPoints: { extension: 'src/extension/extension.ts' }, external: ['vscode', 'onnxruntime-node'] },
  { entryPoints: { cli: 'src/cli/cli.ts' }, external: ['onnxruntime-node'] },
  { entryPoints: { worker: 'src/core/worker/worker.ts' }, external: ['onnxruntime-node'], optional: true },
  { entryPoints: { jobWorker: 'src/extension/jobWorker.ts' }, external: ['onnxruntime-node'], optional: true },
].map((t) => ({ ...common, ...t, platform: 'node', format: 'cjs', target: 'node20', outdir: 'dist' }));

const webTargets = [
  { entryPoints: { webview: 'webview/main.ts' }, optional: true },
].map((t) => ({ ...common, ...t, platform: 'browser', format: 'iife', target: 'es2022', outdir: 'dist', loader: { '.css': 'css' } }));

import { existsSync } from 'node:fs';
const targets = [...nodeTargets, ...webTargets]
  .filter((t) => !t.optional || Object.values(t.entryPoints).every((p) => existsSync(p)))
  .map(({ optional: _optional, ...t }) => t);

if (watch) {
  const contexts = await Promise.all(targets.map((t) => esbuild.context(t)));
  await Promise.all(contexts.map((c) => c.watch()));
  console.log('watching…');
} else {
  await Promise.all(targets.map((t) => esbuild.build(t)));
}
