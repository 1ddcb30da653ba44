/**
 * Backend choice on the platforms the .vsix files target, simulated here (Linux CI): what
 * onnxruntime-node's binding lists is replaced by each platform's list, and process.platform
 * is set to match. `auto` prefers CoreML on macOS and DirectML on Windows when listed, and a
 * provider that does not start (it cannot on this Linux machine) falls back cleanly to the CPU.
 * The provider lists follow onnxruntime-node 1.30's build (CoreML in the macOS binary, DirectML
 * bundled with the Windows ones); they were not observed on a Mac or a Windows machine.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { autoCandidates, explicitBackendProblem, usableBackends } from '../../src/core/compute/session';

const requireHere = createRequire(__filename);
// index.js re-exports through getters; the function lives on dist/backend.js
const ortBackend = requireHere(path.join(path.dirname(requireHere.resolve('onnxruntime-node')), 'backend.js')) as { listSupportedBackends: () => { name: string; bundled: boolean }[] };
const realList = ortBackend.listSupportedBackends;
const realPlatform = Object.getOwnPropertyDescriptor(process, 'platform')!;

function simulate(platform: NodeJS.Platform, listed: { name: string; bundled: boolean }[]): void {
  Object.defineProperty(process, 'platform', { value: platform, configurable: true });
  ortBackend.listSupportedBackends = () => listed;
}

afterEach(() => {
  ortBackend.listSupportedBackends = realList;
  Object.defineProperty(process, 'platform', realPlatform);
});

const MAC = [
  { name: 'cpu', bundled: true },
  { name: 'webgpu', bundled: true },
  { name: 'coreml', bundled: true },
];
const WINDOWS = [
  { name: 'cpu', bundled: true },
  { name: 'dml', bundled: true },
  { name: 'webgpu', bundled: true },
  { name: 'cuda', bundled: false },
];

describe('backends per platform', () => {
  it('macOS: auto tries CoreML first, then WebGPU, then the CPU', () => {
    simulate('darwin', MAC);
    assert.deepEqual(autoCandidates(), ['coreml', 'webgpu', 'cpu']);
  });

  it('Windows: auto tries CUDA (when installed), DirectML, WebGPU, then the CPU', () => {
    simulate('win32', WINDOWS);
    assert.deepEqual(autoCandidates(), ['cuda', 'dml', 'webgpu', 'cpu']);
    simulate('win32', WINDOWS.filter((b) => b.name !== 'cuda'));
    assert.deepEqual(autoCandidates(), ['dml', 'webgpu', 'cpu']);
  });

  it('a provider the build does not list is never tried, and asking for it names what is missing', async () => {
    simulate('darwin', [{ name: 'cpu', bundled: true }]);
    assert.deepEqual(autoCandidates(), ['cpu']);
    assert.match((await explicitBackendProblem('coreml')) ?? '', /onnxruntime-node has no coreml provider on darwin-/);
    simulate('win32', [{ name: 'cpu', bundled: true }]);
    assert.match((await explicitBackendProblem('dml')) ?? '', /onnxruntime-node has no dml provider on win32-/);
  });

  it('listed providers that fail to start fall back to the CPU with a reason', async () => {
    // on this machine CoreML's and DirectML's sessions cannot be created: the probe says so
    // (WebGPU left out: probing it here would only print Dawn's Vulkan warning)
    simulate('darwin', MAC.filter((b) => b.name !== 'webgpu'));
    assert.deepEqual(await usableBackends(), ['cpu']);
    const problem = await explicitBackendProblem('coreml');
    assert.ok(problem && problem.length > 0 && !problem.includes('\n'), `one-line reason: ${problem}`);
  });
});
