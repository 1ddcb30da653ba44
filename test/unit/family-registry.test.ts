/**
 * Adding an architecture family is its description file (src/core/arch/models/<family>.ts) and a
 * fixture: the registry is generated from the folder (scripts/docs/familyRegistry.mjs, run by
 * `npm run build`), and the README's model types and FORMAT.md's table from the descriptions.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { FAMILIES, FAMILY_BY_MODEL_TYPE, indexByModelType } from '../../src/core/arch/models';
import type { Family } from '../../src/core/arch/models/kit';

type Registry = typeof import('../../scripts/docs/familyRegistry.mjs');
const registry = (): Promise<Registry> => import('../../scripts/docs/familyRegistry.mjs');

test('the committed registry is what the generator writes from the folder', async () => {
  const r = await registry();
  assert.equal(readFileSync(r.REGISTRY_FILE, 'utf8'), r.registrySource(), 'stale: run node scripts/docs/familyRegistry.mjs (npm run build does)');
});

test('every description file of the folder is a registered family, and nothing else is', async () => {
  const r = await registry();
  const files = readdirSync(r.MODELS_DIR).filter((f) => f.endsWith('.ts') && /^export const \w+: Family = /m.test(readFileSync(path.join(r.MODELS_DIR, f), 'utf8')));
  assert.equal(FAMILIES.length, files.length);
  assert.ok(FAMILIES.length >= 19);
  for (const f of FAMILIES) for (const t of f.modelTypes) assert.equal(FAMILY_BY_MODEL_TYPE.get(t), f, t);
});

test('a new description file is picked up with no other edit; two in one file are refused', async () => {
  const r = await registry();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fk-families-'));
  try {
    cpSync(r.MODELS_DIR, dir, { recursive: true });
    writeFileSync(path.join(dir, 'newFamily.ts'), "import type { Family } from './kit';\nexport const newFamily: Family = { name: 'new' } as unknown as Family;\n");
    const found = r.describedFamilies(dir);
    assert.deepEqual(found.find(([m]) => m === 'newFamily'), ['newFamily', 'newFamily']);
    assert.match(r.registrySource(dir), /^import \{ newFamily \} from '\.\/newFamily';$/m);
    assert.match(r.registrySource(dir), /DESCRIBED_FAMILIES: readonly Family\[\] = \[.*\bnewFamily\b.*\];/);
    writeFileSync(path.join(dir, 'twice.ts'), "export const a: Family = {} as Family;\nexport const b: Family = {} as Family;\n");
    assert.throws(() => r.describedFamilies(dir), /twice\.ts: 2 families in one file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('two descriptions claiming one model type are refused, naming both', () => {
  const a = { name: 'first', modelTypes: ['x', 'y'] } as unknown as Family;
  const b = { name: 'second', modelTypes: ['y'] } as unknown as Family;
  assert.throws(() => indexByModelType([a, b]), /model_type "y" is claimed by the first and second descriptions/);
  assert.equal(indexByModelType([a]).get('y'), a);
});
