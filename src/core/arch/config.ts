/** Typed access to config.json, with errors that name the file and the key. */
import type { ModelConfig } from '../checkpoint/checkpoint';
import { previewJson } from '../checkpoint/safetensors';
import { FactoredKeysError } from '../errors';

/** Reads keys of config.json; dotted keys ("rope_parameters.rope_theta") reach into objects. */
export class ConfigReader {
  constructor(
    readonly config: ModelConfig,
    readonly where: string,
  ) {}

  /** The raw value at a (dotted) key, or undefined when absent or null. */
  get(key: string): unknown {
    let v: unknown = this.config;
    for (const p of key.split('.')) {
      if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, p)) return undefined;
      v = (v as Record<string, unknown>)[p];
    }
    return v === null ? undefined : v;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** The first present key as a positive integer; missing everywhere is an error. */
  int(...keys: string[]): number {
    const v = this.optionalInt(...keys);
    if (v === undefined) throw new FactoredKeysError(`${this.where}: missing "${keys[0]}"`);
    return v;
  }

  optionalInt(...keys: string[]): number | undefined {
    for (const k of keys) {
      const v = this.get(k);
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
        throw new FactoredKeysError(`${this.where}: "${k}" must be a positive integer, got ${previewJson(v)}`);
      }
      return v;
    }
    return undefined;
  }

  /** The first present key as a finite number, else `fallback`. */
  number(fallback: number, ...keys: string[]): number {
    return this.optionalNumber(...keys) ?? fallback;
  }

  optionalNumber(...keys: string[]): number | undefined {
    for (const k of keys) {
      const v = this.get(k);
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new FactoredKeysError(`${this.where}: "${k}" must be a number, got ${previewJson(v)}`);
      return v;
    }
    return undefined;
  }

  /** A positive finite number (scales, epsilons, thetas). */
  positive(fallback: number, ...keys: string[]): number {
    const v = this.number(fallback, ...keys);
    if (!(v > 0)) throw new FactoredKeysError(`${this.where}: "${keys.find((k) => this.has(k)) ?? keys[0]}" must be greater than 0, got ${previewJson(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') throw new FactoredKeysError(`${this.where}: "${key}" must be true or false, got ${previewJson(v)}`);
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string') throw new FactoredKeysError(`${this.where}: "${key}" must be a string, got ${previewJson(v)}`);
    return v;
  }

  /** An array of numbers (every entry finite). */
  numbers(key: string): number[] | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
      throw new FactoredKeysError(`${this.where}: "${key}" must be a list of numbers, got ${previewJson(v)}`);
    }
    return v as number[];
  }

  /** An array of strings. */
  strings(key: string): string[] | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new FactoredKeysError(`${this.where}: "${key}" must be a list of strings, got ${previewJson(v)}`);
    return v as string[];
  }
}
