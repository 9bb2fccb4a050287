import { describe, expect, it } from 'vitest';
import { visibleJson } from '../../ui/src/json-text.js';

// What the admin UI shows of JSON an operator decides on (approval arguments, tool definitions, audit
// details): nothing invisible, nothing that reorders the text on screen.

describe('visibleJson', () => {
  it('writes bidi controls, zero-width characters, the BOM and tag characters as \\u escapes', () => {
    const path = '/srv/report\u202Etxt.exe';
    const text = visibleJson({ path, note: 'a\u200Bb\uFEFFc\u2066d\u2069', smuggled: 'ok\u{E0049}\u{E0047}' });
    expect(text).toContain('"/srv/report\\u202etxt.exe"');
    expect(text).toContain('"a\\u200bb\\ufeffc\\u2066d\\u2069"');
    expect(text).toContain('"ok\\udb40\\udc49\\udb40\\udc47"');
    expect(text).not.toMatch(/[\u200B-\u200F\u202A-\u202E\u2066-\u2069\uFEFF]|[\u{E0000}-\u{E007F}]/u);
  });

  it('stays JSON of the same value, indented as before', () => {
    const value = { path: '/srv/report\u202Etxt.exe', list: ['x\u2028y', 'soft\u00ADhyphen'], n: 1 };
    const text = visibleJson(value);
    expect(JSON.parse(text)).toEqual(value);
    expect(visibleJson({ a: 'plain', b: ['é', 'ß', '日本', '🙂'] })).toBe(JSON.stringify({ a: 'plain', b: ['é', 'ß', '日本', '🙂'] }, null, 2));
  });

  it('shows nothing for undefined, as the UI did', () => {
    expect(visibleJson(undefined)).toBe('');
  });
});
