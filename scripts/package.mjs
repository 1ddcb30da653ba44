// `npm run package`: platform-specific .vsix files, one per onnxruntime-node binary, each carrying
// only its own native library (VS Code installs the one matching the user's platform).
//
//   node scripts/package.mjs                      every target, into vsix/factored-keys-<target>.vsix
//   node scripts/package.mjs --target linux-x64   one target (repeatable)
//   node scripts/package.mjs --host --out F.vsix  this machine's target only (the demo and e2e tests)
//   --out-dir DIR                                 where the per-target files go (default vsix/)
//   --no-build                                    package the dist/ there is (already built with --production)
//
// .vscodeignore names the linux-x64 library; for each target a copy naming that target's folder
// is vsce's ignore file. vsce runs in a staging folder holding the shipped files and a link to
// node_modules, so it does not walk the repository's caches (70 s a target before, 20 s now).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** VS Code target -> onnxruntime-node's bin/napi-v6 folder, and the files that folder must hold. */
export const TARGETS = {
  // the binding loads @rpath/libonnxruntime.1.dylib; the package's second copy (…1.30.0.dylib) is
  // kept, as onnxruntime-node ships it, since it could not be tried on a Mac here
  'darwin-arm64': { dir: 'darwin/arm64', natives: ['onnxruntime_binding.node', 'libonnxruntime.1.dylib'] },
  'linux-x64': { dir: 'linux/x64', natives: ['onnxruntime_binding.node', 'libonnxruntime.so.1'] },
  'linux-arm64': { dir: 'linux/arm64', natives: ['onnxruntime_binding.node', 'libonnxruntime.so.1'] },
  'win32-x64': { dir: 'win32/x64', natives: ['onnxruntime_binding.node', 'onnxruntime.dll', 'DirectML.dll'] },
  'win32-arm64': { dir: 'win32/arm64', natives: ['onnxruntime_binding.node', 'onnxruntime.dll', 'DirectML.dll'] },
};

const ORT_BIN = 'node_modules/onnxruntime-node/bin/napi-v6';

/** Where `npm run package` puts the .vsix of `target`. */
export function vsixPath(target, dir = path.join(ROOT, 'vsix')) {
  return path.resolve(ROOT, dir, `factored-keys-${target}.vsix`);
}

/** This machine's target, or undefined when onnxruntime-node has no binary for it. */
export function hostTarget() {
  const t = `${process.platform}-${process.arch}`;
  return Object.hasOwn(TARGETS, t) ? t : undefined;
}

/** The .vscodeignore text for `target`: the linux-x64 library line pointed at the target's folder. */
export function ignoreFileFor(target, template = readFileSync(path.join(ROOT, '.vscodeignore'), 'utf8')) {
  const line = `!${ORT_BIN}/${TARGETS['linux-x64'].dir}/**`;
  if (!template.includes(line)) throw new Error(`.vscodeignore lacks the line ${line}`);
  return template.replace(line, `!${ORT_BIN}/${TARGETS[target].dir}/**`);
}

/** A folder with what a .vsix can hold (package.json, README, dist, media, python) and node_modules linked. */
function stage() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fk-package-'));
  for (const f of ['package.json', 'README.md', 'dist', 'media', 'python']) {
    if (existsSync(path.join(ROOT, f))) cpSync(path.join(ROOT, f), path.join(dir, f), { recursive: true });
  }
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'junction');
  return dir;
}

/** Packages each of `targets` (dist/ must be built); `outFor(target)` names its file (relative to the repository). */
export function packageTargets(targets, outFor) {
  for (const t of targets) if (!Object.hasOwn(TARGETS, t)) throw new Error(`unknown target ${t} (targets: ${Object.keys(TARGETS).join(', ')})`);
  const dir = stage();
  const files = [];
  try {
    for (const target of targets) {
      const ignore = path.join(dir, '.vscodeignore');
      writeFileSync(ignore, ignoreFileFor(target));
      const out = path.resolve(ROOT, outFor(target));
      mkdirSync(path.dirname(out), { recursive: true });
      const bin = path.join(ROOT, 'node_modules/@vscode/vsce/vsce');
      execFileSync(process.execPath, [bin, 'package', '--target', target, '--ignoreFile', ignore, '--allow-missing-repository', '--skip-license', '--out', out], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
      files.push(out);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return files;
}

function main(argv) {
  const targets = [];
  let out;
  let outDir;
  let build = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--target') targets.push(argv[++i]);
    else if (a === '--host') {
      const h = hostTarget();
      if (!h) throw new Error(`onnxruntime-node has no binary for ${process.platform}-${process.arch}`);
      targets.push(h);
    } else if (a === '--out') out = argv[++i];
    else if (a === '--out-dir') outDir = argv[++i];
    else if (a === '--no-build') build = false;
    else throw new Error(`unknown option ${a}`);
  }
  if (out !== undefined && targets.length !== 1) throw new Error('--out goes with exactly one target');
  if (build) execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs'), '--production'], { cwd: ROOT, stdio: 'inherit' });
  const chosen = targets.length ? targets : Object.keys(TARGETS);
  const files = packageTargets(chosen, (target) => out ?? vsixPath(target, outDir));
  chosen.forEach((target, i) => console.log(`${target}: ${path.relative(ROOT, files[i])}`));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main(process.argv.slice(2));
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exitCode = 1;
  }
}
