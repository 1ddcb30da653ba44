/**
 * Fuzzes the reader of factored checkpoints (what `eval` loads from a downloaded export): the
 * `factored_keys` block of a real export is mutated at random paths and every layer is loaded
 * through `checkpointSource`. Only FactoredKeysError may escape, and every read must stay
 * inside a declared tensor of the checkpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { openCheckpoint } from '../../src/core/checkpoint/checkpoint';
import { FactoredKeysError } from '../../src/core/errors';
import { checkpointSource } from '../../src/core/eval/factored';
import { exportFactored } from '../../src/core/export/export';
import { FIXTURES, scratchDir } from './cliRunner';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const RUNS = Number(process.env.FK_FACTORED_RUNS ?? 1500);

/** A mutation at a random path of the factored_keys block (or of the config around it). */
interface BlockMutation {
  readonly inConfig: boolean;
  readonly path: number[];
  readonly action: 'replace' | 'delete' | 'add';
  readonly key: string;
  readonly value: Json;
}

const blockMutation: fc.Arbitrary<BlockMutation> = fc.record({
  inConfig: fc.boolean(),
  path: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
  action: fc.constantFrom('replace', 'delete', 'add'),
  key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'bias', 'key_up', 'width', 'offset'), fc.string({ maxLength: 6 })),
  value: fc.oneof(
    fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
    fc.constantFrom<Json>(0, -1, 1, 7, 8, 9, 16, 17, 32, 64, 0.5, 2 ** 31, 2 ** 53, 1e12, '', 'linear', 'conv1d', 'latent', 'absorbed', null, [], {}, 'lm_head.weight', 'model.norm.weight'),
  ),
});

function mutate(config: Record<string, Json>, m: BlockMutation): void {
  let node = (m.inConfig ? config : config.factored_keys) as Record<string, Json>;
  if (node === null || typeof node !== 'object') return; // an earlier mutation replaced the block
  for (const p of m.path) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const k = keys[p % keys.length];
    const child = node[k];
    if (m.action !== 'add' && (child === null || typeof child !== 'object' || p % 3 === 0)) {
      if (m.action === 'replace') node[k] = m.value;
      else delete node[k];
      return;
    }
    if (child !== null && typeof child === 'object') node = child as Record<string, Json>;
  }
  if (!Array.isArray(node)) Object.defineProperty(node, m.key, { value: m.value, enumerable: true, configurable: true, writable: true });
}

test(`factored checkpoints, fuzzed: ${RUNS} mutated factored_keys blocks loaded layer by layer`, { timeout: 300_000 }, async (t) => {
  const root = scratchDir('fk-factored-', true);
  try {
    // Latent mode (RoPE, Llama layout) and absorbed mode (GPT-2): the two ways a block is read.
    const bases: { dir: string; config: Record<string, Json> }[] = [];
    for (const [name, source] of [['llama', 'layouts/llama'], ['gpt2', 'gpt2-bytes']] as const) {
      const exported = path.join(root, `export-${name}`);
      await exportFactored({ source: path.join(FIXTURES, source), dest: exported, method: 'key-svd', policy: { kind: 'uniform', rank: 8 } });
      bases.push({ dir: exported, config: JSON.parse(fs.readFileSync(path.join(exported, 'config.json'), 'utf8')) as Record<string, Json> });
    }
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, { arbitrary: fc.constant(1), weight: 1 }), fc.array(blockMutation, { minLength: 1, maxLength: 3 }), async (which, mutations) => {
        const base = bases[which];
        const config = structuredClone(base.config);
        for (const m of mutations) mutate(config, m);
        fs.writeFileSync(path.join(base.dir, 'config.json'), JSON.stringify(config));
        const sizes = new Map(fs.readdirSync(base.dir).map((f) => [path.join(base.dir, f), fs.statSync(path.join(base.dir, f)).size]));
        const declared: { spans?: { file: string; start: number; end: number }[] } = {};
        const outside: string[] = [];
        const observeRead = (file: string, position: number, length: number) => {
          const size = sizes.get(file);
          if (size === undefined || position < 0 || position + length > size) outside.push(`${file} [${position}, ${position + length})`);
          if (declared.spans && !declared.spans.some((s) => s.file === file && position >= s.start && position + length <= s.end)) outside.push(`data read ${file} [${position}, ${position + length})`);
        };
        const ckpt = await openCheckpoint(base.dir, { observeRead });
        declared.spans = [...ckpt.tensors.values()].map((x) => ({ file: x.file, start: x.start, end: x.end }));
        try {
          const source = checkpointSource(ckpt);
          await source.outer();
          for (let i = 0; i < source.spec.layers; i++) await source.layer(i);
          accepted++;
        } catch (e) {
          if (!(e instanceof FactoredKeysError)) throw new Error(`uncaught ${(e as Error).name}: ${(e as Error).message}`);
          refused++;
        } finally {
          await ckpt.close();
        }
        assert.deepEqual(outside, [], 'reads outside the files or the declared tensors');
      }),
      { numRuns: RUNS, seed: Number(process.env.FK_FUZZ_SEED ?? 11) },
    );
    t.diagnostic(`factored fuzz: ${accepted + refused} mutated blocks, ${refused} refused with FactoredKeysError, ${accepted} loaded every layer`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
