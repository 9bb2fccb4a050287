// One canonical JSON for everything we hash (audit rows, tool definitions, approval arguments): object
// keys sorted at every level, so equal values always serialise, and hash, the same.

/** A deep copy with object keys in sorted order (what JSON.stringify then writes in that order). */
function sortedKeys(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(sortedKeys);
  const obj = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) out[k] = sortedKeys(obj[k]);
  return out;
}

/**
 * JSON with object keys sorted at every level. Numbers, strings and dates are written by JSON.stringify
 * itself (shortest round-trip numbers; NaN and Infinity as null; undefined properties left out).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortedKeys(value)) ?? 'null';
}
