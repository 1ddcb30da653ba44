/** docs/FORMAT.md's tensor table is generated from the architecture descriptions: it must be current. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { FORMAT_DOC, formatDocWithTable, README, readmeWithModelTypes, tableSources, tensorTable } from '../../scripts/docs/tensorTable';

test('docs/FORMAT.md tensor table matches the descriptions (regenerate: node --import tsx scripts/docs/tensorTable.ts --write)', async () => {
  assert.equal(readFileSync(FORMAT_DOC, 'utf8'), await formatDocWithTable());
});

test('the table reads every layouts2 checkpoint without a hand-kept list: each model type but latent attention has a row', async () => {
  const layouts2 = tableSources().filter((s) => path.basename(path.dirname(s)) === 'layouts2');
  const table = await tensorTable();
  const types = layouts2.map((dir) => JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')).model_type as string);
  assert.ok(types.includes('deepseek_v3') && types.includes('llama') && types.length >= 17, types.join(', '));
  for (const t of types.filter((t) => t !== 'deepseek_v3')) assert.match(table, new RegExp(`^\\| \`${t}\` \\|`, 'm'), t);
  assert.doesNotMatch(table, /deepseek/);
  // llama3's RoPE scaling shows as its own row
  assert.match(table, /^\| `llama` \|.*\| RoPE llama3 \|$/m);
});

test('README.md lists every model type the descriptions answer to (regenerate: node --import tsx scripts/docs/tensorTable.ts --write)', () => {
  assert.equal(readFileSync(README, 'utf8'), readmeWithModelTypes());
  assert.match(readFileSync(README, 'utf8'), /`qwen3_moe`, `smollm3`/);
});
