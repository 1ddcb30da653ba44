/**
 * Every architecture family this tool reads, and the model types each answers to. The list is
 * generated from the description files of this folder (registry.generated.ts): a new family is
 * its description file and a fixture.
 */
import type { Family } from './kit';
import { DESCRIBED_FAMILIES } from './registry.generated';

export const FAMILIES: readonly Family[] = DESCRIBED_FAMILIES;

/** model_type → family; two descriptions claiming one model type are a mistake in this folder. */
export function indexByModelType(families: readonly Family[]): ReadonlyMap<string, Family> {
  const byType = new Map<string, Family>();
  for (const f of families) {
    for (const t of f.modelTypes) {
      const other = byType.get(t);
      if (other) throw new Error(`model_type "${t}" is claimed by the ${other.name} and ${f.name} descriptions`);
      byType.set(t, f);
    }
  }
  return byType;
}

export const FAMILY_BY_MODEL_TYPE: ReadonlyMap<string, Family> = indexByModelType(FAMILIES);
