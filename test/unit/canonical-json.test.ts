import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalJsonByCopy } from '../../src/canonical-json.js';

// canonicalJson writes directly what the sorted-copy reference writes. Every audit row's hash depends on
// it, so the two must agree byte for byte on anything a row can hold (and rows already stored must still
// verify).

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const STRINGS = ['', '0', '4294967294', '4294967295', '01', '1e3', 'a', 'B', 'é', '日本', '🙂', '\u2028', '\ud800', 'quote"back\\slash', 'line\nbreak', '\u0000', 'ключ', 'Z', '_', '10', '2'];
const NUMBERS = [0, -0, 1, -1, 1.5, 1e21, 1e-7, Number.MAX_SAFE_INTEGER, Number.NaN, Number.POSITIVE_INFINITY, -123.456];

function value(r: () => number, depth: number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const kind = Math.floor(r() * (depth > 3 ? 6 : 9));
  switch (kind) {
    case 0:
      return pick(STRINGS);
    case 1:
      return pick(NUMBERS);
    case 2:
      return r() < 0.5;
    case 3:
      return null;
    case 4:
      return r() < 0.5 ? undefined : () => 1;
    case 5:
      return new Date(1_700_000_000_000 + Math.floor(r() * 1e9));
    case 6: {
      const arr = Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth + 1));
      if (r() < 0.1) arr.length += 2; // holes
      return arr;
    }
    default: {
      const obj: Record<string, unknown> = {};
      for (let i = Math.floor(r() * 5); i > 0; i--) obj[pick(STRINGS) + (r() < 0.3 ? pick(STRINGS) : '')] = value(r, depth + 1);
      if (r() < 0.05) obj['toJSON'] = () => ({ z: 1, a: [2, { y: 3, b: 4 }] });
      return obj;
    }
  }
}

describe('canonicalJson', () => {
  it('sorts keys at every level and leaves out what JSON leaves out', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: undefined }], c: null }, f: () => 1 })).toBe('{"a":{"c":null,"d":[3,{"z":1}]},"b":1}');
    expect(canonicalJson([undefined, Number.NaN, -0, new Date(0)])).toBe('[null,null,0,"1970-01-01T00:00:00.000Z"]');
    expect(canonicalJson(undefined)).toBe('null');
    // As the sorted copy always had it (a JavaScript object lists array-index keys first, numerically):
    expect(canonicalJson({ b: 1, 10: 2, a: 3, 2: 4, '01': 5 })).toBe('{"2":4,"10":2,"01":5,"a":3,"b":1}');
    expect(() => canonicalJson({ n: 1n })).toThrow();
  });

  it('agrees byte for byte with the sorted-copy reference on 20,000 generated values', () => {
    const r = rng(20261204);
    for (let i = 0; i < 20_000; i++) {
      const v = value(r, 0);
      expect(canonicalJson(v)).toBe(canonicalJsonByCopy(v));
    }
  });

  it('agrees on objects of every size, in and out of order (small ones are sorted by insertion, large ones by Array.prototype.sort)', () => {
    const r = rng(42);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    for (let size = 0; size <= 60; size++) {
      for (let round = 0; round < 20; round++) {
        const keys = new Set<string>();
        while (keys.size < size) keys.add(pick(STRINGS) + pick(STRINGS) + (r() < 0.5 ? String(Math.floor(r() * 100)) : ''));
        const ordered = [...keys];
        if (round % 4 === 0) ordered.sort();
        else if (round % 4 === 1) ordered.sort().reverse();
        else ordered.sort(() => r() - 0.5);
        const obj: Record<string, unknown> = {};
        for (const k of ordered) obj[k] = pick(NUMBERS);
        expect(canonicalJson(obj)).toBe(canonicalJsonByCopy(obj));
        expect(canonicalJson({ nested: obj, list: [obj] })).toBe(canonicalJsonByCopy({ nested: obj, list: [obj] }));
      }
    }
  });

  it('agrees on values read back from JSON (what the chain verifier hashes)', () => {
    const r = rng(7);
    for (let i = 0; i < 2_000; i++) {
      const v = JSON.parse(JSON.stringify(value(r, 0)) ?? 'null') as unknown;
      expect(canonicalJson(v)).toBe(canonicalJsonByCopy(v));
    }
  });
});
