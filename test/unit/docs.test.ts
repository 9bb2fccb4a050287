import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SETTINGS, type SettingSpec } from '../../src/config.js';
import { renderConfigurationDoc, renderErrorsDoc } from '../../src/docs/render.js';

describe('generated docs are up to date (run `npm run docs:gen`)', () => {
  it('docs/errors.md matches src/errors.ts', () => {
    expect(readFileSync('docs/errors.md', 'utf8')).toBe(renderErrorsDoc());
  });
  it('docs/configuration.md matches src/config.ts', () => {
    expect(readFileSync('docs/configuration.md', 'utf8')).toBe(renderConfigurationDoc());
  });
});

describe('docs/configuration.md', () => {
  it('shows the range config.ts enforces for every int setting (SESSION_IDLE_TIMEOUT_S must be at least 10)', () => {
    const doc = renderConfigurationDoc();
    expect(doc).toContain('| `SESSION_IDLE_TIMEOUT_S` | int, 10 to 604800 |');
    for (const s of SETTINGS as readonly SettingSpec[]) {
      if (s.type !== 'int' || s.min === undefined || s.max === undefined) continue;
      expect(doc, s.env).toContain(`| \`${s.env}\` | int, ${s.min} to ${s.max} |`);
    }
  });
});
