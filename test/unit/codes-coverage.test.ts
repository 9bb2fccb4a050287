import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DECISION_CODES, ERROR_CODES } from '../../src/errors.js';

// House rule: every documented code has a test. This guard fails when a code is added to the table
// without any test asserting it (a quoted 'CODE' in some test file other than this one).

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'fixtures' ? [] : testFiles(path);
    return /\.test\.ts$/.test(name) && !path.endsWith('codes-coverage.test.ts') ? [path] : [];
  });
}

// INTERNAL is the answer to a bug; no honest test can provoke one on purpose.
const NOT_PROVOKABLE = new Set(['INTERNAL']);

describe('every stable code is asserted by a test', () => {
  const corpus = testFiles('test')
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  for (const code of [...Object.keys(DECISION_CODES), ...Object.keys(ERROR_CODES)]) {
    if (NOT_PROVOKABLE.has(code)) continue;
    it(code, () => {
      expect(corpus.includes(`'${code}'`) || corpus.includes(`"${code}"`)).toBe(true);
    });
  }
});
