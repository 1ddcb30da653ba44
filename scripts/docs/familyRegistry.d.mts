/** Types of familyRegistry.mjs (for the tests, which import it from TypeScript). */
export const MODELS_DIR: string;
export const REGISTRY_FILE: string;
export function describedFamilies(dir?: string): [module: string, name: string][];
export function registrySource(dir?: string): string;
export function writeRegistry(): boolean;
