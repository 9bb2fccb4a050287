import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DECISION_CODES, ERROR_CODES, GATEWAY_CODES } from '../../src/errors.js';

// House rule: every documented code has a test. This guard fails when a code is added to a table
// without any test asserting it (a quoted 'CODE' in some test file other than this one).

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'fixtures' ? [] : testFiles(path);
    return /\.test\.ts$/.test(name) && !path.endsWith('codes-coverage.test.ts') ? [path] : [];
  });
}


const corpus = testFiles('test')
  .map((f) => readFileSync(f, 'utf8'))
  .join('\n');
const quoted = (code: string) => corpus.includes(`'${code}'`) || corpus.includes(`"${code}"`);

describe('every stable code is asserted by a test', () => {
  for (const code of [...Object.keys(DECISION_CODES), ...Object.keys(ERROR_CODES)]) {
    it(code, () => {
      expect(quoted(code)).toBe(true);
    });
  }
});

describe("every code of the reference gateway is asserted by a test", () => {
  // A gateway code starts the text the agent reads, so a test may also match that start: /^CODE: /.
  for (const code of Object.keys(GATEWAY_CODES)) {
    it(code, () => {
      expect(quoted(code) || corpus.includes(`/^${code}:`)).toBe(true);
    });
  }

  it('no gateway code is also a control-plane code with another meaning', () => {
    const controlPlane = new Set([...Object.keys(DECISION_CODES), ...Object.keys(ERROR_CODES)]);
    expect(Object.keys(GATEWAY_CODES).filter((code) => controlPlane.has(code))).toEqual([]);
  });
});
