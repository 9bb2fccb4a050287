// JSON as the UI shows it to an operator deciding on it (approval arguments, tool definitions, audit
// details): every character that is invisible or reorders text on screen is shown as its \u escape, so
// what the operator reads is what runs. Bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E/F, U+061C)
// can make a path or a command read as something else than it is; zero-width characters, the BOM and
// Unicode tag characters hide words (or instructions to a model) inside a tool description.
// JSON.stringify already escapes C0 controls; the escapes below keep the text valid JSON for the same
// value.

const HIDDEN = /[\u007f-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\ufff9-\ufffb\u{e0000}-\u{e007f}]|[\ufe00-\ufe0f]/gu;

const unitEscape = (unit: number) => `\\u${unit.toString(16).padStart(4, '0')}`;

/** `value` as indented JSON with invisible and text-reordering characters written as \u escapes. */
export function visibleJson(value: unknown): string {
  const text = JSON.stringify(value, null, 2) ?? '';
  // A tag character (U+E0000-U+E007F, invisible "ASCII smuggling") is two UTF-16 units: two escapes.
  return text.replace(HIDDEN, (c) => (c.length === 1 ? unitEscape(c.charCodeAt(0)) : unitEscape(c.charCodeAt(0)) + unitEscape(c.charCodeAt(1))));
}

const HIDDEN_OR_CONTROL = new RegExp(`[\\u0000-\\u001f]|${HIDDEN.source}`, 'gu');

/**
 * Plain text written outside this control plane's checks (a flag's description and its constraints'
 * values, as Unleash holds them), shown with the same characters as \u escapes, and C0 controls too: a
 * right-to-left override in a constraint's token id would make the page name another token.
 * (What agents, gateways and operators send is refused with such characters when it is written.)
 */
export function visibleText(text: string): string {
  return text.replace(HIDDEN_OR_CONTROL, (c) => (c.length === 1 ? unitEscape(c.charCodeAt(0)) : unitEscape(c.charCodeAt(0)) + unitEscape(c.charCodeAt(1))));
}
