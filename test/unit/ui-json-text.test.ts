import { describe, expect, it } from 'vitest';
import { visibleJson, visibleText } from '../../ui/src/json-text.js';

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

// Text the Flags page shows as Unleash holds it (a flag's description, its constraints' values): nothing
// there passed this control plane's checks on names and reasons.
describe('visibleText', () => {
  it('writes bidi controls, zero-width characters, tag characters and C0 controls as \\u escapes', () => {
    const id = 'tok-\u202Eabc-1';
    expect(visibleText(`userId is one of ${id}`)).toBe('userId is one of tok-\\u202eabc-1');
    expect(visibleText('kill\u200B switch\u2066\u2069 \u{E0041}\nnext\u001b[2J')).toBe('kill\\u200b switch\\u2066\\u2069 \\udb40\\udc41\\u000anext\\u001b[2J');
    expect(visibleText('x\u00ADy\uFEFF\u061C')).toBe('x\\u00ady\\ufeff\\u061c');
  });

  it('leaves other text as it is', () => {
    const plain = 'userId is one of tok-1, tok-2 … and 9,980 more (see Unleash) é ß 日本 🙂 C:\\temp';
    expect(visibleText(plain)).toBe(plain);
  });
});
