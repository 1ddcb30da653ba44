/** One structural mutation of a JSON-like value, shared by the hostile fuzz tests. */

export interface JsonMutation {
  /** Walk: at each step take key `p % keys.length` of the current object. */
  readonly path: readonly number[];
  readonly action: 'replace' | 'delete' | 'add';
  /** Key added by `add` (own, enumerable: may be "__proto__" or "constructor"). */
  readonly key: string;
  readonly value: unknown;
}

/**
 * A deep copy of `base` with one value somewhere replaced or removed, or one key added: the walk
 * follows `path` and stops at a leaf (or on every third step) to replace/delete there.
 */
export function mutateJson<T>(base: T, { path, action, key, value }: JsonMutation): T {
  const copy = structuredClone(base);
  let node = copy as Record<string, unknown>;
  for (const p of path) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const k = keys[p % keys.length];
    const child = node[k];
    if (action !== 'add' && (child === null || typeof child !== 'object' || p % 3 === 0)) {
      if (action === 'replace') node[k] = value;
      else delete node[k];
      return copy;
    }
    if (child !== null && typeof child === 'object') node = child as Record<string, unknown>;
  }
  if (!Array.isArray(node)) Object.defineProperty(node, key, { value, enumerable: true, configurable: true, writable: true });
  return copy;
}
