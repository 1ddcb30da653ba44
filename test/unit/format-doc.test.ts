/** docs/FORMAT.md's tensor table is generated from the architecture descriptions: it must be current. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { FORMAT_DOC, formatDocWithTable } from '../../scripts/docs/tensorTable';

test('docs/FORMAT.md tensor table matches the descriptions (regenerate: node --import tsx scripts/docs/tensorTable.ts --write)', async () => {
  assert.equal(readFileSync(FORMAT_DOC, 'utf8'), await formatDocWithTable());
});
