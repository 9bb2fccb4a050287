import { escapeUnsafeCharacters, UNSAFE_CHARACTER_RANGES } from '../tokens/names.js';

// Text the control plane answers (a kill's reason, who lifted it, an error message) is written to a
// terminal. ESC starts a sequence that can recolour, erase or rewrite what is already on screen, a line
// break forges a line of its own in one-line-per-item output, and a bidirectional override reverses what
// follows it. Every such character is shown as its \uXXXX escape instead, so it is seen, not obeyed.
// Backslashes are left alone (a Windows path stays readable), so a literal "\u001b" reads the same.

// Less C0 (U+0000–U+001F): the line breaks of indented JSON; JSON.stringify escapes any inside a string.
const UNSAFE_IN_JSON = new RegExp(`[${UNSAFE_CHARACTER_RANGES.replace('\\u0000-\\u001F', '')}]`, 'gu');

/** `text` with every control character, line or paragraph separator and bidirectional mark shown as `\uXXXX`. */
export function printable(text: string): string {
  return escapeUnsafeCharacters(text);
}

/**
 * `value` as indented JSON, still valid JSON that parses to the same value: JSON.stringify already
 * writes C0 controls inside strings as escapes; the rest (DEL, C1 controls, separators, bidirectional
 * marks, which it writes raw) can only occur inside strings, where `\uXXXX` is the same character.
 */
export function printableJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(UNSAFE_IN_JSON, escapeUnsafeCharacters);
}

/** `value` as one line of JSON (a JSON Lines record), escaped as printableJson escapes it. */
export function printableJsonLine(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE_IN_JSON, escapeUnsafeCharacters);
}
