import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { SUPPORTED_ARCHITECTURES } from '../../src/core/arch';
import { ALL_FIXTURES, CLI, fixture, tempDir } from '../helpers/fixtures';

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('factored-keys inspect', () => {
  test('Mistral fixture reports the issue values', () => {
    const r = cli('inspect', fixture('mistral-bytes'), '--json');
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.deepEqual(
      { a: s.architecture, l: s.layers, h: s.hidden_size, q: s.query_heads, kv: s.kv_heads, d: s.head_dim, rope: s.rope, dtype: s.dtype, files: s.files, bias: s.qk_bias },
      { a: 'mistral', l: 4, h: 256, q: 4, kv: 2, d: 64, rope: true, dtype: 'BF16', files: 3, bias: false },
    );
    assert.equal(s.parameters, 3033344);
  });

  test('GPT-2 fixture: 4/4 heads x 64, no RoPE, Q/K bias, F32', () => {
    const s = JSON.parse(cli('inspect', fixture('gpt2-bytes'), '--json').stdout);
    assert.deepEqual([s.architecture, s.query_heads, s.kv_heads, s.head_dim, s.rope, s.qk_bias, s.dtype, s.files], ['gpt2', 4, 4, 64, false, true, 'F32', 1]);
  });

  for (const name of ALL_FIXTURES) {
    test(`${name}: JSON matches config.json and stdout is exactly one object`, () => {
      const r = cli('inspect', fixture(name), '--json');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim().split('\n').length, 1);
      const s = JSON.parse(r.stdout);
      const c = JSON.parse(readFileSync(path.join(fixture(name), 'config.json'), 'utf8'));
      const heads = c.num_attention_heads ?? c.n_head;
      assert.equal(s.architecture, c.model_type);
      assert.equal(s.layers, c.num_hidden_layers ?? c.n_layer);
      assert.equal(s.hidden_size, c.hidden_size ?? c.n_embd);
      assert.equal(s.query_heads, heads);
      assert.equal(s.kv_heads, c.multi_query ? 1 : (c.num_key_value_heads ?? heads));
      assert.equal(s.head_dim, c.head_dim ?? s.hidden_size / heads);
      assert.equal(s.rope, c.model_type !== 'gpt2');
      assert.equal(s.qk_bias, ['gpt2', 'qwen2', 'gpt_neox'].includes(c.model_type));
      assert.equal(s.dtype, name === 'mistral-bytes' ? 'BF16' : 'F32');
      const rotary = c.rope_parameters?.partial_rotary_factor ?? 1;
      if (s.rope) assert.equal(s.rotary_dim, s.head_dim * rotary);
    });
  }

  test('readable table by default', () => {
    const r = cli('inspect', fixture('mistral-bytes'));
    assert.equal(r.code, 0);
    assert.match(r.stdout, /architecture\s+mistral/);
    assert.match(r.stdout, /4 query \/ 2 KV x 64 \(GQA/);
    assert.match(r.stdout, /Q\/K dtype\s+BF16/);
  });
});

describe('inspect of exported factored checkpoints', () => {
  for (const [name, method, mode] of [['mistral-bytes', 'key-svd', 'latent'], ['gpt2-bytes', 'qk-svd', 'absorbed']] as const) {
    test(`${name} ${method}: reports the model and its factored keys; analyze refuses it clearly`, () => {
      const t = tempDir();
      try {
        const out = path.join(t.dir, 'out');
        const e = cli('export', fixture(name), out, '--method', method, '--rank', '16', '--json');
        assert.equal(e.code, 0, e.stderr);
        const original = JSON.parse(cli('inspect', fixture(name), '--json').stdout);
        const r = cli('inspect', out, '--json');
        assert.equal(r.code, 0, r.stderr);
        const s = JSON.parse(r.stdout);
        for (const k of ['architecture', 'layers', 'hidden_size', 'query_heads', 'kv_heads', 'head_dim', 'rope', 'qk_bias', 'dtype', 'files']) assert.deepEqual(s[k], original[k], k);
        assert.ok(s.parameters < original.parameters);
        assert.equal(s.factored.method, method);
        assert.equal(s.factored.rope_mode, mode);
        assert.deepEqual(s.factored.ranks, Array.from({ length: original.layers }, () => Array(original.kv_heads).fill(16)));
        assert.deepEqual(s.factored.key_dims_per_token, { before: original.layers * original.kv_heads * 64, after: original.layers * original.kv_heads * 16 });
        const a = cli('analyze', out);
        assert.equal(a.code, 1);
        assert.match(a.stderr, /^error: .*config\.json: this checkpoint is already factored/);
        // A block that names a missing tensor is refused with the tensor's name.
        const cfgPath = path.join(out, 'config.json');
        const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
        cfg.factored_keys.layers[1].key[0].tensor = 'no.such.tensor';
        writeFileSync(cfgPath, JSON.stringify(cfg));
        const bad = cli('inspect', out);
        assert.equal(bad.code, 1);
        assert.match(bad.stderr, /^error: .*factored_keys names tensor "no\.such\.tensor", which is not in the checkpoint\n$/);
      } finally {
        t.cleanup();
      }
    });
  }
});

describe('CLI errors are one line, non-zero, without stack traces', () => {
  test('missing path', () => {
    const r = cli('inspect', '/nonexistent/ckpt');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'error: /nonexistent/ckpt: no such file or folder\n');
  });

  test('unsupported model_type names it and lists what is supported', () => {
    const t = tempDir();
    try {
      cpSync(fixture('layouts/llama'), t.dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(path.join(t.dir, 'config.json'), 'utf8'));
      cfg.model_type = 'mamba';
      writeFileSync(path.join(t.dir, 'config.json'), JSON.stringify(cfg));
      const r = cli('inspect', t.dir, '--json');
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^error: .*config\.json: model_type "mamba" is not supported \(supported: [a-z0-9_, ]+\)\n$/);
      const listed = /supported: ([^)]*)\)/.exec(r.stderr)![1].split(', ');
      assert.deepEqual(listed, [...SUPPORTED_ARCHITECTURES]);
      for (const t of ['qwen3', 'gemma3_text', 'gpt_oss', 'deepseek_v3']) assert.ok(listed.includes(t));
    } finally {
      t.cleanup();
    }
  });

  test('config contradicting the tensors names the tensor', () => {
    const t = tempDir();
    try {
      cpSync(fixture('layouts/llama'), t.dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(path.join(t.dir, 'config.json'), 'utf8'));
      cfg.num_key_value_heads = 4;
      writeFileSync(path.join(t.dir, 'config.json'), JSON.stringify(cfg));
      const r = cli('inspect', t.dir);
      assert.equal(r.code, 1);
      assert.equal(r.stderr.split('\n').length, 2);
      assert.match(r.stderr, /^error: .*model\.safetensors: tensor "model\.layers\.0\.self_attn\.k_proj\.weight" (shape \[32, 64\] is too small|has 32 output features)/);
    } finally {
      t.cleanup();
    }
  });

  test('--debug adds the stack; unknown options and commands are errors', () => {
    const r = cli('inspect', '/nonexistent/ckpt', '--debug');
    assert.match(r.stderr, /^error: .*\n.*at /s);
    assert.match(cli('inspect', fixture('gpt2-bytes'), '--bogus').stderr, /^error: inspect: unknown option --bogus\n$/);
    const u = cli('frobnicate');
    assert.equal(u.code, 2);
    assert.match(u.stderr, /^error: unknown command "frobnicate"/);
  });
});
