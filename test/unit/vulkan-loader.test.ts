/**
 * WebGPU on Linux needs the Vulkan loader. Without it, onnxruntime's Dawn prints its own warning
 * with build paths to stderr when the provider loads, so the probe checks the loader first and
 * reports one line instead, never loading the provider. Simulated through the library-loading
 * hook; the real check is also run (this machine has no libvulkan.so.1, CI machines neither).
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { probeBackend, sessionInternals } from '../../src/core/compute/session';

const realLoad = sessionInternals.loadLibrary;
afterEach(() => {
  sessionInternals.loadLibrary = realLoad;
  sessionInternals.resetProbes();
});

test('no Vulkan loader: webgpu is unusable with one line, and the provider is never loaded', async (t) => {
  if (process.platform !== 'linux') return t.skip('Linux only');
  const asked: string[] = [];
  sessionInternals.loadLibrary = (file) => {
    asked.push(file);
    throw new Error(`${file}: cannot open shared object file: No such file or directory`);
  };
  sessionInternals.resetProbes();
  const p = await probeBackend('webgpu');
  assert.deepEqual(asked, ['libvulkan.so.1']);
  assert.equal(p.usable, false);
  assert.equal(p.reason, 'the Vulkan loader (libvulkan.so.1) is not installed; WebGPU needs it (e.g. apt install libvulkan1)');
  // other providers are not asked about Vulkan
  asked.length = 0;
  await probeBackend('cuda');
  assert.deepEqual(asked, []);
});

test('a loader that loads (no Node addon, so dlopen then complains otherwise) lets the probe go on', async (t) => {
  if (process.platform !== 'linux') return t.skip('Linux only');
  sessionInternals.loadLibrary = (file) => {
    throw new Error(`Module did not self-register: '${file}'.`);
  };
  sessionInternals.resetProbes();
  const p = await probeBackend('webgpu');
  assert.notEqual(p.reason, 'the Vulkan loader (libvulkan.so.1) is not installed; WebGPU needs it (e.g. apt install libvulkan1)');
});

test('the real check: it tells a missing loader from a present one', (t) => {
  if (process.platform !== 'linux') return t.skip('Linux only');
  // libm is always there and is no Node addon: the same kind of error as a present loader
  assert.throws(() => realLoad('libm.so.6'), (e: Error) => !/cannot open shared object file/.test(e.message));
  assert.throws(() => realLoad('libfk-no-such-library.so.1'), /cannot open shared object file/);
});
