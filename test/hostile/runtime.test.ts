/**
 * The runtime file of an export is the project's fixed template, whatever the checkpoint says:
 * config values and tensor names holding quotes, newlines and Python code never reach the
 * written modeling_factored_keys.py (docs/FORMAT.md section 9).
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { cli } from '../helpers/cli';
import { AUTO_MAP, RUNTIME_FILE } from '../../src/core/export/format';
import { FIXTURES, REPO_ROOT, scratchDir } from './cliRunner';

const PAYLOAD = `x"""\n'''\nimport os; os.system("echo pwned") # \\n"`;

/** Appends a 1-element F32 tensor named `name` to a safetensors file. */
function addTensor(file: string, name: string): void {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: number[] }>;
  const data = buf.subarray(8 + n);
  header[name] = { dtype: 'F32', shape: [1], data_offsets: [data.byteLength, data.byteLength + 4] } as never;
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(h.byteLength));
  writeFileSync(file, Buffer.concat([prefix, h, data, Buffer.alloc(4)]));
}

test('hostile config values and tensor names: the written runtime file is the template, byte for byte', async () => {
  const dir = scratchDir('fk-runtime-hostile-');
  const src = path.join(dir, 'src');
  cpSync(path.join(FIXTURES, 'layouts/llama'), src, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  config._name_or_path = PAYLOAD;
  config[PAYLOAD] = PAYLOAD;
  config.auto_map = { AutoModelForCausalLM: `${PAYLOAD}.Evil` };
  writeFileSync(path.join(src, 'config.json'), JSON.stringify(config));
  addTensor(path.join(src, 'model.safetensors'), `model.${PAYLOAD}.weight`);
  const dest = path.join(dir, 'out');
  const r = await cli('export', src, dest, '--method', 'key-svd', '--rank', '4');
  assert.equal(r.code, 0, r.err);
  const written = readFileSync(path.join(dest, RUNTIME_FILE));
  assert.ok(written.equals(readFileSync(path.join(REPO_ROOT, 'python', RUNTIME_FILE))), 'byte-identical to python/ template');
  assert.ok(!written.toString('utf8').includes('pwned'));
  const out = JSON.parse(readFileSync(path.join(dest, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(out.auto_map, AUTO_MAP, "the source's auto_map is replaced, not kept");
  assert.equal(out._name_or_path, PAYLOAD, 'hostile strings stay data in config.json');
});

test('a hostile model_type is refused before anything is written', async () => {
  const dir = scratchDir('fk-runtime-hostile-type-');
  const src = path.join(dir, 'src');
  cpSync(path.join(FIXTURES, 'layouts/llama'), src, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  config.model_type = `llama${PAYLOAD}`;
  writeFileSync(path.join(src, 'config.json'), JSON.stringify(config));
  const dest = path.join(dir, 'out');
  const r = await cli('export', src, dest, '--method', 'key-svd', '--rank', '4');
  assert.notEqual(r.code, 0);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.equal(existsSync(dest), false);
});
