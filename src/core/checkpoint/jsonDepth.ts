/**
 * Nesting depth of a JSON text, found by one linear scan before JSON.parse: a config nested a
 * million levels deep parses (slowly, about a second each time a command reads it) and then
 * overflows the stack of any recursive walk, so such files are refused up front, naming the key
 * under which the nesting runs away.
 */

/** Deeper than any real config or index (they nest a handful of levels). */
export const MAX_JSON_DEPTH = 256;

/** The key the nesting passed `limit` under (or `(top level)`), or undefined when it stays within. */
export function jsonTooDeep(text: string, limit = MAX_JSON_DEPTH): string | undefined {
  let depth = 0;
  let lastKey: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
      let j = i + 1;
      while (j < text.length && (text[j] === ' ' || text[j] === '\n' || text[j] === '\r' || text[j] === '\t')) j++;
      if (text[j] === ':') lastKey = text.slice(start + 1, Math.min(i, start + 1 + 80));
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > limit) return lastKey ?? '(top level)';
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return undefined;
}
