// `npm run test:electron`: the same extension in desktop VS Code via @vscode/test-electron. It
// downloads VS Code from Microsoft's update servers, so it needs the network (not run in CI).
import * as esbuild from 'esbuild';
import * as path from 'node:path';
import { runTests } from '@vscode/test-electron';
import { ROOT } from './codeServer.mjs';

const suite = path.join(ROOT, 'out/electron/suite.js');
await esbuild.build({ entryPoints: [path.join(ROOT, 'test/e2e/electron/suite.ts')], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: suite, external: ['vscode'], logLevel: 'warning' });
const fixtures = path.resolve(ROOT, '../shared/fixtures');
try {
  await runTests({ extensionDevelopmentPath: ROOT, extensionTestsPath: suite, launchArgs: [fixtures, '--disable-extensions', '--disable-workspace-trust'] });
} catch (e) {
  console.error(`error: test-electron failed (${e?.message ?? e}); it needs network access to download VS Code`);
  process.exit(1);
}
