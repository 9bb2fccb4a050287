import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { renderConfigurationDoc, renderErrorsDoc } from '../../src/docs/render.js';

describe('generated docs are up to date (run `npm run docs:gen`)', () => {
  it('docs/errors.md matches src/errors.ts', () => {
    expect(readFileSync('docs/errors.md', 'utf8')).toBe(renderErrorsDoc());
  });
  it('docs/configuration.md matches src/config.ts', () => {
    expect(readFileSync('docs/configuration.md', 'utf8')).toBe(renderConfigurationDoc());
  });
});
