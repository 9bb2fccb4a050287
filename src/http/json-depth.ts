import { invalid } from '../errors.js';

/** How deep a JSON value from a gateway may nest (tool definitions have the same limit: src/tools/hash.ts). */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` has objects or arrays nested deeper than `max` levels (stops looking at `max`). */
export function nestedDeeperThan(value: unknown, max: number, depth = 0): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (depth >= max) return true;
  if (Array.isArray(value)) {
    for (const v of value) if (nestedDeeperThan(v, max, depth + 1)) return true;
    return false;
  }
  for (const k in value) if (nestedDeeperThan((value as Record<string, unknown>)[k], max, depth + 1)) return true;
  return false;
}

/**
 * A 400 naming `field` when its value nests deeper than MAX_JSON_DEPTH levels. Every later step that walks
 * arguments (approval keys, redaction, the audit row's hash) recurses: 20,000 levels overflowed the stack
 * in the approval step, and the call was denied as an outage (DEPENDENCY_UNAVAILABLE) instead of refused.
 */
export function requireShallow(value: unknown, field: string): void {
  if (nestedDeeperThan(value, MAX_JSON_DEPTH)) throw invalid(field, `is nested deeper than ${MAX_JSON_DEPTH} levels (objects and arrays)`);
}
