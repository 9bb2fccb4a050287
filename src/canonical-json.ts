// One canonical JSON for everything we hash (audit rows, tool definitions, approval arguments): object
// keys sorted at every level, so equal values always serialise, and hash, the same.

/** The pre-2026-12 form, kept for values the direct writer does not handle itself (objects with toJSON). */
function sortedKeys(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(sortedKeys);
  const obj = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) out[k] = sortedKeys(obj[k]);
  return out;
}

/** Objects with at most this many keys are sorted in place by insertion (see insertionSorted). */
const SMALL = 24;

const INDEX_LIMIT = 4_294_967_295;
const isArrayIndex = (k: string) => /^(?:0|[1-9]\d{0,9})$/.test(k) && Number(k) < INDEX_LIMIT;

/**
 * The key order of the sorted copy: a JavaScript object lists array-index keys ("0", "10") first, in
 * numeric order, whatever the insertion order, so the copy (and every hash made from it) has those first
 * and the other keys sorted after them. Object.keys already lists the index keys first, in that order.
 */
function orderedKeys(obj: Record<string, unknown>): string[] {
  const keys = Object.keys(obj);
  let n = 0;
  while (n < keys.length && isArrayIndex(keys[n]!)) n++;
  if (keys.length - n <= SMALL) return insertionSorted(keys, n);
  if (n === 0) return keys.sort();
  const rest = keys.slice(n).sort();
  keys.length = n;
  for (const k of rest) keys.push(k);
  return keys;
}

/**
 * Sorts keys[from..] in place, in the order Array.prototype.sort gives strings (UTF-16 code units, which
 * is what `<` compares). The built-in sort allocates work arrays on every call, ~750 bytes for the handful
 * of keys an audit row's objects have (6 KB of the 16 KB a row's canonical JSON allocated); most of those
 * objects are already in order, and insertion sort then does one comparison per key and no allocation.
 */
function insertionSorted(keys: string[], from: number): string[] {
  for (let i = from + 1; i < keys.length; i++) {
    const k = keys[i]!;
    let j = i - 1;
    while (j >= from && keys[j]! > k) {
      keys[j + 1] = keys[j]!;
      j--;
    }
    keys[j + 1] = k;
  }
  return keys;
}

/**
 * Writes `value` as JSON.stringify would write the sorted copy above, without building the copy (every
 * audit row goes through here: the copies were a third of what a row allocated). Undefined means "leave
 * the property out" (undefined, functions, symbols), as JSON.stringify does.
 */
function write(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'number':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      // undefined, function, symbol; a bigint throws like JSON.stringify does.
      return JSON.stringify(value);
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += write(value[i]) ?? 'null';
    }
    return `${out}]`;
  }
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return JSON.stringify(sortedKeys(value));
  const obj = value as Record<string, unknown>;
  let out = '{';
  let first = true;
  for (const k of orderedKeys(obj)) {
    const v = write(obj[k]);
    if (v === undefined) continue;
    out += `${first ? '' : ','}${JSON.stringify(k)}:${v}`;
    first = false;
  }
  return `${out}}`;
}

/**
 * JSON with object keys sorted at every level. Numbers, strings and dates are written by JSON.stringify
 * itself (shortest round-trip numbers; NaN and Infinity as null; undefined properties left out).
 */
export function canonicalJson(value: unknown): string {
  return write(value) ?? 'null';
}

/** The reference implementation (a sorted deep copy, then JSON.stringify): the tests compare the two. */
export function canonicalJsonByCopy(value: unknown): string {
  return JSON.stringify(sortedKeys(value)) ?? 'null';
}
